"""Logical-axis partitioning over a ('data', 'model') device mesh, as in T5X.

`standard_logical_axis_rules` is the one table where mesh axes appear: the network names
logical axes only, and everything else asks the partitioner for shardings.
"""
import logging
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = Sequence[tuple[str, Optional[str]]]


def standard_logical_axis_rules(activation_partitioning_dims: int = 1,
                                parameter_partitioning_dims: int = 1,
                                additional_rules: Optional[LogicalRules] = None) -> LogicalRules:
  """T5X's standard rules: logical axis name -> mesh axis ('data', 'model' or None).

  1-D parameter partitioning shards vocab/mlp/heads over 'model' (Megatron-style);
  `parameter_partitioning_dims=2` also shards `embed` over 'data' (2-D, FSDP-style).
  `activation_partitioning_dims=2` shards `embed` over 'model' first, as T5X orders it:
  with both at 2, a 1-D `embed` parameter (a layer-norm scale) goes to 'model', and a
  kernel's `embed` takes 'data' when its other axis holds 'model'.
  `additional_rules` (T5X's argument) come after the standard ones.
  """
  if activation_partitioning_dims not in (1, 2) or parameter_partitioning_dims not in (1, 2):
    raise ValueError('activation_partitioning_dims and parameter_partitioning_dims must be 1 or 2, '
                     f'got {activation_partitioning_dims} and {parameter_partitioning_dims}')
  rules = [
      ('batch', 'data'),
      ('vocab', 'model'),
      ('mlp', 'model'),
      ('heads', 'model'),
      ('joined_kv', 'model'),
      ('kv', None),
  ]
  if activation_partitioning_dims == 2:
    rules.append(('embed', 'model'))
  if parameter_partitioning_dims == 2:
    rules.append(('embed', 'data'))  # parameters; activations' batch already holds 'data'
  rules += [
      ('embed', None),
      ('length', None),
      ('relpos_buckets', None),
      ('abspos_buckets', None),
      ('layers', None),
      ('lora_rank', None),  # LoRA factors' rank axis: tiny, so replicated
      ('stack', None),
      ('mlp_activations', None),
  ]
  return rules + list(additional_rules or [])


def _submesh_size(submesh: Sequence[int], num_partitions: Optional[int]) -> int:
  if len(tuple(submesh)) != 4 or not all(isinstance(n, int) and n > 0 for n in submesh):
    raise ValueError(f'partitioning.PjitPartitioner.model_parallel_submesh={submesh!r}; it '
                     'must be 4 positive ints (x, y, z, cores per chip), e.g. (2, 2, 1, 1)')
  size = int(np.prod(submesh))
  if num_partitions not in (None, 1, size):
    raise ValueError(f'partitioning.PjitPartitioner: num_partitions={num_partitions} and '
                     f'model_parallel_submesh={tuple(submesh)} ({size} devices) disagree; '
                     'set one of them (T5X: num_partitions = None)')
  return size


def _tiled_grid(devices: Sequence[Any], submesh: tuple) -> Optional[np.ndarray]:
  """[data, model] devices where each row is one (x, y, z, core) tile of the slice, or
  None when the slice does not divide into such tiles."""
  def place(d):
    x, y, z = (tuple(d.coords) + (0, 0, 0))[:3]
    return (x, y, z, getattr(d, 'core_on_chip', 0))
  places = [place(d) for d in devices]
  extent = [max(p[i] for p in places) + 1 for i in range(4)]
  if any(e % t for e, t in zip(extent, submesh)):
    return None
  groups: dict = {}
  for d, p in sorted(zip(devices, places), key=lambda dp: dp[1]):
    tile = tuple(c // t for c, t in zip(p, submesh))
    groups.setdefault(tile, []).append(d)
  rows = [groups[t] for t in sorted(groups)]
  if any(len(r) != int(np.prod(submesh)) for r in rows):
    return None
  return np.asarray(rows, dtype=object)


class PjitPartitioner:
  """Builds the mesh and maps logical axes to shardings; T5X's partitioner surface.

  Args:
    num_partitions: size of the 'model' mesh axis; the rest of the devices form 'data'.
    model_parallel_submesh: T5X's alternative to num_partitions: an (x, y, z, core) tile
      of TPU chips that forms one model-parallel group ('model' has its product of
      devices). On TPUs each group is such a physical tile of the slice; on devices
      without coordinates (CPU, GPU) only the product counts.
    params_on_devices: T5X's; True is the only mode here (parameters live on the
      devices). False is accepted with a warning.
    logical_axis_rules: the rules table (default `standard_logical_axis_rules()`).
    devices: the devices to use (default all of them, across hosts).
  """

  def __init__(self, num_partitions: Optional[int] = 1,
               model_parallel_submesh: Optional[Sequence[int]] = None,
               params_on_devices: bool = True,
               logical_axis_rules: Optional[LogicalRules] = None,
               devices: Optional[Sequence[Any]] = None):
    devices = list(devices if devices is not None else jax.devices())
    if model_parallel_submesh is not None:
      num_partitions = _submesh_size(model_parallel_submesh, num_partitions)
    if num_partitions is None:
      raise ValueError('partitioning.PjitPartitioner: set num_partitions or '
                       'model_parallel_submesh')
    if num_partitions < 1 or len(devices) % num_partitions:
      raise ValueError(
          f'partitioning.PjitPartitioner.num_partitions={num_partitions} does not divide the '
          f'{len(devices)} devices; choose a divisor of {len(devices)}.')
    if not params_on_devices:
      logging.warning('partitioning.PjitPartitioner.params_on_devices=False has no effect: '
                      'parameters always live on the devices here.')
    self.num_partitions = num_partitions
    self.model_parallel_submesh = model_parallel_submesh
    self.rules = tuple(logical_axis_rules or standard_logical_axis_rules())
    shape = (len(devices) // num_partitions, num_partitions)
    grid = None
    if model_parallel_submesh is not None and all(hasattr(d, 'coords') for d in devices):
      grid = _tiled_grid(devices, tuple(model_parallel_submesh))
    if grid is None:
      try:
        grid = mesh_utils.create_device_mesh(shape, devices)
      except (ValueError, NotImplementedError, AssertionError):
        grid = np.asarray(devices).reshape(shape)  # topologies mesh_utils cannot lay out
    self.mesh = Mesh(grid, ('data', 'model'))

  @property
  def data_size(self) -> int:
    return self.mesh.shape['data']

  def mesh_axes(self, logical_axes: Sequence[Optional[str]]) -> PartitionSpec:
    """Logical names of one array's dims -> its PartitionSpec over mesh axes."""
    return nn.logical_to_mesh_axes(tuple(logical_axes), self.rules)

  def sharding(self, logical_axes: Sequence[Optional[str]]) -> NamedSharding:
    return NamedSharding(self.mesh, self.mesh_axes(logical_axes))

  @property
  def replicated(self) -> NamedSharding:
    return NamedSharding(self.mesh, PartitionSpec())

  def batch_sharding(self, ndim: int = 2) -> NamedSharding:
    """Shards the leading (batch) dim of inputs over 'data'."""
    return self.sharding(('batch',) + (None,) * (ndim - 1))

  def check_batch_size(self, batch_size: int, num_microbatches: int = 1) -> None:
    """Raises, naming the numbers to change, if the batch cannot be split evenly."""
    per_micro, rem = divmod(batch_size, num_microbatches)
    if rem:
      raise ValueError(f'BATCH_SIZE={batch_size} is not divisible by num_microbatches='
                       f'{num_microbatches}; change one of them.')
    if per_micro % self.data_size:
      raise ValueError(
          f'the batch of {per_micro} examples per step (BATCH_SIZE={batch_size} / '
          f'num_microbatches={num_microbatches}) is not divisible by the data axis of size '
          f'{self.data_size} ({len(self.mesh.devices.flat)} devices / num_partitions='
          f'{self.num_partitions}). Make BATCH_SIZE a multiple of '
          f'{self.data_size * num_microbatches}, or change num_partitions.')

  def with_data_axis(self, sharding: NamedSharding, shape: Sequence[int]) -> NamedSharding:
    """`sharding` also split over 'data' on the first dimension it leaves whole and that
    'data' divides (ZeRO stage 1 for optimizer state); unchanged when none qualifies or
    'data' is already used."""
    spec = list(sharding.spec) + [None] * (len(shape) - len(sharding.spec))
    used = {a for entry in spec if entry for a in ((entry,) if isinstance(entry, str) else entry)}
    if 'data' in used or self.data_size == 1:
      return sharding
    for dim, size in enumerate(shape):
      if spec[dim] is None and size % self.data_size == 0:
        spec[dim] = 'data'
        return NamedSharding(self.mesh, PartitionSpec(*spec))
    return sharding

  def check_divisible(self, shapes: dict, logical_axes: dict) -> None:
    """Raises, before anything compiles, if a mesh axis does not divide a dimension the
    rules shard over it (e.g. num_partitions=8 with 4 heads).

    shapes, logical_axes: {parameter name: shape} and {parameter name: logical axes}.
    """
    knob = {'model': 'partitioning.PjitPartitioner.num_partitions',
            'data': 'the data axis (devices / num_partitions)'}
    for name in sorted(shapes):
      spec = self.mesh_axes(logical_axes[name])
      for size, logical, mesh_axes in zip(shapes[name], logical_axes[name], spec):
        if mesh_axes is None:
          continue
        mesh_axes = (mesh_axes,) if isinstance(mesh_axes, str) else tuple(mesh_axes)
        ways = int(np.prod([self.mesh.shape[a] for a in mesh_axes]))
        if size % ways:
          fits = [d for d in range(1, size + 1) if size % d == 0 and d <= ways]
          raise ValueError(
              f'mesh axis {"x".join(mesh_axes)} of size {ways} ({" and ".join(knob[a] for a in mesh_axes)}) '
              f'does not divide {logical}={size} of parameter {name} {tuple(shapes[name])}. '
              f'Use a {"x".join(mesh_axes)} axis size that divides {size} (largest fitting: '
              f'{fits[-1]}), or a rule that leaves {logical!r} unsharded.')

  def partition(self, fn: Callable, in_shardings, out_shardings,
                donate_argnums: Sequence[int] = ()) -> Callable:
    """jax.jit with explicit shardings, tracing `fn` under the mesh and rules."""
    def traced(*args):
      with nn.logical_axis_rules(self.rules):
        return fn(*args)

    # XLA's program name (logs, profiles, compile events): the function's own, not 'traced'.
    traced.__name__ = traced.__qualname__ = getattr(
        fn, '__name__', getattr(getattr(fn, 'func', None), '__name__', 'partitioned'))

    jitted = jax.jit(traced, in_shardings=in_shardings, out_shardings=out_shardings,
                     donate_argnums=tuple(donate_argnums))

    def run(*args):
      with jax.set_mesh(self.mesh):
        return jitted(*args)

    def lower(*args):
      # Ahead-of-time: args may be ShapeDtypeStructs, so `t5x plan` compiles the very
      # function training runs without allocating its inputs.
      with jax.set_mesh(self.mesh):
        return jitted.lower(*args)

    run.lower = lower
    run._cache_size = jitted._cache_size  # compiled programs so far, for tests
    return run

"""Logical-axis partitioning over a ('data', 'model') device mesh, as in T5X.

`standard_logical_axis_rules` is the one table where mesh axes appear: the network names
logical axes only, and everything else asks the partitioner for shardings.
"""
from typing import Any, Callable, Optional, Sequence

import flax.linen as nn
import jax
import numpy as np
from jax.experimental import mesh_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

LogicalRules = Sequence[tuple[str, Optional[str]]]


def standard_logical_axis_rules(activation_partitioning_dims: int = 1,
                                parameter_partitioning_dims: int = 1) -> LogicalRules:
  """T5X's standard rules: logical axis name -> mesh axis ('data', 'model' or None).

  1-D parameter partitioning shards vocab/mlp/heads over 'model' (Megatron-style);
  `parameter_partitioning_dims=2` also shards `embed` over 'data' (2-D, FSDP-style).
  `activation_partitioning_dims=2` shards activations' embed over 'model' too.
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
  if parameter_partitioning_dims == 2:
    rules.append(('embed', 'data'))  # parameters; activations' batch already holds 'data'
  if activation_partitioning_dims == 2:
    rules.append(('embed', 'model'))
  rules += [
      ('embed', None),
      ('length', None),
      ('relpos_buckets', None),
      ('layers', None),
      ('stack', None),
  ]
  return rules


class PjitPartitioner:
  """Builds the mesh and maps logical axes to shardings; T5X's partitioner surface.

  Args:
    num_partitions: size of the 'model' mesh axis; the rest of the devices form 'data'.
    logical_axis_rules: the rules table (default `standard_logical_axis_rules()`).
    devices: the devices to use (default all of them, across hosts).
  """

  def __init__(self, num_partitions: int = 1, logical_axis_rules: Optional[LogicalRules] = None,
               devices: Optional[Sequence[Any]] = None):
    devices = list(devices if devices is not None else jax.devices())
    if num_partitions < 1 or len(devices) % num_partitions:
      raise ValueError(
          f'partitioning.PjitPartitioner.num_partitions={num_partitions} does not divide the '
          f'{len(devices)} devices; choose a divisor of {len(devices)}.')
    self.num_partitions = num_partitions
    self.rules = tuple(logical_axis_rules or standard_logical_axis_rules())
    shape = (len(devices) // num_partitions, num_partitions)
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

  def partition(self, fn: Callable, in_shardings, out_shardings,
                donate_argnums: Sequence[int] = ()) -> Callable:
    """jax.jit with explicit shardings, tracing `fn` under the mesh and rules."""
    def traced(*args):
      with nn.logical_axis_rules(self.rules):
        return fn(*args)

    jitted = jax.jit(traced, in_shardings=in_shardings, out_shardings=out_shardings,
                     donate_argnums=tuple(donate_argnums))

    def run(*args):
      with jax.set_mesh(self.mesh):
        return jitted(*args)

    return run

"""Optimizers (optax) and T5X's learning-rate schedules.

An optimizer here is a factory `learning_rate_fn -> optax.GradientTransformation`, so gin
can bind its hyper-parameters while the trainer supplies the schedule.
"""
from typing import Callable

import jax
import jax.numpy as jnp
import optax

from t5x import scan_layout
# Gin files bind `optimizers.adafactor` (its T5X home is `t5x.adafactor`); both names
# resolve to the one function, so either spelling configures it.
from t5x.adafactor import adafactor  # noqa: F401  pylint: disable=unused-import

Schedule = Callable[[jnp.ndarray], jnp.ndarray]
OptimizerDef = Callable[[Schedule], optax.GradientTransformation]


def per_layer(tx: optax.GradientTransformation,
              param_scan_axis: int = 1) -> optax.GradientTransformation:
  """`tx` for a scanned parameter tree, applied to each stacked layer on its own.

  Adafactor's parameter-scale and update clipping take an RMS over the whole array, and
  its factoring picks the two largest axes; over a stacked [embed, layers, mlp] kernel
  that would mix the layers (T5X's Adafactor treats the 'layers' axis as a batch axis
  for the same reason). Here the `encoder/layers` and `decoder/layers` subtrees go
  through `tx` under `jax.vmap` over the stacked axis, so every layer is updated exactly
  as in the unscanned model; the rest of the tree goes through `tx` as usual.

  The per-layer state's leaves carry the layer axis at `param_scan_axis` when they have
  that many axes (so second moments shaped like a kernel are stacked, and sharded, like
  it), else at 0 (step counts become [layers]).
  """
  def layer_axes(stacked_state):
    # A stacked leaf whose per-layer rank reaches the scan axis has the layers there.
    return jax.tree_util.tree_map(
        lambda x: param_scan_axis if len(x.shape) - 1 >= param_scan_axis else 0, stacked_state)

  def init(params):
    stacked, rest = scan_layout.split_scanned(params)
    if not jax.tree_util.tree_leaves(stacked):  # vmap needs something to map over
      return {'per_layer': tx.init(stacked), 'rest': tx.init(rest)}
    shapes = jax.eval_shape(jax.vmap(tx.init, in_axes=param_scan_axis), stacked)
    layers_state = jax.vmap(tx.init, in_axes=param_scan_axis,
                            out_axes=layer_axes(shapes))(stacked)
    return {'per_layer': layers_state, 'rest': tx.init(rest)}

  def update(updates, state, params=None):
    stacked, rest = scan_layout.split_scanned(updates)
    stacked_params, rest_params = (scan_layout.split_scanned(params) if params is not None
                                   else (None, None))
    if jax.tree_util.tree_leaves(stacked):
      axes = layer_axes(state['per_layer'])
      stacked, layers_state = jax.vmap(
          tx.update, in_axes=(param_scan_axis, axes, param_scan_axis),
          out_axes=(param_scan_axis, axes))(stacked, state['per_layer'], stacked_params)
    else:
      stacked, layers_state = tx.update(stacked, state['per_layer'], stacked_params)
    rest, rest_state = tx.update(rest, state['rest'], rest_params)
    return (scan_layout.join_scanned(stacked, rest),
            {'per_layer': layers_state, 'rest': rest_state})

  return optax.GradientTransformation(init, update)


def adamw(b1: float = 0.9, b2: float = 0.999, eps: float = 1e-8,
          weight_decay: float = 0.0) -> OptimizerDef:
  """AdamW with decoupled weight decay."""
  def make(learning_rate):
    return optax.adamw(learning_rate, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay)
  return make


def create_learning_rate_scheduler(factors: str = 'constant', base_learning_rate: float = 1e-3,
                                   warmup_steps: int = 1000, decay_factor: float = 0.5,
                                   steps_per_decay: int = 20000, steps_per_cycle: int = 100000,
                                   step_offset: int = 0,
                                   min_learning_rate: float = 1e-8) -> Schedule:
  """T5X's schedule: the product of '*'-separated factors, evaluated at `step - step_offset`.

  Factors: constant (base_learning_rate), linear_warmup (ramp over warmup_steps),
  rsqrt_decay (1/sqrt(max(step, warmup))), rsqrt_normalized_decay (the same, 1.0 at the
  end of warm-up), decay_every (x decay_factor each steps_per_decay), linear_decay (to 0
  over steps_per_cycle after warm-up), cosine_decay (cosine over steps_per_cycle after
  warm-up, restarting each cycle).
  """
  names = [f.strip() for f in factors.split('*')]
  known = {'constant', 'linear_warmup', 'rsqrt_decay', 'rsqrt_normalized_decay',
           'decay_every', 'linear_decay', 'cosine_decay'}
  unknown = [n for n in names if n not in known]
  if unknown:
    raise ValueError(f'create_learning_rate_scheduler.factors: unknown factor(s) {unknown}; '
                     f'known: {sorted(known)}')

  def schedule(step):
    step = jnp.maximum(0, jnp.asarray(step, jnp.float32) - step_offset)
    warm = float(max(warmup_steps, 1))
    after = jnp.maximum(0.0, step - warmup_steps)
    rate = jnp.float32(1.0)
    for name in names:
      if name == 'constant':
        rate *= base_learning_rate
      elif name == 'linear_warmup':
        rate *= jnp.minimum(1.0, step / warm)
      elif name == 'rsqrt_decay':
        rate /= jnp.sqrt(jnp.maximum(step, warm))
      elif name == 'rsqrt_normalized_decay':
        rate *= jnp.sqrt(warm) / jnp.sqrt(jnp.maximum(step, warm))
      elif name == 'decay_every':
        rate *= decay_factor ** jnp.floor(step / steps_per_decay)
      elif name == 'linear_decay':
        rate *= jnp.maximum(0.0, 1.0 - after / steps_per_cycle)
      elif name == 'cosine_decay':
        progress = jnp.mod(after / steps_per_cycle, 1.0)
        rate *= 0.5 * (1.0 + jnp.cos(jnp.pi * progress))
    return jnp.maximum(rate, min_learning_rate)

  return schedule

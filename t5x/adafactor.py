"""Adafactor, T5X's optimizer, at T5X's module path (`from t5x import adafactor`).

`Adafactor(...)` takes T5X's arguments and keeps T5X's state: per parameter a dict of
`v_row`, `v_col`, `v` and `m` (the unused ones shaped (1,)) under `param_states`, beside
the optimizer's `step`. So a T5X checkpoint's optimizer state is read without any
conversion, and T5X reads ours. Its updates are T5X's, operation for operation
(tests/test_adafactor.py checks three updates against T5X's own).

Underneath it is an `optax.GradientTransformation`: calling an `Adafactor` with the
trainer's schedule returns one, like every optimizer of `t5x.optimizers`.

Factoring follows T5X: with `logical_factor_rules`, each parameter's logical axes say
which dimensions are rows, columns or a batch (the `layers` axis of a scanned model,
whose layers are then normalised and clipped one by one); parameters of rank 2 or less
without a batch axis fall back to T5X's heuristic (the two largest dimensions, if the
smaller is at least `min_dim_size_to_factor`). As in T5X, a parameter factored by an
explicit rule (a scanned kernel) is factored whatever its size, so a scanned model's
updates differ from the same model unscanned where a matrix is below that size.

`adafactor(...)` is this project's older spelling (optax's own Adafactor, optax's state
layout); MODEL_DIRs trained with it keep resuming.
"""
import enum
import functools
import re
from typing import Any, Callable, Mapping, NamedTuple, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np
import optax

Schedule = Callable[[jnp.ndarray], jnp.ndarray]
_SLOTS = ('v_row', 'v_col', 'v', 'm')


class FactorDim(enum.Enum):
  """What Adafactor does with one dimension of a parameter."""
  NONE = None  # not factored
  BATCH = 1  # independent copies (stacked layers): never averaged over
  ROW = 2
  COLUMN = 3


class HeuristicRule(enum.Enum):
  """Marks a parameter factored by its two largest dimensions."""
  token = 1


HEURISTIC_RULE = HeuristicRule.token


def standard_logical_factor_rules() -> dict:
  """T5X's table: logical axis name -> FactorDim."""
  return {
      'vocab': FactorDim.COLUMN, 'embed': FactorDim.ROW, 'mlp': FactorDim.COLUMN,
      'heads': FactorDim.COLUMN, 'kv': FactorDim.COLUMN, 'joined_kv': FactorDim.COLUMN,
      'relpos_buckets': FactorDim.NONE, 'layers': FactorDim.BATCH, 'stack': FactorDim.BATCH,
      'q_wi_fused': FactorDim.COLUMN, 'o_wo_fused': FactorDim.COLUMN,
      'multiquery_heads': FactorDim.COLUMN, 'kv_fused': FactorDim.COLUMN,
      'layer_norm_scale': FactorDim.NONE,
  }


def factor_name_to_factordim(name):
  """'row' / 'col' / 'column' / 'batch' / 'none' / 'unfactorized' -> FactorDim (T5X's
  spellings, for rules written in gin); a FactorDim passes through."""
  if not isinstance(name, str):
    return name
  names = {'row': FactorDim.ROW, 'col': FactorDim.COLUMN, 'column': FactorDim.COLUMN,
           'batch': FactorDim.BATCH, 'none': FactorDim.NONE, 'unfactorized': FactorDim.NONE}
  if name.lower() not in names:
    raise ValueError(f'adafactor: unknown factor dimension {name!r}; one of {sorted(names)}')
  return names[name.lower()]


class HParamMap:
  """Parameter path ('encoder/layers_0/mlp/wi_0/kernel') -> value, by the first of
  (regex, value) rules whose regex is found in the path (T5X's class)."""

  def __init__(self, rules: Sequence[tuple]):
    self._rules = [(re.compile(r), v) for r, v in rules]

  def __getitem__(self, path: str):
    for regex, value in self._rules:
      if regex.search(path):
        return value
    raise KeyError(f'adafactor: no rule matches parameter {path}')


class AdafactorState(NamedTuple):
  """T5X's optimizer state: `step` (int32 []) and `param_states`, a tree shaped like the
  parameters whose leaves are dicts of v_row / v_col / v / m (float32; m in
  dtype_momentum; an unused slot is zeros of shape (1,))."""
  step: jnp.ndarray
  param_states: Any


def _path_string(path) -> str:
  return '/'.join(str(getattr(k, 'key', getattr(k, 'name', k))) for k in path)


class Adafactor:
  """T5X's Adafactor (https://arxiv.org/abs/1804.04235) with T5X's arguments.

  Gin: `OPTIMIZER = @adafactor.Adafactor()` and `adafactor.Adafactor.decay_rate = 0.8`,
  as in T5X's model files. The trainer calls `set_param_axes` with the parameters'
  logical axes (so `logical_factor_rules` apply), then calls the instance with its
  learning-rate schedule to get the `optax.GradientTransformation`.

  Args are T5X's: learning_rate (used only when no schedule is given), factored,
  multiply_by_parameter_scale (bool or HParamMap), beta1 (momentum, None: none),
  decay_rate (second-moment decay exponent), step_offset (steps before this one don't
  count for that decay), clipping_threshold (update RMS clip, None: none),
  weight_decay_rate, min_dim_size_to_factor, epsilon1 (added to squared gradients),
  epsilon2 (least parameter scale), dtype_momentum, factor_map (HParamMap of rules),
  logical_factor_rules, weight_decay_rate_lr_exponent, global_norm_clip_threshold,
  max_parameter_scale, skip_nan_updates.
  """

  def __init__(self, learning_rate: Optional[float] = None, factored: bool = True,
               multiply_by_parameter_scale: Union[bool, HParamMap] = True,
               beta1: Optional[float] = None, decay_rate: float = 0.8, step_offset: int = 0,
               clipping_threshold: Optional[float] = 1.0,
               weight_decay_rate: Optional[float] = None, min_dim_size_to_factor: int = 128,
               epsilon1: float = 1e-30, epsilon2: float = 1e-3, dtype_momentum: Any = 'float32',
               factor_map: Optional[HParamMap] = None,
               logical_factor_rules: Optional[Mapping[str, Any]] = None,
               weight_decay_rate_lr_exponent: Optional[float] = None,
               global_norm_clip_threshold: Optional[float] = None,
               max_parameter_scale: Optional[float] = None, skip_nan_updates: bool = False):
    if not factored and factor_map is not None:
      raise ValueError('adafactor.Adafactor: factored=False but a factor_map is given')
    if not isinstance(multiply_by_parameter_scale, (bool, HParamMap)):
      raise TypeError('adafactor.Adafactor.multiply_by_parameter_scale must be a bool or an '
                      f'HParamMap, not {type(multiply_by_parameter_scale).__name__}')
    if factor_map is not None and not isinstance(factor_map, HParamMap):
      raise TypeError('adafactor.Adafactor.factor_map must be an HParamMap or None, not '
                      f'{type(factor_map).__name__}')
    self.learning_rate = learning_rate
    self.factored = factored
    self.multiply_by_parameter_scale = multiply_by_parameter_scale
    self.beta1 = beta1
    self.decay_rate = decay_rate
    self.step_offset = step_offset
    self.clipping_threshold = clipping_threshold
    self.weight_decay_rate = weight_decay_rate
    self.min_dim_size_to_factor = min_dim_size_to_factor
    self.epsilon1 = epsilon1
    self.epsilon2 = epsilon2
    self.dtype_momentum = jnp.dtype(dtype_momentum)
    self.factor_map = factor_map  # path -> rule; set_param_axes replaces it
    self.logical_factor_rules = logical_factor_rules
    self.weight_decay_rate_lr_exponent = weight_decay_rate_lr_exponent
    self.global_norm_clip_threshold = global_norm_clip_threshold
    self.max_parameter_scale = max_parameter_scale
    self.skip_nan_updates = skip_nan_updates

  # ---------------------------------------------------------------- factoring rules

  def set_param_axes(self, param_logical_axes) -> None:
    """Derives the factor map from the parameters' logical axis names (a tree of tuples
    or PartitionSpecs shaped like the parameters). No effect without logical rules."""
    if self.logical_factor_rules is None:
      return
    rules = {k: factor_name_to_factordim(v) for k, v in self.logical_factor_rules.items()}
    row, col, none = FactorDim.ROW, FactorDim.COLUMN, FactorDim.NONE
    factor_map = {}
    flat = jax.tree_util.tree_flatten_with_path(
        param_logical_axes, is_leaf=lambda x: isinstance(x, (tuple, jax.sharding.PartitionSpec)))[0]
    for path, axes in flat:
      name = _path_string(path)
      missing = [a for a in axes if a not in rules]
      if missing:
        raise ValueError(f'adafactor.Adafactor.logical_factor_rules has no rule for logical '
                         f'axis {missing[0]!r} (parameter {name}); add one')
      dims = tuple(rules[a] for a in axes)
      if row in dims and col in dims and none in dims:
        raise ValueError(f'adafactor: parameter {name} has rows, columns and unfactored '
                         f'dimensions {dims}; a factored parameter needs every dimension '
                         'marked ROW, COLUMN or BATCH')
      if row not in dims or col not in dims:  # half a factoring is none: keep batch axes
        dims = tuple(none if d in (row, col) else d for d in dims)
      factor_map[name] = dims
    self.factor_map = factor_map

  def _rule(self, path: str):
    if not self.factored:
      return None
    return self.factor_map[path] if self.factor_map is not None else HEURISTIC_RULE

  def _dims(self, path: str, shape: tuple) -> tuple:
    """(dimensions averaged over for RMS, None or (row dims, column dims))."""
    rule, ndim = self._rule(path), len(shape)
    everything = tuple(range(ndim))
    if rule is None:
      return everything, None
    if rule is not HEURISTIC_RULE:
      if len(rule) != ndim:
        raise ValueError(f'adafactor: factor rule {rule} has rank {len(rule)}, parameter '
                         f'{path} {shape} has rank {ndim}')
      batch = tuple(i for i, d in enumerate(rule) if d == FactorDim.BATCH)
      if batch or ndim > 2:
        rows = tuple(i for i, d in enumerate(rule) if d == FactorDim.ROW)
        cols = tuple(i for i, d in enumerate(rule) if d == FactorDim.COLUMN)
        averaged = tuple(i for i in everything if i not in batch)
        return averaged, ((rows, cols) if rows or cols else None)
      # T5X: a rank <= 2 parameter without a batch axis is factored by the heuristic.
    elif ndim > 2:
      raise ValueError(f'adafactor: parameter {path} {shape} has rank {ndim} > 2 and needs an '
                       'explicit factoring rule: set adafactor.Adafactor.logical_factor_rules '
                       '(T5X: @adafactor.standard_logical_factor_rules())')
    return everything, self._heuristic(shape)

  def _heuristic(self, shape: tuple):
    if len(shape) < 2:
      return None
    order = np.argsort(shape)
    if shape[order[-2]] < self.min_dim_size_to_factor:
      return None
    return (int(order[-2]),), (int(order[-1]),)

  # ---------------------------------------------------------------- optax

  def __call__(self, learning_rate_fn: Optional[Schedule] = None) -> optax.GradientTransformation:
    """The transformation, with `learning_rate_fn(step)` as the learning rate (else the
    constant `learning_rate`). Updates are `new_param - param` as T5X computes
    new_param, so `optax.apply_updates` gives T5X's parameters."""
    if learning_rate_fn is None:
      if self.learning_rate is None:
        raise ValueError('adafactor.Adafactor: no learning rate: give a schedule or '
                         'learning_rate')
      learning_rate_fn = lambda step: jnp.asarray(self.learning_rate, jnp.float32)
    return optax.GradientTransformation(self.init, functools.partial(
        self.update, learning_rate_fn))

  def init(self, params) -> AdafactorState:
    def slots(path, param):
      shape = tuple(param.shape)
      _, factored = self._dims(_path_string(path), shape)
      state = {k: jnp.zeros((1,), jnp.float32) for k in _SLOTS}
      if factored is not None:
        rows, cols = factored
        state['v_row'] = jnp.zeros(tuple(np.delete(shape, cols)), jnp.float32)
        state['v_col'] = jnp.zeros(tuple(np.delete(shape, rows)), jnp.float32)
      else:
        state['v'] = jnp.zeros(shape, jnp.float32)
      if self.beta1 is not None:
        state['m'] = jnp.zeros(shape, self.dtype_momentum)
      return state
    return AdafactorState(jnp.zeros([], jnp.int32),
                          jax.tree_util.tree_map_with_path(slots, params))

  def update(self, learning_rate_fn, grads, state: AdafactorState, params=None):
    if params is None:
      raise ValueError('adafactor.Adafactor needs the parameters in update()')
    step = state.step
    learning_rate = learning_rate_fn(step)
    if self.global_norm_clip_threshold:
      norm = jnp.sqrt(sum(jnp.sum(jnp.square(g)) for g in jax.tree_util.tree_leaves(grads)))
      threshold = self.global_norm_clip_threshold
      grads = jax.tree_util.tree_map(
          lambda g: g * (threshold * jnp.minimum(1.0 / threshold, 1.0 / norm)), grads)
    is_slots = lambda x: isinstance(x, dict) and set(x) == set(_SLOTS)
    flat_states = {_path_string(p): s for p, s in jax.tree_util.tree_flatten_with_path(
        state.param_states, is_leaf=is_slots)[0]}

    def one(path, grad, param):
      name = _path_string(path)
      return self._update_one(name, step, learning_rate, param, flat_states[name], grad)
    out = jax.tree_util.tree_map_with_path(one, grads, params)
    is_pair = lambda x: isinstance(x, tuple) and len(x) == 2 and is_slots(x[1])
    updates = jax.tree_util.tree_map(lambda x: x[0], out, is_leaf=is_pair)
    param_states = jax.tree_util.tree_map(lambda x: x[1], out, is_leaf=is_pair)
    return updates, AdafactorState(step + 1, param_states)

  def _update_one(self, path, step, learning_rate, param, slots, grad):
    """(update, new slots) of one parameter: T5X's arithmetic, in T5X's order."""
    averaged, factored = self._dims(path, tuple(param.shape))
    grad = grad.astype(jnp.float32)
    new = {k: jnp.zeros((1,), jnp.float32) for k in _SLOTS}
    t = jnp.asarray(step - self.step_offset, jnp.float32) + 1.0
    decay = 1.0 - t ** (-self.decay_rate)
    mixing = 1.0 - decay
    update_scale = learning_rate
    scale_by_param = self.multiply_by_parameter_scale
    if isinstance(scale_by_param, HParamMap):
      scale_by_param = scale_by_param[path]
    if scale_by_param:
      param_scale = jnp.sqrt(jnp.mean(param * param, axis=averaged, keepdims=True))
      param_scale = jnp.maximum(param_scale, self.epsilon2)
      if self.max_parameter_scale is not None:
        param_scale = jnp.minimum(param_scale, self.max_parameter_scale)
      update_scale = update_scale * param_scale
    grad_sqr = grad * grad + self.epsilon1
    if factored is not None:
      rows, cols = factored
      new['v_row'] = decay * slots['v_row'] + mixing * jnp.mean(grad_sqr, axis=cols)
      new['v_col'] = decay * slots['v_col'] + mixing * jnp.mean(grad_sqr, axis=rows)
      rows_in_v_row = tuple(d - sum(c < d for c in cols) for d in rows)
      row_mean = jnp.mean(new['v_row'], axis=rows_in_v_row, keepdims=True)
      y = (grad * jnp.expand_dims((new['v_row'] / row_mean) ** -0.5, axis=cols)
           * jnp.expand_dims(new['v_col'] ** -0.5, axis=rows))
    else:
      new['v'] = decay * slots['v'] + mixing * grad_sqr
      y = grad * new['v'] ** -0.5
    if self.clipping_threshold is not None:
      rms = jnp.sqrt(jnp.mean(y * y, axis=averaged, keepdims=True))
      y = y / jnp.maximum(1.0, rms / self.clipping_threshold)
    subtrahend = update_scale * y
    if self.beta1 is not None:
      m = self.beta1 * slots['m'] + (1.0 - self.beta1) * subtrahend
      subtrahend = m
      new['m'] = m.astype(self.dtype_momentum)
    weight_decay = self.weight_decay_rate
    if self.weight_decay_rate_lr_exponent:
      weight_decay = (weight_decay or 1.0) * learning_rate ** self.weight_decay_rate_lr_exponent
    # `param + update` must give T5X's new parameter: without weight decay the update is
    # -subtrahend exactly; with it, T5X's (1 - rate) * param - subtrahend, less param.
    if weight_decay is not None:
      new_param = (1.0 - weight_decay) * param - subtrahend
      update = new_param - param
    else:
      new_param = param - subtrahend
      update = -subtrahend
    if self.skip_nan_updates:
      for k in _SLOTS:
        new[k] = jnp.where(jnp.isnan(new[k]), slots[k], new[k])
      update = jnp.where(jnp.isnan(new_param), jnp.zeros_like(update), update)
    return update.astype(param.dtype), new


def adafactor(decay_rate: float = 0.8, clipping_threshold: float | None = 1.0,
              multiply_by_parameter_scale: bool = True, factored: bool = True,
              momentum: float | None = None, min_dim_size_to_factor: int = 128,
              weight_decay_rate: float | None = None, epsilon1: float = 1e-30
              ) -> Callable[[Schedule], optax.GradientTransformation]:
  """This project's earlier Adafactor: optax's, with T5X's fine-tuning defaults (decay
  0.8, factored second moments, no momentum, update clipping 1.0, updates scaled by each
  parameter's RMS) and optax's state layout.

  Kernels of a scanned model go through `optimizers.per_layer` (the trainer does it), so
  each stacked layer is factored and clipped on its own, as T5X does.
  """
  return functools.partial(
      optax.adafactor, decay_rate=decay_rate, clipping_threshold=clipping_threshold,
      multiply_by_parameter_scale=multiply_by_parameter_scale, factored=factored,
      momentum=momentum, min_dim_size_to_factor=min_dim_size_to_factor,
      weight_decay_rate=weight_decay_rate, eps=epsilon1)

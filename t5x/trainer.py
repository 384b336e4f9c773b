"""The partitioned train and eval steps, with gradient accumulation over microbatches.

The train state lives sharded on the mesh; its shardings come from the parameters'
logical axes through the partitioner's rules. The step is one `jax.jit` with explicit
input/output shardings and the state donated.
"""
from typing import Any, Optional

import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import optax

from t5x.lora import adapters as lora
from t5x import model_config
from t5x import models
from t5x import adafactor
from t5x import optimizers
from t5x import partitioning


@flax.struct.dataclass
class TrainState:
  step: jax.Array  # int32 scalar: updates applied so far
  params: Any  # the whole tree (with LoRA: frozen base and adapters)
  opt_state: Any  # of the trained parameters only (with LoRA: the adapters)


class Trainer:
  """Builds the sharded train state and the jitted train/eval steps (T5X's `Trainer`).

  Args:
    model: the EncoderDecoderModel (its optimizer_def builds the optimizer).
    partitioner: mesh and rules.
    learning_rate_fn: step -> learning rate (see optimizers.create_learning_rate_scheduler).
    num_microbatches: split each batch into this many parts and sum their gradients.
    max_grad_norm: clip gradients by global norm before the optimizer (None: no clipping).
    skip_nonfinite_updates: leave the state unchanged on a step whose loss or gradients
      are not finite (the step counter still advances).
    shard_optimizer_state_over_data: optimizer-state leaves always follow their parameter's
      sharding; this also splits them over the data axis (ZeRO stage 1), for meshes where
      the parameters are replicated over 'data' (1-D parameter partitioning, e.g. GPUs).

  With LoRA on (`model.config.lora_rank > 0`) the base is frozen: gradients are taken
  with respect to the adapters only, and the optimizer sees (and keeps state for) only
  them; see `lora.split_trainable`.
  """

  def __init__(self, model: models.EncoderDecoderModel, partitioner: partitioning.PjitPartitioner,
               learning_rate_fn: Optional[optimizers.Schedule] = None,
               num_microbatches: Optional[int] = None, max_grad_norm: Optional[float] = None,
               skip_nonfinite_updates: bool = False,
               shard_optimizer_state_over_data: bool = False):
    self.model = model
    self.shard_optimizer_state_over_data = shard_optimizer_state_over_data
    self.partitioner = partitioner
    self.learning_rate_fn = learning_rate_fn or optimizers.create_learning_rate_scheduler()
    self.num_microbatches = num_microbatches or 1
    self.skip_nonfinite_updates = skip_nonfinite_updates
    self._boxed = jax.eval_shape(model.init_boxed_params, jax.random.PRNGKey(0))
    self.param_logical_axes = nn.get_partition_spec(self._boxed)
    optimizer_def = model.optimizer_def or optimizers.adafactor()
    chain = [optax.clip_by_global_norm(max_grad_norm)] if max_grad_norm else []
    t5x_adafactor = isinstance(optimizer_def, adafactor.Adafactor)
    if t5x_adafactor:  # it factors by logical axes; `layers` is a batch axis to it
      optimizer_def.set_param_axes(self.param_logical_axes)
    tx = optimizer_def(self.learning_rate_fn)
    if model.config.scan_layers and not t5x_adafactor:  # stacked layers one by one
      tx = optimizers.per_layer(tx, model.config.param_scan_axis)
    self.tx = optax.chain(*chain, tx)
    abstract_params = nn.unbox(self._boxed)
    boxed = model_config.flatten(self._boxed)
    partitioner.check_divisible({k: v.value.shape for k, v in boxed.items()},
                                {k: tuple(v.names) for k, v in boxed.items()})
    self.state_shardings = self._shardings(abstract_params)
    self.abstract_state = jax.tree_util.tree_map(
        lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
        jax.eval_shape(self._init_state_from_params, abstract_params), self.state_shardings)
    self._train_step = None
    self._eval_step = None

  # ----------------------------------------------------------------------- state

  def _shardings(self, abstract_params) -> TrainState:
    part = self.partitioner
    param_shardings = jax.tree_util.tree_map(
        lambda spec: part.sharding(tuple(spec)), self.param_logical_axes,
        is_leaf=lambda x: isinstance(x, jax.sharding.PartitionSpec))
    trained = self._trained(abstract_params)
    abstract_opt = jax.eval_shape(self.tx.init, trained)
    opt_shardings = _optimizer_shardings(abstract_opt, trained, self._trained(param_shardings),
                                         part.replicated)
    if self.shard_optimizer_state_over_data:
      opt_shardings = jax.tree_util.tree_map(
          lambda leaf, s: part.with_data_axis(s, leaf.shape) if any(s.spec) else s,
          abstract_opt, opt_shardings)
    return TrainState(step=part.replicated, params=param_shardings, opt_state=opt_shardings)

  def _trained(self, tree):
    """The part of a parameter-shaped tree that the optimizer updates."""
    return lora.split_trainable(tree, self.model.config)[0]

  def _init_state_from_params(self, params) -> TrainState:
    return TrainState(step=jnp.int32(0), params=params,
                      opt_state=self.tx.init(self._trained(params)))

  def init_state(self, rng: jax.Array) -> TrainState:
    """A fresh state, created directly in its shardings (never whole on one device)."""
    fn = jax.jit(lambda r: self._init_state_from_params(self.model.init_params(r)),
                 out_shardings=self.state_shardings)
    with jax.set_mesh(self.partitioner.mesh):
      return fn(rng)

  def state_from_params(self, params: Any) -> TrainState:
    """A state at step 0 around given parameters (e.g. a fine-tuning start point)."""
    params = jax.device_put(params, self.state_shardings.params)
    fn = jax.jit(self._init_state_from_params, in_shardings=(self.state_shardings.params,),
                 out_shardings=self.state_shardings)
    with jax.set_mesh(self.partitioner.mesh):
      return fn(params)

  # ----------------------------------------------------------------------- steps

  def train_step(self, state: TrainState, batch: dict, rng: jax.Array) -> tuple[TrainState, dict]:
    """One optimizer update; `rng` is the run's dropout key (folded with the step)."""
    if self._train_step is None:
      self._train_step = self.partitioned_train_step(batch)
    return self._train_step(state, batch, rng)

  def partitioned_train_step(self, batch: dict):
    """The jitted step for batches shaped like `batch` (arrays or ShapeDtypeStructs), the
    state donated; its `.lower(state, batch, rng)` compiles ahead of time (`t5x plan`)."""
    batch_shardings = {k: self.partitioner.batch_sharding(v.ndim) for k, v in batch.items()}
    return self.partitioner.partition(
        self._train_step_fn, in_shardings=(self.state_shardings, batch_shardings,
                                           self.partitioner.replicated),
        out_shardings=(self.state_shardings, self.partitioner.replicated),
        donate_argnums=(0,))

  def eval_step(self, params: Any, batch: dict) -> dict:
    """Teacher-forced metric sums for one batch (dropout off)."""
    if self._eval_step is None:
      batch_shardings = {k: self.partitioner.batch_sharding(v.ndim) for k, v in batch.items()}
      self._eval_step = self.partitioner.partition(
          self.model.eval_metrics, in_shardings=(self.state_shardings.params, batch_shardings),
          out_shardings=self.partitioner.replicated)
    return self._eval_step(params, batch)

  def _train_step_fn(self, state: TrainState, batch: dict, rng: jax.Array):
    step_rng = jax.random.fold_in(rng, state.step)
    normalizer = self.model.loss_normalizer(batch)
    grads, sums = self.accumulate_gradients(state.params, batch, step_rng, normalizer)
    trained, frozen = lora.split_trainable(state.params, self.model.config)
    updates, opt_state = self.tx.update(grads, state.opt_state, trained)
    params = lora.combine(optax.apply_updates(trained, updates), frozen)
    grad_norm = optax.global_norm(grads)
    # Any inf or nan in the gradients makes their norm non-finite: one check, not one per
    # parameter (a norm that overflows float32 counts as non-finite too).
    finite = jnp.isfinite(sums['loss_sum']) & jnp.isfinite(grad_norm)
    if self.skip_nonfinite_updates:
      keep = lambda new, old: jax.tree_util.tree_map(
          lambda n, o: jnp.where(finite, n, o), new, old)
      params, opt_state = keep(params, state.params), keep(opt_state, state.opt_state)
    metrics = dict(sums, loss=sums['loss_sum'] / normalizer,
                   learning_rate=self.learning_rate_fn(state.step),
                   grad_norm=grad_norm, nonfinite=1.0 - finite.astype(jnp.float32))
    return TrainState(step=state.step + 1, params=params, opt_state=opt_state), metrics

  def accumulate_gradients(self, params, batch: dict, rng: jax.Array, normalizer):
    """Gradients of the whole batch's loss, summed over `num_microbatches` slices.

    Only the trained parameters are differentiated (all of them, or with LoRA the
    adapters: the base enters as a constant, so no gradient is ever formed for it); the
    gradient tree has their structure.
    Microbatch i takes rows i, i+M, i+2M, ... so that each device keeps its own rows
    (the batch is sharded over 'data' along rows) and no data moves between devices.
    """
    trained, frozen = lora.split_trainable(params, self.model.config)
    grad_fn = jax.grad(lambda t, *args: self.model.loss_fn(lora.combine(t, frozen), *args),
                       has_aux=True)
    m = self.num_microbatches
    if m == 1:
      return grad_fn(trained, batch, rng, normalizer)

    def split(x):
      x = x.reshape((x.shape[0] // m, m) + x.shape[1:])
      return jnp.swapaxes(x, 0, 1)

    micro = jax.tree_util.tree_map(split, batch)

    def body(carry, inputs):
      grads, sums = carry
      index, mb = inputs
      mb = {k: nn.with_logical_constraint(v, ('batch',) + (None,) * (v.ndim - 1))
            for k, v in mb.items()}
      g, s = grad_fn(trained, mb, jax.random.fold_in(rng, index), normalizer)
      add = lambda a, b: jax.tree_util.tree_map(jnp.add, a, b)
      return (add(grads, g), add(sums, s)), None

    zeros = jax.tree_util.tree_map(jnp.zeros_like, trained)
    _, sums_shape = jax.eval_shape(grad_fn, trained, jax.tree_util.tree_map(lambda x: x[0], micro),
                                   rng, normalizer)
    zero_sums = jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), sums_shape)
    (grads, sums), _ = jax.lax.scan(body, (zeros, zero_sums), (jnp.arange(m), micro))
    return grads, sums


def _optimizer_shardings(abstract_opt, abstract_params, param_shardings, replicated):
  """Optimizer-state leaves shaped like their parameter share its sharding; the rest
  (counts, Adafactor's factored row/column statistics) are replicated."""
  by_path = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(abstract_params)[0]:
    by_path[_dict_keys(path)] = leaf.shape
  shard_by_path = {_dict_keys(p): s for p, s in
                   jax.tree_util.tree_flatten_with_path(param_shardings)[0]}

  def pick(path, leaf):
    keys = _dict_keys(path)
    # optax's states hold a parameter's path at their end; T5X's Adafactor adds the slot
    # name after it (.../kernel/v).
    for end in (len(keys), len(keys) - 1):
      for start in range(end):
        suffix = keys[start:end]
        if suffix in by_path and by_path[suffix] == leaf.shape:
          return shard_by_path[suffix]
    return replicated

  return jax.tree_util.tree_map_with_path(pick, abstract_opt)


def _dict_keys(path) -> tuple:
  return tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))

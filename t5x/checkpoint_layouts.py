"""Which Orbax layout a `checkpoint_<step>` folder has; the train state in T5X's layout.

Two layouts hold the same things:
- T5X's (`OrbaxCheckpointManagerInterface`), which this project writes too: one item
  `state` holding {'target': parameters, 'state': {'step', 'param_states'}} (T5X's
  `state_dict()`), plus an item `dataset` (T5X's tf.data iterator; this project's
  input position, see checkpoints.DatasetCheckpointHandler);
- this project's earlier one (PROJECT, still read): items `target` (the parameters) and
  `state` ({'step', 'opt_state', 'input_position'}).

`param_states` is `adafactor.Adafactor`'s state (v_row / v_col / v / m per parameter), so
T5X and a run here whose optimizer is that class resume from each other exactly. A run
with another optimizer (optax's AdamW, LoRA's masked chain, ...) keeps its optax state
under {'state': {'step', 'opt_state'}} instead, which T5X cannot resume (as it could not
take that optimizer) but whose parameters it reads.
"""
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from t5x import adafactor
from t5x import fs_utils

PROJECT, T5X = 'project', 't5x'


class OptimizerMismatch(ValueError):
  """A readable T5X checkpoint whose optimizer state this run's optimizer cannot take."""


def train_state_tree(step: int, params: Any, opt_state: Any) -> dict:
  """The `state` item T5X writes, for this run's train state.

  T5X's form ({'step', 'param_states'}) when the optimizer state is one Adafactor state
  (beside stateless transformations) that has made exactly `step` updates; otherwise
  (another optimizer, skipped steps, a fine-tune whose optimizer started at a later
  step) {'step', 'opt_state'}, so that this project resumes it exactly.
  """
  slots = _adafactor_state(opt_state)
  if slots is not None and int(jax.device_get(slots.step)) == step:
    return {'target': params, 'state': {'step': slots.step, 'param_states': slots.param_states}}
  return {'target': params, 'state': {'step': np.int32(step), 'opt_state': opt_state}}


def _adafactor_state(opt_state: Any) -> Optional[adafactor.AdafactorState]:
  """The optimizer state's only AdafactorState when nothing else in it has leaves."""
  is_slots = lambda x: isinstance(x, adafactor.AdafactorState)
  found = [s for s in jax.tree_util.tree_leaves(opt_state, is_leaf=is_slots) if is_slots(s)]
  if len(found) != 1:
    return None
  others = jax.tree_util.tree_leaves(jax.tree_util.tree_map(
      lambda x: None if is_slots(x) else x, opt_state, is_leaf=is_slots))
  return found[0] if not others else None


def layout(path: str) -> Optional[str]:
  """PROJECT, T5X, or None (not an Orbax checkpoint folder of either kind)."""
  folder = epath.Path(fs_utils.resolve(path))
  if (folder / 'target').is_dir():
    return PROJECT
  if (folder / 'state').is_dir():
    return T5X
  return None


def _state_item(path: str) -> str:
  return str(epath.Path(fs_utils.resolve(path)) / 'state')


def _metadata(path: str) -> Any:
  """The tree metadata of a T5X checkpoint's `state` item."""
  return ocp.PyTreeCheckpointer().metadata(_state_item(path)).item_metadata


def target_metadata(path: str) -> Any:
  """The parameters' metadata (shape, dtype per leaf) of a T5X checkpoint."""
  return _metadata(path)['target']


def restore_target(path: str) -> dict:
  """A T5X checkpoint's parameters as numpy arrays; the optimizer state is not read."""
  target = target_metadata(path)
  as_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), target)
  return _partial_restore(path, {'target': target}, {'target': as_numpy})['target']


def restore_target_sharded(path: str, abstract_params: Any) -> Any:
  """A T5X checkpoint's parameters straight into the shardings and dtypes of
  `abstract_params` (ShapeDtypeStructs with shardings), shard by shard."""
  args = jax.tree_util.tree_map(_array_args, abstract_params)
  return _partial_restore(path, {'target': abstract_params}, {'target': args})['target']


def restore_adafactor_start(path: str, abstract_params: Any, abstract_opt_state: Any):
  """(step, params, opt_state) of a start point in T5X's layout that holds T5X's
  Adafactor state, when this run's optimizer is T5X's Adafactor: a T5X fine-tune
  continues the pre-training's optimizer state and step. None otherwise (another layout
  or optimizer: the run starts from the parameters alone)."""
  if (layout(path) != T5X or 'param_states' not in _metadata(path)['state']
      or _adafactor_state(abstract_opt_state) is None):
    return None
  return restore_train_state(path, abstract_params, abstract_opt_state)


def restore_train_state(path: str, abstract_params: Any, abstract_opt_state: Any):
  """(step, params, opt_state) of a checkpoint in T5X's layout, into the given shardings.

  T5X's form (`param_states`) needs this run's optimizer to hold one
  `adafactor.AdafactorState` (T5X's Adafactor, alone or beside stateless transformations
  such as gradient clipping); its `param_states` and `step` come from the checkpoint.
  The `opt_state` form needs the optimizer that wrote it. Raises OptimizerMismatch
  naming the checkpoint otherwise.
  """
  stored = _metadata(path)['state']
  if 'opt_state' in stored:
    abstract = {'target': abstract_params,
                'state': {'step': jax.ShapeDtypeStruct((), np.int32), 'opt_state': abstract_opt_state}}
    try:
      restored = _partial_restore(path, abstract, jax.tree_util.tree_map(_array_args, abstract))
    except (ValueError, KeyError) as e:
      raise OptimizerMismatch(
          f'{path}: its optimizer state is not this run\'s optimizer\'s ({e}); resume with '
          'the OPTIMIZER of the run that wrote it (its MODEL_DIR/config.gin), or start a new '
          'MODEL_DIR from its parameters with INITIAL_CHECKPOINT_PATH.') from e
    return int(restored['state']['step']), restored['target'], restored['state']['opt_state']
  slots = _adafactor_state(abstract_opt_state)
  if slots is None:
    raise OptimizerMismatch(
        f'{path} holds T5X\'s Adafactor state (param_states of v_row/v_col/v/m); this '
        'run\'s optimizer keeps another state. Set OPTIMIZER = @adafactor.Adafactor() '
        '(alone) to resume it, or start a new MODEL_DIR from its parameters with '
        'INITIAL_CHECKPOINT_PATH.')
  abstract = {'target': abstract_params,
              'state': {'step': slots.step, 'param_states': slots.param_states}}
  restored = _partial_restore(path, abstract, jax.tree_util.tree_map(_array_args, abstract))
  state = restored['state']
  new_slots = adafactor.AdafactorState(state['step'], state['param_states'])
  opt_state = jax.tree_util.tree_map(
      lambda x: new_slots if isinstance(x, adafactor.AdafactorState) else x,
      abstract_opt_state, is_leaf=lambda x: isinstance(x, adafactor.AdafactorState))
  return int(state['step']), restored['target'], opt_state


def _array_args(leaf) -> ocp.RestoreArgs:
  if getattr(leaf, 'sharding', None) is None:  # a host scalar (the step)
    return ocp.RestoreArgs(restore_type=np.ndarray)
  return ocp.ArrayRestoreArgs(sharding=leaf.sharding, global_shape=leaf.shape, dtype=leaf.dtype)


def _partial_restore(path: str, item: Any, restore_args: Any) -> Any:
  return ocp.PyTreeCheckpointer().restore(_state_item(path), args=ocp.args.PyTreeRestore(
      item=item, restore_args=restore_args, partial_restore=True))

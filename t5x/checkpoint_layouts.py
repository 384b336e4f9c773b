"""Which Orbax layout a `checkpoint_<step>` folder has, and reading T5X's.

Two layouts hold the same things:
- this project's: items `target` (the parameters) and `state` ({'step', 'opt_state',
  'input_position'});
- upstream T5X's (`OrbaxCheckpointManagerInterface`): one item `state` holding
  {'target': parameters, 'state': {'step', 'param_states'}} (T5X's `state_dict()`),
  plus an item `dataset` (T5X's tf.data iterator, which this project does not read).

A T5X checkpoint's optimizer state is `adafactor.Adafactor`'s (`param_states` of
v_row / v_col / v / m per parameter), so a run whose optimizer is that class resumes from
it exactly; any optimizer can start from its parameters.
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


def restore_train_state(path: str, abstract_params: Any, abstract_opt_state: Any):
  """(step, params, opt_state) of a T5X checkpoint, into the given shardings.

  `abstract_opt_state` must hold one `adafactor.AdafactorState` (this run's optimizer is
  T5X's Adafactor, alone or beside stateless transformations such as gradient clipping);
  its `param_states` and `step` come from the checkpoint. Raises OptimizerMismatch
  naming the checkpoint otherwise.
  """
  found = [s for s in jax.tree_util.tree_leaves(
      abstract_opt_state, is_leaf=lambda x: isinstance(x, adafactor.AdafactorState))
           if isinstance(s, adafactor.AdafactorState)]
  if len(found) != 1:
    raise OptimizerMismatch(
        f'{path} is a T5X checkpoint whose optimizer state is T5X\'s Adafactor (param_states '
        'of v_row/v_col/v/m); this run\'s optimizer keeps another state. Set OPTIMIZER = '
        '@adafactor.Adafactor() to resume it, or start a new MODEL_DIR from its parameters '
        'with INITIAL_CHECKPOINT_PATH.')
  slots = found[0]
  if len(jax.tree_util.tree_leaves(abstract_opt_state)) != len(jax.tree_util.tree_leaves(slots)):
    raise OptimizerMismatch(
        f'{path}: this run\'s optimizer keeps state beside T5X\'s Adafactor (a T5X '
        'checkpoint has none to restore it from); resume with OPTIMIZER = '
        '@adafactor.Adafactor() alone.')
  abstract = {'target': abstract_params,
              'state': {'step': slots.step, 'param_states': slots.param_states}}
  restored = _partial_restore(path, abstract, jax.tree_util.tree_map(_array_args, abstract))
  state = restored['state']
  new_slots = adafactor.AdafactorState(state['step'], state['param_states'])
  opt_state = jax.tree_util.tree_map(
      lambda x: new_slots if isinstance(x, adafactor.AdafactorState) else x,
      abstract_opt_state, is_leaf=lambda x: isinstance(x, adafactor.AdafactorState))
  return int(state['step']), restored['target'], opt_state


def _array_args(leaf) -> ocp.ArrayRestoreArgs:
  return ocp.ArrayRestoreArgs(sharding=leaf.sharding, global_shape=leaf.shape, dtype=leaf.dtype)


def _partial_restore(path: str, item: Any, restore_args: Any) -> Any:
  return ocp.PyTreeCheckpointer().restore(_state_item(path), args=ocp.args.PyTreeRestore(
      item=item, restore_args=restore_args, partial_restore=True))

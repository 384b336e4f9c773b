"""The project's checkpoint format: orbax, in T5X's layout.

    MODEL_DIR/checkpoint_<step>/target/   the parameters (T5X names)
    MODEL_DIR/checkpoint_<step>/state/    step, optimizer state, input position, ...

`target` and `state` are separate orbax items so that starting a fine-tune from a
checkpoint reads the parameters only.
"""
import logging
import os
import re
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath

from t5x_engine import fs_utils, model_config

_STEP_DIR = re.compile(r'^checkpoint_(\d+)$')
ITEMS = ('target', 'state')


def manager(model_dir: str, *, max_to_keep: Optional[int] = None,
            enable_async: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager writing `checkpoint_<step>` folders with `target`/`state` items."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, enable_async_checkpointing=enable_async,
      step_name_format=ocp.step.standard_name_format(step_prefix='checkpoint'))
  return ocp.CheckpointManager(fs_utils.resolve(model_dir), options=options, item_names=ITEMS)


def save(model_dir: str, step: int, target: Any, state: Any) -> str:
  """Writes one checkpoint synchronously; returns its folder."""
  with manager(model_dir) as mngr:
    mngr.save(step, args=ocp.args.Composite(target=ocp.args.StandardSave(target),
                                            state=ocp.args.StandardSave(state)))
    mngr.wait_until_finished()
  return checkpoint_dir(model_dir, step)


def checkpoint_dir(model_dir: str, step: int) -> str:
  return os.path.join(model_dir, f'checkpoint_{step}')


def steps(model_dir: str) -> list[int]:
  """Steps of the finished checkpoints in MODEL_DIR, oldest first."""
  folder = epath.Path(fs_utils.resolve(model_dir))  # local or gs://
  if not folder.is_dir():
    return []
  found = [int(m.group(1)) for m in (_STEP_DIR.match(p.name) for p in folder.iterdir()) if m]
  return sorted(s for s in found if is_checkpoint(checkpoint_dir(model_dir, s)))


def step_of(path: str) -> Optional[int]:
  """The step in a `.../checkpoint_<step>[/...]` path, or None."""
  match = re.search(r'checkpoint_(\d+)', path or '')
  return int(match.group(1)) if match else None


def is_checkpoint(path: str) -> bool:
  """True for a `checkpoint_<step>` folder of ours (it holds a `target` item)."""
  return epath.Path(fs_utils.resolve(path), 'target').is_dir()


def latest(model_dir: str) -> Optional[str]:
  """The newest checkpoint folder in MODEL_DIR, or None."""
  found = steps(model_dir)
  return checkpoint_dir(model_dir, found[-1]) if found else None


def restore_target(path: str) -> dict:
  """Parameters of a `checkpoint_<step>` folder as a nested dict of numpy arrays.

  Read straight into host memory, whatever mesh wrote them: a checkpoint saved by a
  pod slice loads in one process for inference or export.
  """
  target = os.path.join(fs_utils.resolve(path), 'target')
  metadata = ocp.StandardCheckpointer().metadata(target).item_metadata
  as_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  return ocp.PyTreeCheckpointer().restore(target, args=ocp.args.PyTreeRestore(
      restore_args=as_numpy))


def target_shapes(path: str) -> dict:
  """{'a/b/kernel': shape} of a checkpoint's parameters, from its metadata alone."""
  target = os.path.join(fs_utils.resolve(path), 'target')
  metadata = ocp.StandardCheckpointer().metadata(target).item_metadata
  return {k: tuple(leaf.shape) for k, leaf in model_config.flatten(metadata).items()}


def restore_target_sharded(path: str, abstract_params: Any) -> Any:
  """Parameters of a checkpoint straight into the shardings (and dtypes) of
  `abstract_params` (ShapeDtypeStructs with shardings): each host reads only the
  shards its devices hold, so an 11B start point never passes whole through one host."""
  target = os.path.join(fs_utils.resolve(path), 'target')
  return ocp.StandardCheckpointer().restore(target, abstract_params)


class TrainCheckpointer:
  """Periodic (optionally asynchronous) saving and fall-back restoring for a training run.

  A checkpoint's `state` item holds the step, the optimizer state, and the input
  pipeline's position (batches consumed), so a restarted run continues exactly.
  """

  def __init__(self, model_dir: str, keep: Optional[int] = None, use_async: bool = True):
    self.model_dir = model_dir
    self._manager = manager(model_dir, max_to_keep=keep, enable_async=use_async)

  def save(self, step: int, params: Any, opt_state: Any, input_position: int) -> None:
    state = {'step': np.int64(step), 'opt_state': opt_state,
             'input_position': np.int64(input_position)}
    self._manager.save(step, args=ocp.args.Composite(target=ocp.args.StandardSave(params),
                                                     state=ocp.args.StandardSave(state)),
                       force=True)

  def restore_latest(self, abstract_params: Any, abstract_opt_state: Any):
    """(step, params, opt_state, input_position) from the newest readable checkpoint.

    An unreadable newest checkpoint (truncated, a file missing) is reported with its
    path and the previous one is tried; None only when MODEL_DIR holds no checkpoint.
    Raises if checkpoints exist but none can be read: a run never silently restarts.
    """
    found = steps(self.model_dir)
    scalar = np.zeros((), np.int64)
    abstract_state = {'step': scalar, 'opt_state': abstract_opt_state, 'input_position': scalar}
    errors = []
    for step in reversed(found):
      try:
        restored = self._manager.restore(step, args=ocp.args.Composite(
            target=ocp.args.StandardRestore(abstract_params),
            state=ocp.args.StandardRestore(abstract_state)))
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        path = checkpoint_dir(self.model_dir, step)
        logging.warning('checkpoint %s is unreadable (%s: %s); trying the previous one.',
                        path, type(e).__name__, str(e).splitlines()[0][:300])
        errors.append(path)
        continue
      state = restored['state']
      return (int(state['step']), restored['target'], state['opt_state'],
              int(state['input_position']))
    if errors:
      raise RuntimeError(f'no checkpoint in {self.model_dir} could be read ({", ".join(errors)}); '
                         'remove the damaged folders to start from scratch deliberately.')
    return None

  def wait(self) -> None:
    self._manager.wait_until_finished()

  def close(self) -> None:
    self._manager.close()

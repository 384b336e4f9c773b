"""The project's checkpoint format: orbax, in T5X's layout.

    MODEL_DIR/checkpoint_<step>/target/   the parameters (T5X names)
    MODEL_DIR/checkpoint_<step>/state/    step, optimizer state, input position, ...

`target` and `state` are separate orbax items so that starting a fine-tune from a
checkpoint reads the parameters only.
"""
import os
import re
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp

_STEP_DIR = re.compile(r'^checkpoint_(\d+)$')
ITEMS = ('target', 'state')


def manager(model_dir: str, *, max_to_keep: Optional[int] = None,
            enable_async: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager writing `checkpoint_<step>` folders with `target`/`state` items."""
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, enable_async_checkpointing=enable_async,
      step_name_format=ocp.step.standard_name_format(step_prefix='checkpoint'))
  return ocp.CheckpointManager(os.path.abspath(model_dir), options=options, item_names=ITEMS)


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
  if not os.path.isdir(model_dir):
    return []
  found = [int(m.group(1)) for m in map(_STEP_DIR.match, os.listdir(model_dir)) if m]
  return sorted(s for s in found if is_checkpoint(checkpoint_dir(model_dir, s)))


def is_checkpoint(path: str) -> bool:
  """True for a `checkpoint_<step>` folder of ours (it holds a `target` item)."""
  return os.path.isdir(os.path.join(path, 'target'))


def latest(model_dir: str) -> Optional[str]:
  """The newest checkpoint folder in MODEL_DIR, or None."""
  found = steps(model_dir)
  return checkpoint_dir(model_dir, found[-1]) if found else None


def restore_target(path: str) -> dict:
  """Parameters of a `checkpoint_<step>` folder as a nested dict of numpy arrays."""
  tree = ocp.StandardCheckpointer().restore(os.path.join(os.path.abspath(path), 'target'))
  return jax.tree_util.tree_map(np.asarray, tree)

"""Checkpoints in T5X's Orbax layout, with T5X's parameter names.

    MODEL_DIR/checkpoint_<step>/state/     {'target': parameters, 'state': {'step', ...}}
    MODEL_DIR/checkpoint_<step>/dataset/   the input position (T5X: its tf.data iterator)
    MODEL_DIR/checkpoint_<step>/_CHECKPOINT_METADATA   both items' handlers, T5X's names

Upstream T5X restores what is written here and the other way round (see
checkpoint_layouts for the optimizer state). A fine-tune reads the `target` subtree only.
MODEL_DIRs of this project's earlier layout (items `target` + `state`) are still read.
"""
import dataclasses
import datetime
import errno
import json
import logging
import os
import re
import threading
import time
import warnings
from typing import Any, Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from etils import epath
from jax.experimental import multihost_utils

from t5x import checkpoint_layouts as layouts
from t5x import fs_utils
from t5x import model_config

# Only finished folders: `checkpoint_<step>.orbax-checkpoint-tmp` (an interrupted save) and
# `checkpoint_<step>.corrupt-<time>` (moved aside by restore_latest) never match, here or in
# orbax's own step listing (same anchored pattern), so garbage collection never deletes them.
_STEP_DIR = re.compile(r'^checkpoint_(\d+)$')
ITEMS = ('state', 'dataset')
_POSITION_FILE = 'input_position.json'


class DatasetCheckpointHandler(ocp.CheckpointHandler):
  """The `dataset` item: T5X keeps its tf.data iterator here; this project keeps the
  input position (batches consumed, the same on every host) as JSON. The class has T5X's
  handler name, so _CHECKPOINT_METADATA reads as T5X's; T5X never reads the item unless
  asked to restore its dataset."""

  def save(self, directory: epath.Path, args: 'DatasetArgs') -> None:
    if args.item is not None and jax.process_index() == 0:
      fs_utils.write_atomic(os.fspath(directory / _POSITION_FILE),
                            json.dumps({'input_position': int(args.item)}))

  def restore(self, directory: epath.Path, args: Optional['DatasetArgs'] = None) -> Optional[int]:
    """The saved input position, or None (T5X wrote the item, or saved no dataset)."""
    del args
    path = directory / _POSITION_FILE
    if not path.exists():
      return None
    return int(json.loads(path.read_text())['input_position'])


@ocp.args.register_with_handler(DatasetCheckpointHandler, for_save=True, for_restore=True)
@dataclasses.dataclass
class DatasetArgs(ocp.args.CheckpointArgs):
  item: Optional[int] = None


class CheckpointSaveError(OSError):
  """A checkpoint could not be written (full disk, lost permissions...); names the folder
  and the cause. The previous checkpoint is untouched."""


def manager(model_dir: str, *, max_to_keep: Optional[int] = None, enable_async: bool = False,
            cleanup_tmp: bool = False) -> ocp.CheckpointManager:
  """A CheckpointManager writing `checkpoint_<step>` folders in T5X's layout.

  `cleanup_tmp` removes the `.orbax-checkpoint-tmp` folders that an interrupted or failed
  save left behind (only a run that owns MODEL_DIR should ask for it).
  """
  options = ocp.CheckpointManagerOptions(
      max_to_keep=max_to_keep, enable_async_checkpointing=enable_async,
      cleanup_tmp_directories=cleanup_tmp,
      step_name_format=ocp.step.standard_name_format(step_prefix='checkpoint'))
  return ocp.CheckpointManager(
      fs_utils.resolve(model_dir), options=options,
      item_handlers={'state': ocp.PyTreeCheckpointHandler(),
                     'dataset': DatasetCheckpointHandler()})


def _save_args(tree: dict, input_position: Optional[int]) -> ocp.args.Composite:
  return ocp.args.Composite(state=ocp.args.PyTreeSave(tree),
                            dataset=DatasetArgs(input_position))


def save(model_dir: str, step: int, params: Any) -> str:
  """Writes parameters as checkpoint `step` (no optimizer state: a start point for
  training or a model to decode), synchronously; returns its folder."""
  with manager(model_dir) as mngr:
    mngr.save(step, args=_save_args({'target': params, 'state': {'step': np.int32(step)}},
                                    None))
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
  """True for a `checkpoint_<step>` folder of ours or of upstream T5X's Orbax layout."""
  return layouts.layout(path) is not None


def unreadable_step_folders(model_dir: str) -> list[str]:
  """`checkpoint_<step>` folders in MODEL_DIR that hold no Orbax checkpoint either
  project reads (e.g. a pre-Orbax T5X checkpoint, or files copied in by hand)."""
  folder = epath.Path(fs_utils.resolve(model_dir))
  if not folder.is_dir():
    return []
  return sorted(str(p) for p in folder.iterdir()
                if _STEP_DIR.match(p.name) and not is_checkpoint(str(p)))


def checkpoint_folder(path: str) -> Optional[str]:
  """`path` itself when it is a `checkpoint_<step>` folder, else the latest checkpoint of
  the MODEL_DIR `path`, else None (no checkpoint of this project or T5X here)."""
  return path if is_checkpoint(path) else latest(path)


def latest(model_dir: str) -> Optional[str]:
  """The newest checkpoint folder in MODEL_DIR, or None."""
  found = steps(model_dir)
  return checkpoint_dir(model_dir, found[-1]) if found else None


def restore_target(path: str) -> dict:
  """Parameters of a `checkpoint_<step>` folder as a nested dict of numpy arrays.

  Read straight into host memory, whatever mesh wrote them: a checkpoint saved by a
  pod slice loads in one process for inference or export.
  """
  if layouts.layout(path) == layouts.T5X:
    return layouts.restore_target(path)
  target = os.path.join(fs_utils.resolve(path), 'target')
  metadata = ocp.StandardCheckpointer().metadata(target).item_metadata
  as_numpy = jax.tree_util.tree_map(lambda _: ocp.RestoreArgs(restore_type=np.ndarray), metadata)
  return ocp.PyTreeCheckpointer().restore(target, args=ocp.args.PyTreeRestore(
      restore_args=as_numpy))


def target_structs(path: str) -> dict:
  """{'a/b/kernel': jax.ShapeDtypeStruct} of a checkpoint's parameters, from its metadata
  alone (no array is read)."""
  if layouts.layout(path) == layouts.T5X:
    metadata = layouts.target_metadata(path)
  else:
    target = os.path.join(fs_utils.resolve(path), 'target')
    metadata = ocp.StandardCheckpointer().metadata(target).item_metadata
  return {k: jax.ShapeDtypeStruct(tuple(leaf.shape), leaf.dtype)
          for k, leaf in model_config.flatten(metadata).items()}


def target_shapes(path: str) -> dict:
  """{'a/b/kernel': shape} of a checkpoint's parameters, from its metadata alone."""
  return {k: v.shape for k, v in target_structs(path).items()}


def restore_target_sharded(path: str, abstract_params: Any) -> Any:
  """Parameters of a checkpoint straight into the shardings (and dtypes) of
  `abstract_params` (ShapeDtypeStructs with shardings): each host reads only the
  shards its devices hold, so an 11B start point never passes whole through one host."""
  if layouts.layout(path) == layouts.T5X:
    return layouts.restore_target_sharded(path, abstract_params)
  target = os.path.join(fs_utils.resolve(path), 'target')
  return ocp.StandardCheckpointer().restore(target, abstract_params)


def restore_adafactor_start(path: str, abstract_params: Any, abstract_opt_state: Any):
  """See checkpoint_layouts.restore_adafactor_start: T5X's fine-tuning start."""
  return layouts.restore_adafactor_start(path, abstract_params, abstract_opt_state)


class ModelMismatch(ValueError):
  """A readable checkpoint whose parameters are not this model's (another config)."""


def check_matches(path: str, abstract_params: Any) -> None:
  """Raises ModelMismatch naming the first parameter that the checkpoint at `path` lacks,
  holds in another shape, or holds beyond the model's."""
  stored = target_shapes(path)
  if not stored:  # emptied or torn metadata: damage, not another model
    raise ValueError(f'{path}: its metadata lists no parameters')
  wanted = {k: tuple(v.shape) for k, v in model_config.flatten(abstract_params).items()}
  problem = None
  for key, shape in wanted.items():
    if key not in stored:
      problem = f'it has no parameter {key!r} (shape {shape})'
    elif stored[key] != shape:
      problem = f'its parameter {key!r} has shape {stored[key]}, the model\'s is {shape}'
    if problem:
      break
  extra = sorted(set(stored) - set(wanted))
  if problem is None and extra:
    problem = f'it holds parameter {extra[0]!r}, which the model lacks'
  if problem:
    raise ModelMismatch(
        f'{path} does not match this run\'s model: {problem}. Resume with the model that '
        'wrote it (its MODEL_DIR/config.gin), or train the new model in another MODEL_DIR.')


def cast_floating(tree: Any, dtype: str) -> Any:
  """Floating leaves of `tree` in `dtype` (on their devices, shardings kept)."""
  target = jax.numpy.dtype(dtype)
  return jax.tree_util.tree_map(
      lambda x: x.astype(target) if jax.numpy.issubdtype(x.dtype, jax.numpy.floating)
      and x.dtype != target else x, tree)


class TrainCheckpointer:
  """Periodic (optionally asynchronous) saving and fall-back restoring for a training run.

  A checkpoint holds the step, the parameters and optimizer state (`state` item) and the
  input pipeline's position (batches consumed; `dataset` item), so a restarted run
  continues exactly.
  A failed save raises CheckpointSaveError from `check()` (call it every step), the next
  `save()`, or `wait()`: the run stops instead of training on without checkpoints.
  """

  def __init__(self, model_dir: str, keep: Optional[int] = None, use_async: bool = True):
    self.model_dir = model_dir
    self._manager = manager(model_dir, max_to_keep=keep, enable_async=use_async,
                            cleanup_tmp=True)
    self._pending = None  # the step of a save that may still be running

  def save(self, step: int, params: Any, opt_state: Any, input_position: int,
           dtype: Optional[str] = None) -> None:
    """`dtype` (T5X's SaveCheckpointConfig.dtype): floating parameters are written in it;
    None keeps them as they are."""
    self._finish()  # orbax waits for the previous save anyway: report its failure as its own
    if dtype is not None:
      params = cast_floating(params, dtype)
    tree = layouts.train_state_tree(step, params, opt_state)
    try:
      self._manager.save(step, args=_save_args(tree, input_position), force=True)
    except Exception as e:  # the synchronous part (or a synchronous save) failed
      raise self._save_error(step, e) from e
    self._pending = step

  def check(self) -> None:
    """Raises CheckpointSaveError if the last asynchronous save has failed. Cheap (a flag
    read) while a save runs, so the loop calls it every step."""
    if self._pending is not None and not self._manager.is_saving_in_progress():
      self._finish()

  def _finish(self) -> None:
    step, self._pending = self._pending, None
    if step is None:
      return
    try:
      self._manager.wait_until_finished()  # re-raises the background thread's error
    except Exception as e:
      raise self._save_error(step, e) from e

  def _save_error(self, step: int, error: BaseException) -> CheckpointSaveError:
    previous = [s for s in steps(self.model_dir) if s < step]
    kept = (f'the previous checkpoint {checkpoint_dir(self.model_dir, previous[-1])} is intact; '
            'free space in (or fix) MODEL_DIR and run the same command again to resume from it'
            if previous else 'no earlier checkpoint exists; free space in (or fix) MODEL_DIR '
            'and run the same command again')
    # The failed save leaves orbax's write coroutines unawaited; Python would report each
    # one at exit, after the error below, which says all there is to say.
    warnings.filterwarnings('ignore', message=r"coroutine '.*' was never awaited",
                            category=RuntimeWarning)
    exc = CheckpointSaveError(
        f'could not save checkpoint {checkpoint_dir(self.model_dir, step)}: '
        f'{describe_error(error)}. Training stopped; {kept}.')
    exc.errno = _errno_of(error)
    return exc

  def restore_latest(self, abstract_params: Any, abstract_opt_state: Any):
    """(step, params, opt_state, input_position) from the newest readable checkpoint.

    Unreadable newer checkpoints (truncated, a file missing) are reported with the reason
    and, once an older one has been read, moved aside to `checkpoint_<step>.corrupt-<UTC
    time>` (named in the warning), so that the re-run can save those steps again. None
    only when MODEL_DIR holds no checkpoint. Raises, moving nothing, if checkpoints exist
    but none can be read: a run never silently restarts from scratch. When none matches
    this model's parameters (another config), ModelMismatch names the first parameter.
    """
    found = steps(self.model_dir)
    damaged = []  # (path, reason), newest first
    mismatches = []  # ModelMismatch of each checkpoint whose metadata is not this model's
    for step in reversed(found):
      error = None
      path = checkpoint_dir(self.model_dir, step)
      try:
        check_matches(path, abstract_params)
        restored = _restore_train_state(path, abstract_params, abstract_opt_state)
      except layouts.OptimizerMismatch:  # readable, but not by this run's optimizer
        raise
      except Exception as e:  # orbax/tensorstore raise many types for damaged files
        error = e
        # Another model's checkpoint, or damaged metadata: told apart below, once every
        # checkpoint has been tried.
        if isinstance(e, ModelMismatch):
          mismatches.append(e)
      # Hosts read different shards: all of them fall back together or none does.
      if _any_host(error is not None):
        reason = describe_error(error) if error is not None else 'unreadable on another host'
        logging.warning('checkpoint %s could not be read: %s', path, reason)
        damaged.append((path, reason))
        continue
      for path, reason in damaged:
        aside = _move_aside(path)
        logging.warning('moved the unreadable checkpoint %s to %s (%s); resuming from step %d.',
                        path, aside, reason, step)
      if damaged:
        self._manager.reload()  # orbax lists the steps once, at construction
      return restored
    if not found:
      strangers = unreadable_step_folders(self.model_dir)
      if strangers:
        raise RuntimeError(
            f'{self.model_dir} holds {", ".join(strangers)} but no checkpoint this project '
            'reads: expected Orbax folders with a `target` item (this project) or a `state` '
            'item (T5X). A pre-Orbax T5X checkpoint can start a run as '
            'INITIAL_CHECKPOINT_PATH; otherwise move the folders out of MODEL_DIR.')
    if mismatches and len(mismatches) == len(damaged):
      raise mismatches[0]  # every checkpoint is readable, none is this model's
    if damaged:
      raise RuntimeError(
          f'no checkpoint in {self.model_dir} could be read: '
          + '; '.join(f'{path}: {reason}' for path, reason in damaged)
          + '. Restore them from a backup, or remove MODEL_DIR to start from scratch '
          'deliberately.')
    return None

  def wait(self) -> None:
    """Blocks until the last save is on disk; raises CheckpointSaveError if it failed."""
    self._finish()

  def close(self) -> None:
    try:
      self._finish()
    finally:
      self._manager.close()
      _join_save_threads()


def _restore_train_state(path: str, abstract_params: Any, abstract_opt_state: Any):
  """(step, params, opt_state, input_position) of one checkpoint, of either layout."""
  if layouts.layout(path) == layouts.PROJECT:
    scalar = np.zeros((), np.int64)
    folder = epath.Path(fs_utils.resolve(path))
    reader = ocp.StandardCheckpointer()
    params = reader.restore(folder / 'target', abstract_params)
    state = reader.restore(folder / 'state', {'step': scalar, 'opt_state': abstract_opt_state,
                                              'input_position': scalar})
    return (int(state['step']), params, state['opt_state'], int(state['input_position']))
  step, params, opt_state = layouts.restore_train_state(path, abstract_params,
                                                        abstract_opt_state)
  dataset = epath.Path(fs_utils.resolve(path)) / 'dataset'
  position = DatasetCheckpointHandler().restore(dataset) if dataset.is_dir() else None
  if position is None:
    logging.warning('%s holds no input position (T5X wrote it): parameters, optimizer state '
                    'and step %d restored; the data starts from the beginning of the '
                    'dataset, as in T5X without restore_dataset.', path, step)
  return step, params, opt_state, position or 0


def _join_save_threads(timeout_s: float = 10.0) -> None:
  """Waits (at most `timeout_s` in all) for orbax's per-save worker threads. After a failed
  save they log their own one-line errors once the manager has already given up; joined
  here, those lines come before the run's error instead of after it."""
  deadline = time.monotonic() + timeout_s
  for thread in threading.enumerate():
    if type(thread).__name__ == '_SignalingThread' and thread is not threading.current_thread():
      thread.join(max(0.0, deadline - time.monotonic()))


def describe_error(error: BaseException) -> str:
  """The root cause of an orbax/tensorstore error, on one line.

  orbax wraps tensorstore's read error in one whose text shows a bound-method repr (it
  formats `TensorStore.spec` without calling it); the useful words (which array, which
  file, why) are in the innermost cause.
  """
  chain = []
  while error is not None and error not in chain:
    chain.append(error)
    error = error.__cause__ or error.__context__
  for e in reversed(chain):
    # tensorstore appends its whole JSON spec and source locations: noise for a reader.
    text = re.sub(r'\s*\[(tensorstore_spec|source locations)\b.*$', '', ' '.join(str(e).split()))
    if len(text) > 500:  # keep the end too: tensorstore puts the OS's reason last
      text = f'{text[:240]} ... {text[-240:]}'
    if text and '<bound method' not in text:
      return text if isinstance(e, (OSError, ValueError)) else f'{type(e).__name__}: {text}'
  return type(chain[0]).__name__


def _errno_of(error: BaseException) -> Optional[int]:
  while error is not None:
    if isinstance(error, OSError) and error.errno:
      return error.errno
    if 'No space left on device' in str(error):  # tensorstore reports it as a ValueError
      return errno.ENOSPC
    error = error.__cause__ or error.__context__
  return None


def _any_host(flag: bool) -> bool:
  if jax.process_count() == 1:
    return flag
  return bool(np.max(multihost_utils.process_allgather(np.int32(flag))))


def _move_aside(path: str) -> str:
  """Renames a damaged checkpoint folder to `<path>.corrupt-<UTC time>` and returns that
  path. Process 0 renames; the other hosts wait until it has."""
  source = epath.Path(fs_utils.resolve(path))
  stamp = datetime.datetime.now(datetime.timezone.utc).strftime('%Y%m%dT%H%M%SZ')
  target = source.parent / f'{source.name}.corrupt-{stamp}'
  if jax.process_index() == 0:
    n = 1
    while target.exists():  # moved twice within a second
      target, n = source.parent / f'{source.name}.corrupt-{stamp}-{n}', n + 1
    try:
      source.rename(target)
    except OSError as e:
      raise RuntimeError(f'checkpoint {path} is unreadable and could not be moved aside '
                         f'({describe_error(e)}); move or remove it by hand, then restart.') from e
  if jax.process_count() > 1:
    multihost_utils.sync_global_devices(f'move aside {path}')
    if jax.process_index() != 0:
      return f'{source}.corrupt-* (moved by process 0)'
  return str(target)

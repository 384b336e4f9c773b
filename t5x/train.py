"""`t5x train`: the training loop, configured by gin as T5X's `train_script.train`.

Order of work: check MODEL_DIR and the batch against the mesh (before anything is
compiled), write config.gin and model-info.txt, restore (latest checkpoint in MODEL_DIR,
else INITIAL_CHECKPOINT_PATH, else from scratch), then step, log, evaluate and save.
"""
import inspect
import logging
import os
import re
import sys
from typing import Any, Callable, Iterator, Optional, Sequence

import jax
import numpy as np
from etils import epath
from jax.experimental import multihost_utils

from t5x import checkpoints
from t5x import data
from t5x import decoding
from t5x import eval as evaluation
from t5x import fs_utils
from t5x import gin_utils
from t5x import launch
from t5x import loader
from t5x import metrics_writer
from t5x import model_config
from t5x import models
from t5x import partitioning
from t5x import trainer as trainer_lib
from t5x import run_checks
from t5x import scan_layout
from t5x import utils
from t5x.lora import adapters as lora

GetDatasetFn = Callable[..., Iterator[dict]]
_NAN_POLICIES = ('stop', 'skip')


def _default_get_dataset(cfg, **kw):
  return data.get_dataset(cfg, **kw)


def train(*, model: models.EncoderDecoderModel, train_dataset_cfg: utils.DatasetConfig,
          partitioner: partitioning.PjitPartitioner, model_dir: str, total_steps: int,
          trainer_cls: Callable[..., trainer_lib.Trainer] = trainer_lib.Trainer,
          train_eval_dataset_cfg: Optional[utils.DatasetConfig] = None,
          checkpoint_cfg: utils.CheckpointConfig = utils.CheckpointConfig(),
          eval_period: Optional[int] = 1000, eval_steps: Optional[int] = None,
          stats_period: int = 10, random_seed: Optional[int] = 0, nan_policy: str = 'stop',
          get_dataset_fn: GetDatasetFn = _default_get_dataset,
          infer_eval_dataset_cfg: Optional[utils.DatasetConfig] = None,
          infer_eval_period: Optional[int] = None, decode_options: Any = None,
          show_progress: bool = True,
          relative_steps: Optional[int] = None, use_hardware_rng: bool = False,
          summarize_config_fn: Optional[Callable[..., Any]] = None,
          inference_evaluator_cls: Any = None) -> trainer_lib.TrainState:
  """Trains `model` to step `total_steps`; returns the final train state.

  Steps are absolute, as in T5X: a run that starts from INITIAL_CHECKPOINT_PATH's
  `checkpoint_1000000` starts at step 1,000,000, so TRAIN_STEPS = 1_000_802 trains 802
  steps. `relative_steps` (T5X's `train.relative_steps`), when set, replaces
  `total_steps` by the restored step plus that many steps (also when resuming MODEL_DIR).
  `random_seed=None` (T5X's RANDOM_SEED = None) draws a seed, the same on every host, and
  logs it; a restart then draws another, as in T5X.
  T5X's `use_hardware_rng` and `summarize_config_fn` are accepted; each one that cannot
  act here is named in a warning (see `_warn_inert_t5x_arguments`).
  `inference_evaluator_cls` (T5X's `@seqio.Evaluator`) runs the infer_eval tasks; its
  gin-bound loggers write into MODEL_DIR/inference_eval, as in T5X.

  `nan_policy='stop'` ends the run with an error at the first non-finite loss;
  'skip' leaves parameters unchanged on such steps and counts them (`skipped_steps`).
  `get_dataset_fn(cfg, num_epochs=..., skip_batches=...)` yields this host's numpy
  batches; the default reads the SeqIO task named in `cfg`.
  Every `infer_eval_period` steps the tasks of `infer_eval_dataset_cfg` are decoded with
  `decode_options` and scored with their SeqIO metrics (as `t5x eval` does).
  A resumed run keeps metrics.jsonl's records up to its checkpoint only, and first runs
  the evaluations of that step if a kill cut them off, so its records are an uninterrupted
  run's. A failed checkpoint save ends the run at the next step (CheckpointSaveError).
  """
  run_checks.check_train(total_steps, train_dataset_cfg, train_eval_dataset_cfg)
  if random_seed is None:
    random_seed = draw_seed()
  _warn_inert_t5x_arguments(use_hardware_rng, summarize_config_fn)
  if infer_eval_dataset_cfg is not None and infer_eval_period is None:
    infer_eval_period = eval_period  # T5X decodes its infer_eval tasks at each eval
  if relative_steps is not None:
    run_checks.check_steps(relative_steps, 'train.relative_steps')
  if nan_policy not in _NAN_POLICIES:
    raise ValueError(f'train.nan_policy={nan_policy!r}; use one of {_NAN_POLICIES}')
  model_dir = fs_utils.resolve(model_dir)  # local, or gs:// on a pod
  _check_writable(model_dir)
  trainer = trainer_cls(model=model, partitioner=partitioner,
                        skip_nonfinite_updates=nan_policy == 'skip')
  partitioner.check_batch_size(train_dataset_cfg.batch_size, trainer.num_microbatches)
  if train_eval_dataset_cfg is not None:
    partitioner.check_batch_size(train_eval_dataset_cfg.batch_size)
  if infer_eval_dataset_cfg is not None:  # before training, not at the first infer_eval
    decoding.check_mesh(model.module, partitioner, infer_eval_dataset_cfg.batch_size,
                        'train.infer_eval_dataset_cfg (its batch_size)')
  _write_config(model_dir)
  _write_model_info(model_dir, trainer)
  _write_vocabulary(model_dir, model)

  save_cfg = checkpoint_cfg.save
  ckpt = checkpoints.TrainCheckpointer(model_dir, keep=save_cfg.keep if save_cfg else None,
                                       use_async=bool(save_cfg and save_cfg.use_async))
  writer = None
  try:
    state, input_position, origin = _restore_or_init(trainer, ckpt, checkpoint_cfg,
                                                     random_seed)
    start = int(state.step)
    if relative_steps is not None:
      total_steps = start + relative_steps
    writer = metrics_writer.MetricsWriter(model_dir, start, total_steps,
                                          show_progress and start < total_steps)

    def due(step: int, period: Optional[int]) -> bool:
      return bool(period) and (step % period == 0 or step == total_steps)

    def evaluate_step(step: int, params: Any, only_missing: bool = False) -> None:
      if train_eval_dataset_cfg is not None and due(step, eval_period) and (
          not only_missing or _missing(writer, step, 'training_eval')):
        scalars = evaluate(trainer, params, train_eval_dataset_cfg, get_dataset_fn, eval_steps)
        writer.write(step, 'training_eval', scalars)
      if infer_eval_dataset_cfg is not None and due(step, infer_eval_period) and (
          not only_missing or _missing(writer, step, 'infer_eval')):
        _infer_eval(writer, model, params, infer_eval_dataset_cfg, decode_options, step,
                    inference_evaluator_cls, trainer.partitioner)

    if start > 0 and origin == 'model_dir':  # a kill between a save and its evaluation:
      evaluate_step(start, state.params, only_missing=True)  # evaluate that step first
    if start >= total_steps and origin == 'initial':
      raise ValueError(
          f'INITIAL_CHECKPOINT_PATH is at step {start} and TRAIN_STEPS={total_steps}: steps '
          f'are absolute, as in T5X, so nothing would train. For N more steps set '
          f'TRAIN_STEPS = {start} + N, or train_script.train.relative_steps = N.')
    if start >= total_steps:
      ckpt.close()
      plot = writer.close()  # a kill after the final save left no plot
      writer.log(f'{model_dir} is already at step {start} >= TRAIN_STEPS={total_steps}; '
                 f'nothing to train ({plot or "no plot"}). Raise TRAIN_STEPS or choose another '
                 'MODEL_DIR.')
      return state

    batches = get_dataset_fn(train_dataset_cfg, num_epochs=None, skip_batches=input_position)
    mesh = ' x '.join(f'{k}={v}' for k, v in partitioner.mesh.shape.items())
    writer.log(f'training {model_dir} from step {start} to {total_steps} on mesh {mesh}')
    dropout_rng = jax.random.fold_in(jax.random.PRNGKey(random_seed), 1)
    # skipped_steps counts over the whole run, so a resumed run continues the count.
    window, pending = [], None
    skipped = int(writer.last_value(start, 'train', 'skipped_steps'))
    for step in range(start, total_steps):
      batch = _global_batch(partitioner, next(batches))
      state, metrics = trainer.train_step(state, batch, dropout_rng)
      input_position += 1
      ckpt.check()  # a failed background save stops the run now, not at the next save
      # Check the previous step's loss after this one is queued, so the device never idles.
      if pending is not None:
        skipped += _check_finite(pending, nan_policy)
      pending = (step + 1, metrics)
      window.append(metrics)
      done = step + 1
      saving = bool(save_cfg) and (due(done, save_cfg.period)
                                   or done in (save_cfg.checkpoint_steps or ()))
      # A window also ends at each save, where a resumed run starts its first window: the
      # records of resumed and uninterrupted runs are then the same.
      if done % stats_period == 0 or done == total_steps or saving:
        skipped += _check_finite(pending, nan_policy)
        pending = None
        sums = jax.device_get(window)
        _log_train(writer, done, sums, skipped)
        window = []
      if saving:
        ckpt.save(done, state.params, state.opt_state, input_position, dtype=save_cfg.dtype)
      evaluate_step(done, state.params)
    ckpt.close()
  except BaseException:
    _close_after_error(ckpt, writer)
    raise
  plot = writer.close()
  saved = f'checkpoint_{total_steps}/, ' if save_cfg and save_cfg.period else ''
  writer.log(f'done: {model_dir} ({saved}metrics.jsonl, {plot})')
  return state


def _missing(writer: metrics_writer.MetricsWriter, step: int, split: str) -> bool:
  """Whether MODEL_DIR's metrics.jsonl lacks `split` at `step`; process 0 decides for all,
  as evaluating takes every host."""
  missing = writer.enabled and not writer.has(step, split)
  if jax.process_count() > 1:
    missing = bool(multihost_utils.broadcast_one_to_all(np.int32(missing)))
  return missing


def _close_after_error(ckpt: checkpoints.TrainCheckpointer, writer) -> None:
  """Lets a save in flight finish and closes the files, without hiding the first error."""
  closers = [ckpt.close] + ([lambda: writer.close(plot=False)] if writer is not None else [])
  for close in closers:
    try:
      close()
    except Exception as e:  # noqa: BLE001 -- the error being raised matters more
      logging.error('while stopping after an error: %s', checkpoints.describe_error(e))


def evaluate(trainer: trainer_lib.Trainer, params: Any, cfg: utils.DatasetConfig,
             get_dataset_fn: GetDatasetFn, max_batches: Optional[int] = None) -> dict:
  """Teacher-forced loss per token and token accuracy over one pass of `cfg`'s split.

  Hosts may hold different numbers of batches (their shards differ in size); every host
  runs as many steps as the largest, feeding all-padding batches (zero loss weight) once
  its own run out, so that the collective steps stay in lockstep.
  """
  local = []
  for i, batch in enumerate(get_dataset_fn(cfg, num_epochs=1)):
    if max_batches is not None and i >= max_batches:
      break
    local.append(batch)
  steps = _max_over_hosts(len(local))
  if steps == 0:
    raise ValueError(f'the {cfg.split!r} split of {cfg.mixture_or_task_name!r} gave no batches')
  if not local:
    raise ValueError(f'process {jax.process_index()} got no {cfg.split!r} batches of '
                     f'{cfg.mixture_or_task_name!r} while others did; the split has fewer '
                     'examples than hosts. Lower the number of hosts or use a larger split.')
  padding = {k: np.zeros_like(v) for k, v in local[0].items()}
  total = None
  for i in range(steps):
    batch = local[i] if i < len(local) else padding
    sums = jax.device_get(trainer.eval_step(params, _global_batch(trainer.partitioner, batch)))
    total = sums if total is None else {k: total[k] + sums[k] for k in total}
  return models.summarize(total)


def _max_over_hosts(value: int) -> int:
  if jax.process_count() == 1:
    return value
  return int(np.max(multihost_utils.process_allgather(np.int32(value))))


def _infer_eval(writer, model, params, cfg: utils.DatasetConfig, decode_options, step: int,
                evaluator_cls=None, partitioner=None):
  """Decoding-based metrics of every task of `cfg` at `step`, into MODEL_DIR, decoded on
  the training mesh from the live (sharded) parameters: no copy to one device."""
  metrics = evaluation.evaluate_params(
      model.module, params, cfg.mixture_or_task_name, cfg.task_feature_lengths,
      writer.model_dir, step, split=cfg.split, batch_size=cfg.batch_size,
      decode_options=decode_options or decoding.DecodeOptions(), records=False,
      evaluator_cls=evaluator_cls, use_cached=cfg.use_cached,
      log_dir=os.path.join(writer.model_dir, 'inference_eval'), partitioner=partitioner)
  for task, values in metrics.items():
    writer.write(step, 'infer_eval', {f'{task}/{k}': v for k, v in values.items()
                                          if isinstance(v, float)})


def _log_train(writer, step: int, window: list, skipped: int) -> None:
  sums = {k: float(np.sum([m[k] for m in window])) for k in window[0]}
  scalars = models.summarize(sums)
  scalars.update(loss=sums['loss'] / len(window), learning_rate=float(window[-1]['learning_rate']),
                 grad_norm=float(window[-1]['grad_norm']), skipped_steps=skipped,
                 num_examples=sums['num_examples'])
  writer.advance(len(window), sums['weight_sum'], sums['num_examples'])
  writer.write(step, 'train', scalars)


def _check_finite(pending, nan_policy: str) -> int:
  step, metrics = pending
  if float(metrics['nonfinite']) == 0.0:
    return 0
  if nan_policy == 'skip':
    logging.warning('step %d: non-finite loss or gradients; update skipped.', step)
    return 1
  raise FloatingPointError(
      f'step {step}: the loss is {float(metrics["loss"])} (non-finite loss or gradients). '
      'Lower the learning rate, check the data, or set train_script.train.nan_policy = "skip" '
      'to skip such steps. The last checkpoint in MODEL_DIR is intact.')


def _global_batch(partitioner, local: dict) -> dict:
  """This host's numpy rows -> global arrays sharded over 'data'."""
  return {k: jax.make_array_from_process_local_data(partitioner.batch_sharding(v.ndim), v)
          for k, v in local.items()}


def _warn_inert_t5x_arguments(use_hardware_rng, summarize_config_fn) -> None:
  """One warning naming the T5X arguments given that have no effect here."""
  inert = []
  if use_hardware_rng:
    inert.append('use_hardware_rng (JAX\'s default PRNG is used: runs are repeatable)')
  # gin hands over its configurable wrapper of the function; compare what it wraps.
  if summarize_config_fn is not None and (
      inspect.unwrap(summarize_config_fn) is not gin_utils.summarize_gin_config):
    inert.append('summarize_config_fn (the operative config is written to MODEL_DIR/config.gin)')
  if inert:
    logging.warning('T5X train arguments with no effect here: %s', '; '.join(inert))


def draw_seed() -> int:
  """A random int32 seed, process 0's on every host, logged so a run can be repeated."""
  seed = np.int32(int.from_bytes(os.urandom(4), 'little') & 0x7FFFFFFF)
  if jax.process_count() > 1:
    seed = multihost_utils.broadcast_one_to_all(seed)
  logging.warning('RANDOM_SEED is None: drew seed %d (set RANDOM_SEED = %d to repeat this '
                  'run\'s initialisation and dropout)', int(seed), int(seed))
  return int(seed)


def _restore_or_init(trainer, ckpt, checkpoint_cfg, seed):
  """(state, input position, 'model_dir' | 'initial' | 'scratch'), in T5X's order:
  MODEL_DIR's latest checkpoint, then INITIAL_CHECKPOINT_PATH, then scratch."""
  abstract = trainer.abstract_state
  restored = ckpt.restore_latest(abstract.params, abstract.opt_state)
  if restored is not None:
    step, params, opt_state, position = restored
    state = trainer_lib.TrainState(step=_step_array(trainer, step), params=params,
                                   opt_state=opt_state)
    logging.info('restored step %d from %s', step, ckpt.model_dir)
    return state, position, 'model_dir'
  restore = checkpoint_cfg.restore
  path = restore.path if restore else None
  if path and restore.dtype and (jax.numpy.dtype(restore.dtype)
                                 != jax.numpy.dtype(trainer.model.config.param_dtype)):
    logging.warning('utils.RestoreCheckpointConfig.dtype = %r has no effect on training: '
                    'parameters are cast to the model\'s param_dtype %r (set '
                    'network.T5Config.param_dtype to train in another dtype).',
                    restore.dtype, trainer.model.config.param_dtype)
  params = None
  if path:
    folder = _matching_checkpoint(path, trainer)
    started = _restore_initial_adafactor(folder, trainer) if folder else None
    if started is not None:
      return started, 0, 'initial'
    try:
      if folder:
        params = _restore_initial_sharded(folder, trainer)
      else:  # another format or layout: read on the host, convert, shard
        params = load_initial_params(path, trainer)
    except FileNotFoundError:  # the loader found no model at `path`
      if not restore.fallback_to_scratch:
        raise
      logging.warning('INITIAL_CHECKPOINT_PATH %s holds no model; starting from scratch '
                      '(utils.RestoreCheckpointConfig.fallback_to_scratch = True)', path)
  if params is not None:
    state = trainer.state_from_params(params)
    step = initial_step(path)
    if step:  # T5X: the initial checkpoint's step carries over (steps are absolute)
      logging.info('INITIAL_CHECKPOINT_PATH is at step %d: training continues from it', step)
      state = state.replace(step=_step_array(trainer, step))
    return state, 0, 'initial'
  return trainer.init_state(jax.random.PRNGKey(seed)), 0, 'scratch'


def _step_array(trainer: trainer_lib.Trainer, step: int) -> jax.Array:
  return jax.device_put(np.int32(step), trainer.state_shardings.step)


def initial_step(path: str) -> int:
  """The step of a start point, from its `checkpoint_<step>` folder name as T5X names
  them (a MODEL_DIR: its latest checkpoint's; a legacy T5X `.../checkpoint_<step>/checkpoint`
  file: its folder's); 0 for a Hugging Face folder or anything else unnamed."""
  if not checkpoints.is_checkpoint(path):
    path = checkpoints.latest(path) or path
  name = os.path.basename(os.path.normpath(path))
  if name == 'checkpoint':  # a legacy T5X checkpoint file
    name = os.path.basename(os.path.dirname(os.path.normpath(path)))
  match = re.fullmatch(r'checkpoint_(\d+)', name)
  return int(match.group(1)) if match else 0


def _matching_checkpoint(path: str, trainer: trainer_lib.Trainer) -> Optional[str]:
  """The checkpoint folder of INITIAL_CHECKPOINT_PATH (itself, or a MODEL_DIR's latest)
  when its parameters are exactly the model's (read from its metadata); else None."""
  folder = checkpoints.checkpoint_folder(path)
  if not folder:
    return None
  abstract = trainer.abstract_state.params
  want = {k: tuple(v.shape) for k, v in model_config.flatten(abstract).items()}
  return folder if checkpoints.target_shapes(folder) == want else None


def _restore_initial_adafactor(folder: str, trainer: trainer_lib.Trainer):
  """The train state of a T5X-layout start point (a `_matching_checkpoint`) holding T5X's
  Adafactor state, when this run trains with T5X's Adafactor: as in T5X, the fine-tune
  continues the optimizer state and step. None otherwise."""
  abstract = trainer.abstract_state
  started = checkpoints.restore_adafactor_start(folder, abstract.params, abstract.opt_state)
  if started is None:
    return None
  step, params, opt_state = started
  logging.info('INITIAL_CHECKPOINT_PATH %s: parameters, Adafactor state and step %d '
               'restored, as T5X does', folder, step)
  return trainer_lib.TrainState(step=_step_array(trainer, step), params=params,
                                opt_state=opt_state)


def _restore_initial_sharded(folder: str, trainer: trainer_lib.Trainer) -> Any:
  """The parameters of a `_matching_checkpoint`, read shard by shard into the train
  state's shardings (no host holds them whole)."""
  logging.info('reading %s shard by shard into the mesh', folder)
  return checkpoints.restore_target_sharded(folder, trainer.abstract_state.params)


def load_initial_params(path: str, trainer: trainer_lib.Trainer) -> Any:
  """Parameters from INITIAL_CHECKPOINT_PATH, checked against the model's shapes."""
  cfg = trainer.model.config
  folder = checkpoints.checkpoint_folder(path)
  if folder:
    params = checkpoints.restore_target(folder)
  else:
    params = loader.load(path).params  # HF or T5X: plain layout, LoRA merged
  # Either layout in, the model's layout out: a plain HF/T5X start fine-tuned with
  # scan_layers=True gets stacked, a scanned MODEL_DIR started plain gets unstacked.
  # (A scanned source is read with this model's param_scan_axis.)
  params = scan_layout.params_for_config(params, cfg)
  # LoRA: the plain starting point gets fresh adapters (B = 0, so the same function).
  params = lora.add_fresh_adapters(params, trainer.model, path)
  loader.check_shapes(params, cfg, path)
  return loader.cast_params(params, np.dtype(cfg.param_dtype))


def _check_writable(model_dir: str) -> None:
  try:
    folder = epath.Path(model_dir)
    folder.mkdir(parents=True, exist_ok=True)
    # One probe per process: hosts sharing MODEL_DIR must not remove each other's.
    probe = folder / f'.write_test_{jax.process_index()}'
    fs_utils.write_atomic(str(probe), 'ok')  # as every later file is written
    probe.unlink()
  except Exception as e:  # OSError locally; the bucket clients raise their own types
    reason = getattr(e, 'strerror', None) or f'{type(e).__name__}: {e}'
    raise PermissionError(f'MODEL_DIR {model_dir} is not writable ({reason}); '
                          'set --gin.MODEL_DIR=\\"/a/writable/path\\".') from None


def _write_config(model_dir: str) -> None:
  if jax.process_index() != 0:
    return
  gin_utils.summarize_gin_config(model_dir)


def _write_vocabulary(model_dir: str, model: models.EncoderDecoderModel) -> None:
  """Copies the SentencePiece model into MODEL_DIR/spiece.model, so that loading,
  decoding and Hugging Face export need nothing else."""
  source = getattr(model.output_vocabulary, 'sentencepiece_model_file', None)
  target = os.path.join(model_dir, 'spiece.model')
  if jax.process_index() != 0 or not source or epath.Path(target).exists():
    return
  if '://' in source:
    import tensorflow as tf  # bucket paths only
    try:
      blob = tf.io.gfile.GFile(source, 'rb').read()
    except tf.errors.OpError as e:
      logging.warning('could not copy the vocabulary %s into MODEL_DIR: %s', source, e)
      return
  else:
    with open(source, 'rb') as f:
      blob = f.read()
  fs_utils.write_atomic(target, blob)


def _write_model_info(model_dir: str, trainer: trainer_lib.Trainer) -> None:
  """MODEL_DIR/model-info.txt: each parameter's shape, logical axes and mesh axes."""
  if jax.process_index() != 0:
    return
  cfg = trainer.model.config
  shapes, axes = model_config.param_shapes(cfg), model_config.param_axes(cfg)
  lines = [f'# {model_config.count_params(cfg):,} parameters; mesh {dict(trainer.partitioner.mesh.shape)}',
           '# name  shape  logical_axes  mesh_axes']
  for name in sorted(shapes):
    mesh_axes = tuple(trainer.partitioner.mesh_axes(axes[name]))
    lines.append(f'{name}  {shapes[name]}  {axes[name]}  {mesh_axes}')
  fs_utils.write_atomic(os.path.join(model_dir, 'model-info.txt'), '\n'.join(lines) + '\n')


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`python -m t5x.train --gin_file=FILE ...`: the flags, messages and exit codes of
  `t5x train` (see t5x.launch)."""
  return launch.main('train', argv)


if __name__ == '__main__':
  sys.exit(main())

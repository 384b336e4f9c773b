"""`t5x eval`: decode the test tasks of a task or mixture and apply their SeqIO metrics.

seqio.Evaluator does the bookkeeping (cached targets, postprocessing, each task's
metric_fns); this module supplies the decode and score functions and writes the
metrics as JSON (`metrics.jsonl` beside one JSON file per checkpoint step) and
TensorBoard events (`inference_eval/`) under OUTPUT_DIR.
"""
import json
import os
import sys
from typing import Any, Callable, Optional, Sequence

import jax
import numpy as np

from t5x import checkpoints
from t5x import data
from t5x import decoding
from t5x import fs_utils
from t5x import gin_utils
from t5x import launch
from t5x import metrics_writer
from t5x import models
from t5x import run_checks
from t5x import script_args
from t5x import utils
from t5x.examples.t5.network import Transformer


def evaluate(*, output_dir: str, model: Any = None,
             dataset_cfg: Optional[utils.DatasetConfig] = None,
             restore_checkpoint_cfg: Optional[utils.RestoreCheckpointConfig] = None,
             partitioner: Any = None, inference_evaluator_cls: Any = None,
             decode_options: decoding.DecodeOptions = decoding.DecodeOptions(),
             all_checkpoints: bool = False,
             summarize_config_fn: Optional[Callable[..., Any]] = gin_utils.summarize_gin_config,
             training_evaluator_cls: Any = None, train_state_initializer_cls: Any = None,
             train_eval_get_dataset_fn: Any = None, fallback_init_rng: Optional[int] = None,
             use_orbax: bool = True) -> dict[int, dict]:
  """{step: {task: {metric: value}}} for one checkpoint, or for every checkpoint of a
  MODEL_DIR with `restore_checkpoint_cfg.mode='all'` (or `all_checkpoints`), oldest first.

  T5X's `evaluate` arguments: `model` (a gin file's `%MODEL`: its network is used, and
  the checkpoint must fit it; None: the network the checkpoint describes), `dataset_cfg`
  (task or mixture, split, batch size; `task_feature_lengths=None`, T5X's eval default,
  lets SeqIO use the longest example of each feature), `restore_checkpoint_cfg` (path,
  mode, `dtype='bfloat16'` halves parameter memory), `partitioner` (T5X's
  `PjitPartitioner`: the decode runs on its mesh), `inference_evaluator_cls` (T5X's
  `@seqio.Evaluator` with its gin-bound loggers, which write into OUTPUT_DIR as in T5X).
  The T5X arguments after `summarize_config_fn` are accepted; those given with a value
  that has no effect here are named in one warning.
  """
  if dataset_cfg is None or not dataset_cfg.mixture_or_task_name:
    raise ValueError('t5x eval: no task to evaluate; set MIXTURE_OR_TASK_NAME '
                     '(utils.DatasetConfig.mixture_or_task_name).')
  if dataset_cfg.task_feature_lengths is not None:
    run_checks.check_feature_lengths(dataset_cfg.task_feature_lengths)
  inert = script_args.common_inert(dataset_cfg, use_orbax)
  for name, value in (('training_evaluator_cls', training_evaluator_cls),
                      ('train_state_initializer_cls', train_state_initializer_cls),
                      ('train_eval_get_dataset_fn', train_eval_get_dataset_fn),
                      ('fallback_init_rng', fallback_init_rng)):
    if value is not None:
      inert.append(f'{name} (t5x eval decodes and applies the tasks\' metrics only)')
  script_args.warn_inert('eval', inert)
  path = script_args.restore_path(restore_checkpoint_cfg, 't5x eval')
  if summarize_config_fn is not None and jax.process_index() == 0:
    summarize_config_fn(model_dir=output_dir, summary_writer=None, step=0)
  partitioner = script_args.mesh_for(partitioner)
  if all_checkpoints or restore_checkpoint_cfg.mode == 'all':
    paths = [checkpoints.checkpoint_dir(path, s) for s in checkpoints.steps(path)]
    if not paths:
      raise FileNotFoundError(f'{path}: no checkpoint_<step> folders to evaluate')
  else:
    paths = [path]
  if dataset_cfg.module:
    data.get_task(dataset_cfg)  # imports the module that registers the task
  results = {}
  for checkpoint in paths:
    loaded = script_args.load_model(checkpoint, restore_checkpoint_cfg.dtype, model,
                                    partitioner)
    script_args.bind_task_vocabulary(loaded)
    step = checkpoints.step_of(loaded.source) or 0
    results[step] = evaluate_params(
        Transformer(loaded.config), loaded.params, dataset_cfg.mixture_or_task_name,
        dataset_cfg.task_feature_lengths, output_dir, step, split=dataset_cfg.split,
        batch_size=dataset_cfg.batch_size, decode_options=decode_options,
        evaluator_cls=inference_evaluator_cls, use_cached=dataset_cfg.use_cached,
        partitioner=partitioner)
  return results


def evaluate_params(module: Transformer, params: Any, mixture_or_task_name: str,
                    task_feature_lengths: Optional[dict], output_dir: str, step: int, *,
                    split: str = 'test', batch_size: int = 32,
                    decode_options: decoding.DecodeOptions = decoding.DecodeOptions(),
                    records: bool = True, evaluator_cls: Any = None,
                    log_dir: Optional[str] = None, use_cached: bool = False,
                    partitioner: Any = None) -> dict:
  """Metrics of `params` on every task of `mixture_or_task_name` with `split`; also
  written to OUTPUT_DIR as `metrics-step<step>.json`, and, when `records`, appended to
  OUTPUT_DIR/metrics.jsonl and TensorBoard. Used by `t5x eval` and by training's
  `infer_eval_period`, which passes records=False: in a MODEL_DIR, metrics.jsonl and the
  events are the training run's, written by its own MetricsWriter.

  `evaluator_cls` (default seqio.Evaluator) is built as T5X builds it; its loggers, when
  gin gives it some, write into `log_dir` (default OUTPUT_DIR). `partitioner` decodes on
  its mesh, with the parameters placed there once (see decoding.generate).
  """
  seqio = data._seqio()
  data.get_task(data.DatasetConfig(mixture_or_task_name, {}, split, 1, False, None))
  decoding.check_mesh(module, partitioner or decoding.one_device(), batch_size,
                      'eval (utils.DatasetConfig.batch_size)')
  log_dir = log_dir or output_dir
  # Every process decodes (each takes part in every decode's collectives) and computes
  # the metrics; only process 0 writes them.
  writer = jax.process_index() == 0
  if evaluator_cls is not None and writer:  # its loggers (gin's logger_cls) write into log_dir
    os.makedirs(log_dir, exist_ok=True)
  evaluator = (evaluator_cls or seqio.Evaluator)(
      mixture_or_task_name=mixture_or_task_name,
      feature_converter=seqio.EncDecFeatureConverter(pack=False), eval_split=split,
      use_cached=use_cached, log_dir=log_dir,
      sequence_length=dict(task_feature_lengths) if task_feature_lengths else None,
      **({} if writer else {'logger_cls': ()}))
  if partitioner is not None:
    params = decoding.place_params(module, params, partitioner)

  def predict_with_aux_fn(dataset, model_feature_shapes=None):
    del model_feature_shapes
    out = []
    for indices, batch in _batches(dataset, batch_size):
      tokens, scores = decoding.generate(module, params, batch['encoder_input_tokens'],
                                         decode_options, partitioner=partitioner)
      tokens, scores = tokens[:, 0].tolist(), scores[:, 0].tolist()
      out.extend((i, (t, {'scores': s})) for i, t, s in zip(indices, tokens, scores))
    return out

  def predict_fn(dataset, model_feature_shapes=None):
    return [(i, tokens) for i, (tokens, _) in predict_with_aux_fn(dataset, model_feature_shapes)]

  def score_fn(dataset, model_feature_shapes=None):
    del model_feature_shapes
    out = []
    for indices, batch in _batches(dataset, batch_size):
      out.extend(zip(indices, models.score(module, params, batch, partitioner).tolist()))
    return out

  all_metrics, _ = evaluator.evaluate(compute_metrics=True, step=step, predict_fn=predict_fn,
                                      score_fn=score_fn, predict_with_aux_fn=predict_with_aux_fn)
  metrics = {task: {k: _number(v) for k, v in values.items()}
             for task, values in all_metrics.result().items()}
  evaluator.close()  # its loggers flush their files
  if not writer:
    return metrics
  _write_json(output_dir, step, metrics, records)
  if records:
    _write_tensorboard(output_dir, step, metrics)
  return metrics


def _batches(dataset, batch_size: int):
  """(indices, numpy batch padded to `batch_size` rows) from seqio's enumerated dataset."""
  rows = list(dataset.as_numpy_iterator())
  for start in range(0, len(rows), batch_size):
    chunk = rows[start:start + batch_size]
    indices = [int(i) for i, _ in chunk]
    batch = {k: np.stack([ex[k] for _, ex in chunk]).astype(np.int32) for k in chunk[0][1]}
    # Full batches keep one compiled shape; the padding rows have no index, so their
    # outputs are dropped (and decoding keeps rows independent of each other).
    pad = batch_size - len(chunk)
    if pad:
      batch = {k: np.concatenate([v, np.zeros((pad,) + v.shape[1:], v.dtype)])
               for k, v in batch.items()}
    yield indices, batch


def _number(value):
  value = getattr(value, 'value', value)  # seqio.metrics.Scalar
  return float(value) if isinstance(value, (int, float, np.number)) else str(value)


def _write_json(output_dir: str, step: int, metrics: dict, append: bool) -> None:
  os.makedirs(output_dir, exist_ok=True)
  record = {'step': step, 'metrics': metrics}
  fs_utils.write_atomic(os.path.join(output_dir, f'metrics-step{step}.json'),
                        json.dumps(record, indent=2))
  if append:
    fs_utils.append_text(os.path.join(output_dir, 'metrics.jsonl'), json.dumps(record) + '\n')


def _write_tensorboard(output_dir: str, step: int, metrics: dict) -> None:
  """Scalars `task/metric` under OUTPUT_DIR/inference_eval, written synchronously (a full
  disk raises here instead of stalling a writer thread)."""
  events = metrics_writer.EventFile(os.path.join(output_dir, 'inference_eval'),
                                    suffix=f'.step{step}')
  try:
    events.write(step, {f'{task}/{name}': value for task, values in metrics.items()
                        for name, value in values.items() if isinstance(value, float)})
  finally:
    events.close()


def main(argv: Optional[Sequence[str]] = None) -> int:
  """`python -m t5x.eval --gin_file=FILE ...`: the flags, messages and exit codes of
  `t5x eval` (see t5x.launch)."""
  return launch.main('eval', argv)


if __name__ == '__main__':
  sys.exit(main())

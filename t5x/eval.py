"""`t5x eval`: decode the test tasks of a task or mixture and apply their SeqIO metrics.

seqio.Evaluator does the bookkeeping (cached targets, postprocessing, each task's
metric_fns); this module supplies the decode and score functions and writes the
metrics as JSON (`metrics.jsonl` beside one JSON file per checkpoint step) and
TensorBoard events (`inference_eval/`) under OUTPUT_DIR.
"""
import json
import os
import sys
from typing import Any, Optional, Sequence

import jax
import numpy as np

from t5x import checkpoints
from t5x import data
from t5x import decoding
from t5x import fs_utils
from t5x import launch
from t5x import loader
from t5x import metrics_writer
from t5x import models
from t5x import run_checks
from t5x.examples.t5.network import Transformer


def evaluate(*, checkpoint_path: str, mixture_or_task_name: str,
             task_feature_lengths: Optional[dict],
             output_dir: str, split: str = 'test', batch_size: int = 32,
             decode_options: decoding.DecodeOptions = decoding.DecodeOptions(),
             all_checkpoints: bool = False, param_dtype: Optional[str] = None
             ) -> dict[int, dict]:
  """{step: {task: {metric: value}}} for one checkpoint, or for every checkpoint of a
  MODEL_DIR when `all_checkpoints` (oldest first). `param_dtype='bfloat16'` halves
  parameter memory. `task_feature_lengths=None` (T5X's eval default) lets SeqIO use the
  longest example of each feature."""
  if task_feature_lengths is not None:
    run_checks.check_feature_lengths(task_feature_lengths)
  if jax.process_count() > 1:
    raise ValueError('t5x eval runs in one process (it decodes on this host\'s devices); '
                     'start it without the multi-host flags, on one worker.')
  if all_checkpoints:
    paths = [checkpoints.checkpoint_dir(checkpoint_path, s)
             for s in checkpoints.steps(checkpoint_path)]
    if not paths:
      raise FileNotFoundError(f'{checkpoint_path}: no checkpoint_<step> folders to evaluate')
  else:
    paths = [checkpoint_path]
  results = {}
  for path in paths:
    model = loader.load(path, param_dtype)
    data.bind_task_vocabulary(model.vocabulary_path, model.config.vocab_size,
                              os.path.join(os.path.dirname(os.path.abspath(model.source)),
                                           'config.gin'))
    step = checkpoints.step_of(model.source) or 0
    results[step] = evaluate_params(
        Transformer(model.config), model.params, mixture_or_task_name, task_feature_lengths,
        output_dir, step, split=split, batch_size=batch_size, decode_options=decode_options)
  return results


def evaluate_params(module: Transformer, params: Any, mixture_or_task_name: str,
                    task_feature_lengths: dict, output_dir: str, step: int, *,
                    split: str = 'test', batch_size: int = 32,
                    decode_options: decoding.DecodeOptions = decoding.DecodeOptions(),
                    records: bool = True) -> dict:
  """Metrics of `params` on every task of `mixture_or_task_name` with `split`; also
  written to OUTPUT_DIR as `metrics-step<step>.json`, and, when `records`, appended to
  OUTPUT_DIR/metrics.jsonl and TensorBoard. Used by `t5x eval` and by training's
  `infer_eval_period`, which passes records=False: in a MODEL_DIR, metrics.jsonl and the
  events are the training run's, written by its own MetricsWriter."""
  seqio = data._seqio()
  data.get_task(data.DatasetConfig(mixture_or_task_name, {}, split, 1, False, None))
  evaluator = seqio.Evaluator(
      mixture_or_task_name, seqio.EncDecFeatureConverter(pack=False), eval_split=split,
      sequence_length=dict(task_feature_lengths) if task_feature_lengths else None)
  scorer = jax.jit(models.EncoderDecoderModel(module).score_batch)

  def predict_fn(dataset, model_feature_shapes=None):
    del model_feature_shapes
    out = []
    for indices, batch in _batches(dataset, batch_size):
      tokens, _ = decoding.generate(module, params, batch['encoder_input_tokens'], decode_options)
      out.extend(zip(indices, np.asarray(tokens)[:, 0].tolist()))
    return out

  def score_fn(dataset, model_feature_shapes=None):
    del model_feature_shapes
    out = []
    for indices, batch in _batches(dataset, batch_size):
      out.extend(zip(indices, np.asarray(scorer(params, batch)).tolist()))
    return out

  all_metrics, _ = evaluator.evaluate(compute_metrics=True, step=step, predict_fn=predict_fn,
                                      score_fn=score_fn)
  metrics = {task: {k: _number(v) for k, v in values.items()}
             for task, values in all_metrics.result().items()}
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

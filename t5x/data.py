"""SeqIO tasks -> numpy batches for the train and eval steps.

The only module of t5x that imports seqio (and so TensorFlow), and only when a SeqIO
task is used; the only one that imports the task package t5x_tasks. Each host reads its
own shard (by process index) and batches `batch_size / process_count` examples; the
pipeline is deterministic given the seed, so skipping the batches a run already consumed
resumes it exactly. Prompt files for `t5x infer` are read here too.
"""
import difflib
import importlib
import importlib.util
import os
import pkgutil
from typing import Iterator, Optional

import gin
import jax
import numpy as np

from t5x import gin_utils
from t5x.utils import DatasetConfig
from t5x_tasks import jsonl

TASK_PACKAGE = 't5x_tasks'


def _seqio():
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')  # TF's start-up chatter, CUDA probes
  import tensorflow as tf
  # TF must not take GPU memory that JAX will want.
  tf.config.set_visible_devices([], 'GPU')
  import seqio
  return seqio


def get_task(cfg: DatasetConfig):
  """The registered task or mixture; unknown names list the closest registered ones."""
  seqio = _seqio()
  if cfg.module:
    importlib.import_module(cfg.module)
  name = cfg.mixture_or_task_name
  names = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
  if name not in names:
    _register_project_tasks()
    names = list(seqio.TaskRegistry.names()) + list(seqio.MixtureRegistry.names())
  if name not in names:
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f'closest registered: {", ".join(close)}' if close else (
        f'{len(names)} registered; is the module that registers it imported (DatasetConfig.module '
        'or an `import` line in the gin file)?')
    raise ValueError(f'unknown SeqIO task or mixture {name!r} (MIXTURE_OR_TASK_NAME); {hint}')
  return seqio.get_mixture_or_task(name)


def task_modules(package: str = TASK_PACKAGE) -> list[str]:
  """The modules of `package` that register a SeqIO task or mixture, found by reading
  their sources (nothing is imported but the package itself): no list of tasks here, and
  a new task module needs no entry anywhere."""
  found = []
  for info in pkgutil.iter_modules(importlib.import_module(package).__path__, f'{package}.'):
    with open(importlib.util.find_spec(info.name).origin, encoding='utf-8') as f:
      source = f.read()
    if 'TaskRegistry.add(' in source or 'MixtureRegistry.add(' in source:
      found.append(info.name)
  return found


def _register_project_tasks() -> None:
  """Imports the task modules of TASK_PACKAGE, so their names work without an import
  line in the gin file; the others (metrics, readers) stay unloaded."""
  for module in task_modules():
    importlib.import_module(module)


def local_batch_size(global_batch_size: int) -> int:
  count = jax.process_count()
  if global_batch_size % count:
    raise ValueError(f'BATCH_SIZE={global_batch_size} is not divisible by the {count} hosts.')
  return global_batch_size // count


def get_dataset(cfg: DatasetConfig, *, num_epochs: Optional[int] = None,
                skip_batches: int = 0) -> Iterator[dict]:
  """This host's batches of `cfg` as dicts of int32 numpy arrays [local_batch, length].

  `num_epochs=None` repeats forever (training); evaluation passes 1 and gets a last batch
  padded with all-zero rows (zero loss weight) to the full batch size.
  """
  seqio = _seqio()
  get_task(cfg)  # the clear error for unknown names
  ds = seqio.get_dataset(
      cfg.mixture_or_task_name, task_feature_lengths=dict(cfg.task_feature_lengths),
      feature_converter=seqio.EncDecFeatureConverter(
          pack=cfg.pack, use_custom_packing_ops=cfg.use_custom_packing_ops),
      dataset_split=cfg.split, use_cached=cfg.use_cached, shuffle=cfg.shuffle,
      num_epochs=num_epochs, seed=cfg.seed, verbose=False,
      shard_info=seqio.ShardInfo(index=jax.process_index(), num_shards=jax.process_count()))
  size = local_batch_size(cfg.batch_size)
  ds = ds.batch(size, drop_remainder=num_epochs is None)
  if skip_batches:
    ds = ds.skip(skip_batches)
  for batch in ds.prefetch(2).as_numpy_iterator():
    yield {k: _pad_rows(np.asarray(v, np.int32), size) for k, v in batch.items()}


def _pad_rows(x: np.ndarray, rows: int) -> np.ndarray:
  if x.shape[0] == rows:
    return x
  return np.concatenate([x, np.zeros((rows - x.shape[0],) + x.shape[1:], x.dtype)])


def tasks_with_split(mixture_or_task_name: str, split: str) -> list[str]:
  """The task itself, or the sub-tasks of a mixture that have `split`."""
  seqio = _seqio()
  task = get_task(DatasetConfig(mixture_or_task_name, {}, split, 1, False, None))
  tasks = task.tasks if isinstance(task, seqio.Mixture) else [task]
  names = [t.name for t in tasks if split in t.splits]
  if not names:
    raise ValueError(f'{mixture_or_task_name!r} has no task with a {split!r} split')
  return names


def eval_examples(task_name: str, task_feature_lengths, split: str, shard: tuple = (0, 1),
                  use_cached: bool = False, vocabulary_feature: str = 'targets'):
  """([{'inputs', 'input_tokens', 'targets', 'target_tokens', ids...}], output vocabulary) of
  one task's split, in order, tokenized and truncated as the task does for
  TASK_FEATURE_LENGTHS. `shard` = (index, count) keeps SeqIO's shard `index` of `count`
  (T5X's infer.shard_id / num_shards); `vocabulary_feature` names the output feature
  whose vocabulary is returned (T5X's output_vocab_feature_name)."""
  seqio = _seqio()
  task = seqio.get_mixture_or_task(task_name)
  ds = task.get_dataset(dict(task_feature_lengths), split=split, shuffle=False, num_epochs=1,
                        shard_info=seqio.ShardInfo(index=shard[0], num_shards=shard[1]),
                        use_cached=use_cached)
  text = lambda v: v.decode('utf-8') if isinstance(v, bytes) else v
  examples = []
  for ex in ds.as_numpy_iterator():
    row = {'inputs': text(ex.get('inputs_pretokenized', b'')),
           'input_tokens': ex['inputs'].tolist(),
           'targets': text(ex['targets_pretokenized']) if 'targets_pretokenized' in ex else None,
           'target_tokens': ex['targets'].tolist() if 'targets' in ex else None}
    for key in ('id', 'instance_id'):
      if key in ex:
        row[key] = text(ex[key])
    examples.append(row)
  if vocabulary_feature not in task.output_features:
    raise ValueError(f'task {task_name!r} has no output feature {vocabulary_feature!r} '
                     f'(output_vocab_feature_name); it has {sorted(task.output_features)}')
  return examples, task.output_features[vocabulary_feature].vocabulary


def prompt_examples(path: str) -> list[dict]:
  """The prompts of a file for `t5x infer`: [{'inputs': text, ...}].

  JSON Lines (`.jsonl`, `.json`): each object's "inputs" (or "prompt", "instruction"),
  with its other fields (ids, a topic, "targets") kept for the output. Anything else:
  plain text, one prompt per non-blank line. Errors name the file and line.
  """
  if jsonl.is_jsonl_name(path) or path.endswith('.json'):
    rows = []
    for number, record in jsonl.records(path):
      text = next((record[k] for k in ('inputs', 'prompt', 'instruction') if k in record), None)
      if not isinstance(text, str):
        raise ValueError(f'{path}:{number}: needs a string field "inputs" (or "prompt", '
                         '"instruction").')
      # Other fields (ids, a topic, ...) ride along to the output for the scorers.
      rows.append({**{k: v for k, v in record.items() if k not in ('prompt', 'instruction')},
                   'inputs': text, 'targets': record.get('targets')})
    return rows
  return [{'inputs': line.rstrip('\r\n')} for _, line in jsonl.lines(path) if line.strip()]


def bind_task_vocabulary(vocabulary_path: Optional[str], model_vocab_size: int,
                         run_config: Optional[str] = None) -> None:
  """Makes this project's tasks tokenize with a checkpoint's own SentencePiece model,
  unless gin already chose their vocabulary (`vocabularies.task_vocabulary`).

  The extra (sentinel) ids come from the run's config.gin when it names them, else 100
  (T5's) when the model's vocabulary has room for them, else none.
  """
  from t5x_tasks import vocabularies  # seqio, TensorFlow
  if not vocabulary_path:
    return
  for arg in ('name', 'sentencepiece_model_file'):
    try:
      gin.query_parameter(f'vocabularies.task_vocabulary.{arg}')
      return  # chosen explicitly
    except ValueError:
      pass
  import sentencepiece as spm
  pieces = spm.SentencePieceProcessor(model_file=vocabulary_path).get_piece_size()
  extra = 100 if pieces + 100 <= model_vocab_size else 0
  if run_config and os.path.isfile(run_config):
    chosen = gin_utils.gin_bindings(run_config, 'task_vocabulary')
    if 'extra_ids' in chosen:
      extra = int(chosen['extra_ids'])
    elif chosen.get('name') in vocabularies.NAMED:
      extra = vocabularies.NAMED[chosen['name']][1]
  with gin.unlock_config():
    gin.bind_parameter('vocabularies.task_vocabulary.sentencepiece_model_file', vocabulary_path)
    gin.bind_parameter('vocabularies.task_vocabulary.extra_ids', extra)

"""SeqIO tasks -> numpy batches for the train and eval steps.

The only module of t5x_engine that imports seqio (and so TensorFlow), and only when a
SeqIO task is used. Each host reads its own shard (by process index) and batches
`batch_size / process_count` examples; the pipeline is deterministic given the seed,
so skipping the batches a run already consumed resumes it exactly.
"""
import difflib
import importlib
import os
from typing import Iterator, Optional

import jax
import numpy as np

from t5x_engine.utils import DatasetConfig


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
    close = difflib.get_close_matches(name, names, n=5, cutoff=0.4)
    hint = f'closest registered: {", ".join(close)}' if close else (
        f'{len(names)} registered; is the module that registers it imported (DatasetConfig.module '
        'or an `import` line in the gin file)?')
    raise ValueError(f'unknown SeqIO task or mixture {name!r} (MIXTURE_OR_TASK_NAME); {hint}')
  return seqio.get_mixture_or_task(name)


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
      feature_converter=seqio.EncDecFeatureConverter(pack=cfg.pack),
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

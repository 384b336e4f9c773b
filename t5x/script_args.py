"""Arguments of T5X's `infer` and `evaluate` that both commands read the same way.

T5X's `runs/infer.gin` and `runs/eval.gin` hand these functions a model built from a
model gin file (`%MODEL`), a `utils.DatasetConfig`, a `utils.RestoreCheckpointConfig` and
a `partitioning.PjitPartitioner`. This module turns those into what decoding needs (the
parameters, read and checked against the gin file's network) and names, in one warning
per command, the T5X arguments given that have no effect here.
"""
import dataclasses
import os
from typing import Any, Optional, Sequence

from absl import logging
import jax

from t5x import data
from t5x import loader
from t5x import partitioning
from t5x import utils


def warn_inert(command: str, inert: Sequence[str]) -> None:
  """One warning naming the T5X arguments of `command` that have no effect here."""
  if inert:
    logging.warning('T5X %s arguments with no effect here: %s', command, '; '.join(inert))


def common_inert(cfg: Optional[utils.DatasetConfig], use_orbax: bool) -> list[str]:
  """Settings of both commands that decoding cannot honour: it reads a split once, in
  order, unpacked (as T5X's infer and eval do), and reads checkpoints by their layout."""
  inert = []
  if cfg is not None and cfg.shuffle:
    inert.append('DatasetConfig.shuffle=True (examples are decoded in their order)')
  if cfg is not None and cfg.pack:
    inert.append('DatasetConfig.pack=True (examples are decoded unpacked)')
  if not use_orbax:
    inert.append('use_orbax=False (checkpoints are read by their layout)')
  return inert


def mesh_for(partitioner: Any) -> Any:
  """The mesh a command decodes on: T5X's partitioner when gin gives one; else, in a job
  of several processes, every device of the job as the data axis (each host decodes its
  rows of every batch); else None (this process's first device)."""
  if partitioner is None and jax.process_count() > 1:
    partitioner = partitioning.PjitPartitioner(1)
  return partitioner


def restore_path(cfg: Optional[utils.RestoreCheckpointConfig], command: str) -> str:
  """The checkpoint `cfg` names; errors say how to name one."""
  if cfg is None or not cfg.path:
    raise ValueError(f'{command}: no checkpoint to read; set CHECKPOINT_PATH '
                     '(utils.RestoreCheckpointConfig.path).')
  return cfg.path


def load_model(path: str, dtype: Optional[str], model: Any = None,
               partitioner: Any = None) -> loader.Loaded:
  """The parameters at `path` (cast to `dtype` when given), for the network of `model`
  (an EncoderDecoderModel a gin file built, as T5X's `%MODEL`) when given, else for the
  network the checkpoint describes. With a `partitioner`, restored shard by shard onto its
  mesh in its stored layout (see loader.load_on_mesh), else read on the host, unscanned.

  A gin network that the checkpoint does not fit is a ValueError naming the first missing
  or mis-shaped parameter. The gin network's non-shape fields (dtype, activations,
  dropout, ...) are the ones used, in the layout the parameters came in.
  """
  loaded = loader.load(path, dtype, partitioner)
  if model is None:
    return loaded
  cfg = dataclasses.replace(model.module.config, scan_layers=loaded.config.scan_layers,
                            param_scan_axis=loaded.config.param_scan_axis,
                            remat_policy='none', param_dtype=loaded.config.param_dtype)
  loader.check_shapes(loaded.params, cfg,
                      f'{loaded.source} (the checkpoint) against the gin file\'s network')
  vocab = loaded.vocabulary_path or getattr(model.input_vocabulary, 'sentencepiece_model_file',
                                            None)
  return dataclasses.replace(loaded, config=cfg, vocabulary_path=vocab)


def bind_task_vocabulary(loaded: loader.Loaded) -> None:
  """This project's tasks tokenize with `loaded`'s own vocabulary, with the extra ids its
  training run's config.gin (beside the checkpoint) names; see data.bind_task_vocabulary."""
  run_config = os.path.join(os.path.dirname(os.path.abspath(loaded.source)), 'config.gin')
  data.bind_task_vocabulary(loaded.vocabulary_path, loaded.config.vocab_size, run_config)


def check_vocabulary(model: Any, task_vocabulary: Any, task: str) -> None:
  """T5X's rule: the model's output vocabulary (from its gin file) is the task's."""
  ours = getattr(model, 'output_vocabulary', None)
  if ours is not None and ours != task_vocabulary:
    raise ValueError(
        f'the model\'s vocabulary and task {task!r}\'s differ (model: {ours}; task: '
        f'{task_vocabulary}). Bind VOCABULARY to the task\'s vocabulary in the gin file, or '
        'set infer.verify_matching_vocabs_fn = None to decode anyway.')

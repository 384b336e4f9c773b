"""T5X's `utils` surface for gin: dataset and checkpoint configs, the LR scheduler.

Gin files written for T5X bind `utils.DatasetConfig`, `utils.CheckpointConfig`,
`utils.SaveCheckpointConfig`, `utils.RestoreCheckpointConfig` and
`utils.create_learning_rate_scheduler`; they find them here under the same names.
"""
import dataclasses
from typing import Mapping, Optional, Sequence

from t5x.optimizers import create_learning_rate_scheduler

__all__ = ['CheckpointConfig', 'DatasetConfig', 'RestoreCheckpointConfig', 'SaveCheckpointConfig',
           'create_learning_rate_scheduler']


@dataclasses.dataclass(frozen=True)
class DatasetConfig:
  """Which SeqIO task or mixture to read, and how to batch it.

  `batch_size` is global (all hosts); `task_feature_lengths` maps feature to length,
  e.g. {'inputs': 512, 'targets': 128}. `seed` fixes shuffling, so a run is repeatable.
  """
  mixture_or_task_name: str
  task_feature_lengths: Mapping[str, int]
  split: str
  batch_size: int
  shuffle: bool
  seed: Optional[int]
  use_cached: bool = False
  pack: bool = False
  module: Optional[str] = None  # imported first, to register the task
  use_custom_packing_ops: bool = False  # SeqIO's TF-op packing (same rows, faster on TPU hosts)


@dataclasses.dataclass(frozen=True)
class SaveCheckpointConfig:
  """Save every `period` steps, at each step of `checkpoint_steps`, and at the end,
  keeping the newest `keep` (None: all).

  `dtype` (T5X's): the parameters are written in it ('bfloat16' halves a checkpoint;
  None or 'float32' keeps float32 parameters as they are); the optimizer state is
  written as it is. `save_dataset` (T5X's) is accepted either way: this project always
  saves its input position (one integer), so a resumed run reads the batches an
  uninterrupted run would.
  """
  period: Optional[int] = 1000
  keep: Optional[int] = None
  use_async: bool = True
  dtype: Optional[str] = None
  save_dataset: bool = False
  checkpoint_steps: Sequence[int] = ()


@dataclasses.dataclass(frozen=True)
class RestoreCheckpointConfig:
  """Where a run without checkpoints of its own starts (training), or which model to read
  (infer, eval): our checkpoint folder or MODEL_DIR, a T5X checkpoint (Orbax or legacy),
  or a Hugging Face folder. None: from scratch.

  T5X's fields: `mode` 'specific' (`path` names the checkpoint or its MODEL_DIR, whose
  latest is read) or 'latest' (the newest checkpoint under `path`), both read as one path
  here, and 'all' (`t5x eval`: every checkpoint of the MODEL_DIR); `dtype` casts the
  parameters as they are read ('bfloat16' for inference); `fallback_to_scratch` starts
  from random weights when `path` holds no checkpoint; `restore_dataset` is accepted:
  this project's checkpoints always restore the input position, T5X's cannot be.
  """
  path: Optional[str] = None
  mode: str = 'specific'
  dtype: Optional[str] = None
  restore_dataset: bool = False
  fallback_to_scratch: bool = False

  def __post_init__(self):
    if self.mode not in RESTORE_MODES:
      raise ValueError(f'utils.RestoreCheckpointConfig.mode={self.mode!r}; use one of '
                       f'{RESTORE_MODES}')


RESTORE_MODES = ('specific', 'latest', 'all')


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  save: Optional[SaveCheckpointConfig] = dataclasses.field(default_factory=SaveCheckpointConfig)
  restore: Optional[RestoreCheckpointConfig] = None

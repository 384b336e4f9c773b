"""T5X's `utils` surface for gin: dataset and checkpoint configs, the LR scheduler.

Gin files written for T5X bind `utils.DatasetConfig`, `utils.CheckpointConfig`,
`utils.SaveCheckpointConfig`, `utils.RestoreCheckpointConfig` and
`utils.create_learning_rate_scheduler`; they find them here under the same names.
"""
import dataclasses
from typing import Mapping, Optional

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


@dataclasses.dataclass(frozen=True)
class SaveCheckpointConfig:
  """Save every `period` steps (and at the end), keeping the newest `keep` (None: all)."""
  period: Optional[int] = 1000
  keep: Optional[int] = None
  use_async: bool = True


@dataclasses.dataclass(frozen=True)
class RestoreCheckpointConfig:
  """Where a run without checkpoints of its own starts: our checkpoint folder or
  MODEL_DIR, a legacy T5X checkpoint, or a Hugging Face folder. None: from scratch."""
  path: Optional[str] = None


@dataclasses.dataclass(frozen=True)
class CheckpointConfig:
  save: Optional[SaveCheckpointConfig] = dataclasses.field(default_factory=SaveCheckpointConfig)
  restore: Optional[RestoreCheckpointConfig] = None

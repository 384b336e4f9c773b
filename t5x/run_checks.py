"""Checks of run settings that must fail before anything is written or compiled.

A TRAIN_STEPS of 0 would otherwise end a run as "nothing to do" after creating MODEL_DIR,
a float one fails deep in the loop, and a bad TASK_FEATURE_LENGTHS only inside SeqIO.
"""
from collections.abc import Mapping
from typing import Any

import gin


def _is_int(value: Any) -> bool:
  return isinstance(value, int) and not isinstance(value, bool)


def _check_set(value: Any, name: str, example: str) -> None:
  """A macro bound to %gin.REQUIRED and never set reaches us as gin's sentinel object."""
  if value is gin.REQUIRED:
    raise ValueError(f'{name} is not set; the gin files mark it required: pass {example}.')


def check_steps(value: Any, name: str = 'TRAIN_STEPS') -> None:
  """Raises ValueError unless `value` is a positive int (no float, no bool)."""
  _check_set(value, name, f'--gin.{name}=800')
  if not _is_int(value) or value <= 0:
    kind = '' if _is_int(value) else f' (a {type(value).__name__})'
    raise ValueError(f'{name} is {value!r}{kind}; it must be a positive whole number of '
                     f'steps, e.g. --gin.{name}=800.')


def check_feature_lengths(value: Any, name: str = 'TASK_FEATURE_LENGTHS') -> None:
  """Raises ValueError unless `value` maps feature names (str) to positive ints."""
  example = (f"--gin.{name}=\"{{'inputs': 512, 'targets': 128}}\"")
  _check_set(value, name, example)
  if not isinstance(value, Mapping):
    raise ValueError(f'{name} is {value!r} (a {type(value).__name__}); it must be a dict of '
                     f'feature name to positive length, e.g. {example}.')
  for feature, length in value.items():
    if not isinstance(feature, str):
      raise ValueError(f'{name} has the key {feature!r}; feature names are strings, e.g. '
                       f'{example}.')
    if not _is_int(length) or length <= 0:
      raise ValueError(f'{name}[{feature!r}] is {length!r}; a feature length must be a '
                       f'positive whole number, e.g. {example}.')


def check_train(total_steps: Any, *dataset_cfgs: Any) -> None:
  """The checks `t5x train` makes before MODEL_DIR is touched: TRAIN_STEPS and the
  TASK_FEATURE_LENGTHS of each dataset config given (None entries skipped)."""
  check_steps(total_steps)
  for cfg in dataset_cfgs:
    if cfg is not None:
      check_feature_lengths(cfg.task_feature_lengths)

"""The few file operations the readers need, for local and bucket (gs://...) paths alike.

Local paths use the standard library; only a path with a scheme loads TensorFlow (for
tf.io.gfile), so that `t5x score` and `t5x prep` on local files start without it.
"""
import builtins
import glob as _glob
import os
from typing import IO


def _tf_gfile():
  import tensorflow as tf  # bucket paths only: importing TF takes seconds
  return tf.io.gfile


def _remote(path: str) -> bool:
  return '://' in str(path)


def exists(path: str) -> bool:
  """Whether `path` (a file or folder) exists."""
  return _tf_gfile().exists(path) if _remote(path) else os.path.exists(path)


def glob(pattern: str) -> list[str]:
  """The paths matching `pattern` (`*`, `?`, `[...]`), unsorted."""
  return list(_tf_gfile().glob(pattern)) if _remote(pattern) else _glob.glob(pattern)


def open(path: str, mode: str = 'rb') -> IO:  # pylint: disable=redefined-builtin
  """`path` opened for reading ('r' or 'rb'); a missing local file raises
  FileNotFoundError naming it."""
  return _tf_gfile().GFile(path, mode) if _remote(path) else builtins.open(path, mode)  # read-only

"""Reading JSON Lines files whose errors name the file and the line."""
import json
from typing import Iterator


def _open(path: str):
  if '://' in path:  # bucket paths go through TensorFlow's file system layer
    import tensorflow as tf
    return tf.io.gfile.GFile(path, 'r')
  return open(path, encoding='utf-8')


def records(path: str) -> Iterator[tuple[int, dict]]:
  """Yields (line number, JSON object) for each non-blank line of `path`.

  Raises FileNotFoundError for a missing file and ValueError naming `path:line` for a
  line that is not JSON or not a JSON object.
  """
  with _open(path) as f:
    for number, line in enumerate(f, 1):
      if not line.strip():
        continue
      try:
        record = json.loads(line)
      except json.JSONDecodeError as e:
        raise ValueError(f'{path}:{number}: not valid JSON ({e.msg}).') from None
      if not isinstance(record, dict):
        raise ValueError(f'{path}:{number}: expected a JSON object, got '
                         f'{type(record).__name__}.')
      yield number, record

"""Reading JSON Lines files whose errors name the file and the line; writing files
atomically."""
import contextlib
import json
import os
import uuid
from typing import IO, Iterator


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


@contextlib.contextmanager
def atomic_file(path) -> Iterator[IO[str]]:
  """Yields a text file that replaces `path` (os.replace) only once the block completes.

  The text goes to a temporary file in the same folder, flushed to disk first, so a
  failure or crash part-way leaves any earlier file untouched and, on failure, no
  temporary file behind.
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  os.makedirs(folder, exist_ok=True)
  temp = os.path.join(folder, f'.{os.path.basename(path)}.{uuid.uuid4().hex}.tmp')
  try:
    # os.open with 0o666 so the final file gets the usual umask permissions.
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    with open(fd, 'w', encoding='utf-8', newline='\n') as f:
      yield f
      f.flush()
      os.fsync(f.fileno())
    os.replace(temp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.remove(temp)
    raise

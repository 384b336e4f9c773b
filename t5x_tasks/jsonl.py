"""Reading JSON Lines, JSON and text files whose errors name the file and the line;
writing files atomically.

Every reader here accepts a UTF-8 byte-order mark at the start of a file (Windows editors
write one) and refuses other bytes that are not UTF-8 with the file and line.
"""
import contextlib
import errno
import json
import os
import uuid
from typing import IO, Any, Iterator

_BOM = b'\xef\xbb\xbf'


def _open(path: str):
  if '://' in path:  # bucket paths go through TensorFlow's file system layer
    import tensorflow as tf
    return tf.io.gfile.GFile(path, 'rb')
  return open(path, 'rb')


def _decode(raw: bytes, path: str, number: int) -> str:
  """One line's bytes as text; the error names the file, the line and the byte."""
  try:
    return raw.decode('utf-8')
  except UnicodeDecodeError as e:
    raise ValueError(f'{path}:{number}: not valid UTF-8 (byte {e.start + 1} of the line: '
                     f'{e.reason}); re-save the file as UTF-8.') from None


def lines(path: str) -> Iterator[tuple[int, str]]:
  """Yields (line number, text) of a UTF-8 file, a leading BOM dropped.

  Raises FileNotFoundError for a missing file and ValueError naming `path:line` for bytes
  that are not UTF-8.
  """
  with _open(path) as f:
    for number, raw in enumerate(f, 1):
      if number == 1 and raw.startswith(_BOM):
        raw = raw[len(_BOM):]
      yield number, _decode(raw, path, number)


def read_text(path: str) -> str:
  """The whole text of a UTF-8 file, a leading BOM dropped; errors as `lines`."""
  return ''.join(text for _, text in lines(path))


def load_json(path: str) -> Any:
  """One JSON document (a BOM allowed); ValueError naming `path:line` if it is not JSON."""
  try:
    return json.loads(read_text(path))
  except json.JSONDecodeError as e:
    raise ValueError(f'{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno}).') from None


def records(path: str) -> Iterator[tuple[int, dict]]:
  """Yields (line number, JSON object) for each non-blank line of `path`.

  Raises FileNotFoundError for a missing file and ValueError naming `path:line` for a
  line that is not UTF-8, not JSON or not a JSON object.
  """
  for number, line in lines(path):
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
  temporary file behind. An OSError of the write itself names `path`.
  """
  path = os.fspath(path)
  folder = os.path.dirname(os.path.abspath(path))
  parent = folder
  while not os.path.isdir(parent) and not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):  # makedirs would say "File exists", which misleads
    raise NotADirectoryError(errno.ENOTDIR, 'a file is in the way of the output folder '
                             f'{folder}', parent)
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
  except BaseException as e:
    with contextlib.suppress(OSError):  # never hide the first error behind a cleanup one
      os.remove(temp)
    if isinstance(e, OSError) and e.filename in (None, temp):
      # A failed write (full disk, read-only folder) names the file meant, not the temp.
      raise OSError(e.errno, e.strerror or str(e), path) from e
    raise

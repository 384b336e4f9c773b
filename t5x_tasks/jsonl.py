"""Reading JSON Lines, JSON and text files whose errors name the file and the line, and
formatting records as JSON Lines (the engine's t5x.fs_utils writes the files).

Every reader here accepts a UTF-8 byte-order mark at the start of a file (Windows editors
write one) and refuses other bytes that are not UTF-8 with the file and line.
"""
import json
import re
from typing import Any, Iterable, Iterator

_BOM = b'\xef\xbb\xbf'
# `name.jsonl`, or a shard as T5X's infer names it: `name.jsonl-00000-of-00001`.
_JSONL_NAME = re.compile(r'\.jsonl(-\d{5}-of-\d{5})?$')


def is_jsonl_name(path: str) -> bool:
  """Whether `path` is named as a JSON Lines file (T5X's sharded names included)."""
  return bool(_JSONL_NAME.search(path))


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


def dump_lines(items: Iterable[dict]) -> Iterator[str]:
  """Yields one JSON Lines line per record, newline-terminated, non-ASCII text kept as is;
  lazily, so a writer can stream them (`writelines` on `t5x.fs_utils.atomic_file(path)`)."""
  for item in items:
    yield json.dumps(item, ensure_ascii=False) + '\n'

"""The one writer of files: every file the project writes goes through here.

A file is written under a temporary name in its own folder, flushed and fsynced, then
renamed over the target (os.replace, atomic on POSIX) and the folder fsynced, so a reader,
or a run after a crash or power cut, sees the old file or the new one, never a torn one.
On any failure the temporary is removed and the error names the file meant, not the
temporary. Bucket paths (`gs://...`) are uploaded in one piece: an object appears only once
its upload completes, so that upload is atomic by itself.

Folders that must appear whole (exports, converted MODEL_DIRs) are built in `staging_dir`.
Append-only logs (metrics.jsonl, infer's `.partial` files) are appended through
`open_append`: their readers drop a torn last line, which is all a crash can leave.

Light on purpose: no JAX or TensorFlow here (`t5x prep` and `t5x score` import this);
etils.epath is imported only for bucket paths.
"""
import contextlib
import errno
import io
import os
import shutil
import uuid
from typing import IO, Iterable, Iterator, List, Mapping, Sequence, Union

Content = Union[str, bytes, Iterable[str]]


def is_remote(path: str) -> bool:
  """True for bucket paths (`gs://...`), which go through tensorstore / tf.io.gfile."""
  return '://' in str(path)


def resolve(path: str) -> str:
  """An absolute local path, or a bucket path unchanged."""
  path = str(path)
  return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


@contextlib.contextmanager
def atomic_file(path, mode: str = 'w') -> Iterator[IO]:
  """Yields a file whose content replaces `path` only once the block completes.

  Args:
    path: str or os.PathLike, local or `gs://`. Missing local parent folders are made.
    mode: 'w' (text, UTF-8, line ends kept as written) or 'wb' (bytes).
  Raises:
    IsADirectoryError: `path` is a folder.
    NotADirectoryError: a file is in the way of the output folder (naming that file).
    OSError: the write failed (full disk, read-only folder); it names `path`, and any
      earlier file at `path` is untouched and no temporary is left.
  """
  if mode not in ('w', 'wb'):
    raise ValueError(f'atomic_file mode {mode!r}: use "w" (text) or "wb" (bytes)')
  path = os.fspath(path)
  if is_remote(path):
    with _remote_file(path, mode) as f:
      yield f
    return
  with _atomic_paths([path]) as (temp,):
    with _create(temp, mode) as f:
      yield f


@contextlib.contextmanager
def atomic_path(path) -> Iterator[str]:
  """Yields a temporary file name next to local `path`, for a library that writes by name
  (safetensors' save_file); once the block completes the file is fsynced and renamed to
  `path`. Errors and cleanup as `atomic_file`.
  """
  path = os.fspath(path)
  if is_remote(path):
    raise ValueError(f'{path}: atomic_path writes local files; use atomic_file for buckets')
  with _atomic_paths([path]) as (temp,):
    yield temp


def write_atomic(path, data: Union[str, bytes]) -> None:
  """Writes text (UTF-8) or bytes to `path` (local or `gs://`) atomically; see atomic_file."""
  binary = isinstance(data, (bytes, bytearray, memoryview))
  with atomic_file(path, 'wb' if binary else 'w') as f:
    f.write(data)


def write_files(contents: Mapping[str, Content]) -> None:
  """Writes several local files as one unit: every temporary is written and fsynced first,
  then all are renamed, so a failure while writing leaves every earlier file untouched.

  Args:
    contents: {path: content}, the content bytes, a str, or an iterable of str (streamed,
      e.g. JSON Lines one line at a time). Bucket paths are uploaded one after another,
      each atomically.
  """
  items = [(os.fspath(path), content) for path, content in contents.items()]
  if any(is_remote(path) for path, _ in items):
    for path, content in items:
      with atomic_file(path, 'wb' if _is_bytes(content) else 'w') as f:
        _put(f, content)
    return
  with _atomic_paths([path for path, _ in items]) as temps:
    for (path, content), temp in zip(items, temps):
      try:
        with _create(temp, 'wb' if _is_bytes(content) else 'w') as f:
          _put(f, content)
      except OSError as e:
        raise _named(e, {temp: path, None: path}) from e


def copy_file(source: str, target: str) -> None:
  """Copies a small local or bucket file (a vocabulary, a config) to `target` atomically."""
  if is_remote(source):
    from etils import epath
    blob = epath.Path(source).read_bytes()
  else:
    with open(source, 'rb') as f:
      blob = f.read()
  write_atomic(target, blob)


def open_append(path: str) -> IO[str]:
  """`path` (local) opened to append UTF-8 text, for append-only logs.

  An append is not atomic: a crash can leave a torn last line, which the readers of these
  logs drop (metrics.jsonl, infer's `.partial`). Flush after each record.
  """
  _make_parent(path)
  if os.path.isdir(path):
    raise IsADirectoryError(errno.EISDIR, 'is a folder; give a file name to write', path)
  return open(path, 'a', encoding='utf-8', newline='\n')


def append_text(path: str, text: str) -> None:
  """Appends `text` to the log at `path` (local) and syncs it to disk."""
  with open_append(path) as f:
    f.write(text)
    f.flush()
    os.fsync(f.fileno())


def cut_torn_line(path: str) -> int:
  """Cuts a torn last line (the process died mid-append) off the local append-only log at
  `path`, so appending continues cleanly; returns how many complete lines it holds (0 when
  there is no file)."""
  if not os.path.exists(path):
    return 0
  with open(path, 'rb') as f:
    blob = f.read()
  keep = blob.rfind(b'\n') + 1
  if keep < len(blob):
    os.truncate(path, keep)
  return blob[:keep].count(b'\n')


def finish(partial: str, path: str) -> None:
  """Renames a finished local file (an appended `.partial`) to its final name durably:
  fsync the file, rename, fsync the folder."""
  with open(partial, 'rb') as f:
    os.fsync(f.fileno())
  os.replace(partial, path)
  _fsync_folder(os.path.dirname(os.path.abspath(path)))


def write_figure(path: str, fig) -> None:
  """A matplotlib figure as a PNG at `path` (local or bucket), written atomically, then
  closed."""
  import matplotlib.pyplot as plt
  png = io.BytesIO()
  fig.savefig(png, format='png', dpi=100)
  plt.close(fig)
  write_atomic(path, png.getvalue())


@contextlib.contextmanager
def staging_dir(final: str) -> Iterator[str]:
  """Yields a temporary sibling of `final`; renames it to `final` only on success.

  `final` may not exist yet or be an empty folder; a non-empty one is an error, so
  nothing a user made is overwritten. Before the rename every file in the folder is
  fsynced (third-party writers, orbax and safetensors, do not), so the folder that appears
  is whole on disk. On any exception the temporary folder is removed.
  """
  final = os.path.abspath(final)
  if os.path.isdir(final) and os.listdir(final):
    raise FileExistsError(f'{final} exists and is not empty; choose a new output folder.')
  if os.path.exists(final) and not os.path.isdir(final):
    raise FileExistsError(f'{final} exists and is a file; choose a new output folder.')
  parent = os.path.dirname(final)
  os.makedirs(parent, exist_ok=True)
  tmp = os.path.join(parent, f'.{os.path.basename(final)}.tmp-{uuid.uuid4().hex[:8]}')
  os.makedirs(tmp)
  try:
    yield tmp
    _fsync_tree(tmp)
    if os.path.isdir(final):
      os.rmdir(final)
    os.rename(tmp, final)
    _fsync_folder(parent)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)


@contextlib.contextmanager
def _remote_file(path: str, mode: str) -> Iterator[IO]:
  """A bucket object written from memory in one upload once the block completes: nothing
  is uploaded when it fails. Bucket uploads are atomic (an object appears whole or not at
  all), and a rename there is a copy and a delete, so no temporary object is used."""
  from etils import epath  # bucket paths only: the gs:// backend loads TensorFlow
  buffer = io.BytesIO() if mode == 'wb' else io.StringIO(newline='\n')
  yield buffer
  target = epath.Path(path)
  if mode == 'wb':
    target.write_bytes(buffer.getvalue())
  else:
    target.write_text(buffer.getvalue(), encoding='utf-8')


@contextlib.contextmanager
def _atomic_paths(paths: Sequence[str]) -> Iterator[List[str]]:
  """Yields temporary names beside local `paths`. Once the block completes each temporary
  is fsynced, then each is renamed over its path and the folders are fsynced; on any
  failure every temporary is removed and an OSError names the path meant."""
  temps = {}  # temporary -> path
  for path in paths:
    folder = _make_parent(path)
    if os.path.isdir(path):
      raise IsADirectoryError(errno.EISDIR, 'is a folder; give a file name to write', path)
    temps[os.path.join(folder, f'.{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp')] = path
  current = paths[0]  # the file an error that names none is about
  try:
    yield list(temps)
    for temp, current in temps.items():
      with open(temp, 'rb') as f:
        os.fsync(f.fileno())  # the data is on disk before a name points at it
    for temp, current in temps.items():
      os.replace(temp, current)
    for folder in dict.fromkeys(os.path.dirname(os.path.abspath(p)) for p in paths):
      _fsync_folder(folder)  # ... and the renames survive a power cut
  except BaseException as e:
    for temp in temps:
      with contextlib.suppress(OSError):  # a failing cleanup must not hide the first error
        os.remove(temp)
    if isinstance(e, OSError):
      raise _named(e, {**temps, None: current}) from e
    raise


def _named(error: OSError, paths: dict) -> OSError:
  """`error` naming the file meant (`paths[error.filename]`) when it names a temporary or
  none (a full disk; arrow's errors); else `error` itself."""
  if error.filename not in paths:
    return error
  return OSError(error.errno, error.strerror or ' '.join(str(error).split()),
                 paths[error.filename])


def _create(temp: str, mode: str) -> IO:
  """A new file at `temp`, opened to write text (UTF-8, line ends as written) or bytes."""
  # os.open with 0o666 gives the file the usual umask permissions; O_EXCL never reuses
  # someone else's file.
  fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
  try:
    return open(fd, mode, **({'encoding': 'utf-8', 'newline': '\n'} if mode == 'w' else {}))
  except BaseException:
    os.close(fd)
    raise


def _is_bytes(content) -> bool:
  return isinstance(content, (bytes, bytearray, memoryview))


def _put(f: IO, content: Content) -> None:
  if _is_bytes(content) or isinstance(content, str):
    f.write(content)
  else:
    f.writelines(content)


def _make_parent(path: str) -> str:
  """Makes the folder of local `path`; returns it. A file in the way is named as such
  (makedirs would say 'File exists', which misleads)."""
  folder = os.path.dirname(os.path.abspath(path))
  parent = folder
  while not os.path.exists(parent):
    parent = os.path.dirname(parent)
  if not os.path.isdir(parent):
    raise NotADirectoryError(errno.ENOTDIR, 'a file is in the way of the output folder '
                             f'{folder}', parent)
  os.makedirs(folder, exist_ok=True)
  return folder


def _fsync_folder(folder: str) -> None:
  """Makes a rename in `folder` durable, where the system allows it (not on Windows, nor
  on some network file systems: there the rename is still atomic, only not yet synced)."""
  try:
    fd = os.open(folder, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
  except OSError:
    return
  try:
    os.fsync(fd)
  except OSError:
    pass
  finally:
    os.close(fd)


def _fsync_tree(folder: str) -> None:
  """fsyncs every file and folder under `folder` (folders last, deepest first)."""
  for root, _, files in os.walk(folder, topdown=False):
    for name in files:
      file = os.path.join(root, name)
      if os.path.islink(file):
        continue
      with open(file, 'rb') as f:
        os.fsync(f.fileno())
    _fsync_folder(root)

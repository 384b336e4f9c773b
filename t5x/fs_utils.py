"""File-system helpers shared by every writer: atomic folders, local or `gs://` paths."""
import contextlib
import os
import shutil
import uuid
from typing import Iterator


def is_remote(path: str) -> bool:
  """True for bucket paths (`gs://...`), which go through tensorstore / tf.io.gfile."""
  return '://' in str(path)


def resolve(path: str) -> str:
  """An absolute local path, or a bucket path unchanged."""
  path = str(path)
  return path if is_remote(path) else os.path.abspath(os.path.expanduser(path))


def write_atomic(path: str, data) -> None:
  """Writes text or bytes to `path` (local or bucket) under a temporary name, then renames,
  so readers never see a half-written file."""
  from etils import epath
  target = epath.Path(path)
  tmp = target.parent / f'.{target.name}.tmp-{uuid.uuid4().hex[:8]}'
  try:
    if isinstance(data, bytes):
      tmp.write_bytes(data)
    else:
      tmp.write_text(data)
    tmp.replace(target)
  except BaseException:
    # A failed write leaves neither a torn file nor litter; a failing cleanup (read-only
    # folder) must not replace the error that got us here.
    with contextlib.suppress(OSError):
      tmp.unlink(missing_ok=True)
    raise


def write_figure(path: str, fig) -> None:
  """A matplotlib figure as a PNG at `path` (local or bucket), written atomically, then
  closed."""
  import io
  import matplotlib.pyplot as plt
  png = io.BytesIO()
  fig.savefig(png, format='png', dpi=100)
  plt.close(fig)
  write_atomic(path, png.getvalue())


@contextlib.contextmanager
def staging_dir(final: str) -> Iterator[str]:
  """Yields a temporary sibling of `final`; renames it to `final` only on success.

  `final` may not exist yet or be an empty folder; a non-empty one is an error, so
  nothing a user made is overwritten. On any exception the temporary folder is removed.
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
    if os.path.isdir(final):
      os.rmdir(final)
    os.rename(tmp, final)
  finally:
    if os.path.exists(tmp):
      shutil.rmtree(tmp)

"""JAX's persistent compilation cache for the suite: one folder outside the clone, shared by
the test process and every process it starts, kept small and free of torn entries.

Cold, the suite spends minutes compiling; CI clones the repository afresh for each run, so
a cache inside the clone would start cold every time. This one lives under ~/.cache and
survives clones on the same machine. Every program is kept, however fast it compiles: the
suite compiles thousands of small ones (samplers, decode steps), and reading one back
costs less than compiling it (with the 0.5 s floor the suite had before, test_decoding.py
took 68 CPU-s warm; with none, 37).
"""
import contextlib
import hashlib
import importlib.metadata
import os
import pathlib
import platform


def folder() -> pathlib.Path:
  """$T5X_TEST_JAX_CACHE, else ~/.cache/t5x-instruct/jax-<jaxlib version>-<machine key>.

  JAX keys each entry by the program, its compile options, XLA's flags and jaxlib's
  version; the folder's name adds a hash of this CPU's model and instruction-set flags, so
  a home folder carried to another kind of machine never hands it an executable built for
  instructions that machine lacks.
  """
  if os.environ.get('T5X_TEST_JAX_CACHE'):
    return pathlib.Path(os.environ['T5X_TEST_JAX_CACHE'])
  try:
    with open('/proc/cpuinfo') as f:
      cpu = sorted({line for line in f if line.startswith(('model name', 'flags'))})
  except OSError:
    cpu = [platform.processor()]
  key = hashlib.sha256('\n'.join([platform.machine(), *cpu]).encode()).hexdigest()[:12]
  cache_home = pathlib.Path(os.environ.get('XDG_CACHE_HOME') or pathlib.Path.home() / '.cache')
  return cache_home / 't5x-instruct' / f'jax-{importlib.metadata.version("jaxlib")}-{key}'


def trim(path: pathlib.Path, limit: int = 1 << 30) -> None:
  """Over `limit` bytes, deletes the folder's oldest files down to half of it. (The whole
  suite writes about 60 MB. JAX's own size limit would lock the folder and scan every
  entry at each write: 0.1 s a write at 2,000 entries, minutes over a cold run.)"""
  try:
    files = sorted((e.stat().st_mtime, e.stat().st_size, e.path) for e in os.scandir(path)
                   if e.is_file())
  except OSError:  # no folder yet
    return
  total = sum(size for _, size, _ in files)
  if total <= limit:
    return
  for _, size, name in files:
    if total <= limit // 2:
      break
    with contextlib.suppress(OSError):
      os.remove(name)
    total -= size


def drop_torn_entries(path: pathlib.Path) -> None:
  """Deletes the entries written since the last check that do not decompress. A process
  killed while JAX writes an entry (a SIGKILL test, a session ended by Ctrl-C) leaves it
  cut short; JAX never rewrites an entry, and would warn about it on every later run."""
  from jax._src import compilation_cache  # the entries' own format
  stamp = path / '.checked'
  since = stamp.stat().st_mtime - 60 if stamp.exists() else 0
  with contextlib.suppress(OSError):  # no folder yet
    for entry in os.scandir(path):
      if entry.name.endswith('-cache') and entry.stat().st_mtime >= since:
        try:
          with open(entry.path, 'rb') as f:
            compilation_cache.decompress_executable(f.read())
        except Exception:  # pylint: disable=broad-except
          with contextlib.suppress(OSError):
            os.remove(entry.path)
    stamp.touch()


def configure() -> pathlib.Path:
  """Points this process and its children at the cache, keeping every program; call it
  before JAX is imported (JAX reads these variables once, at import)."""
  path = folder()
  trim(path)
  os.environ.update(JAX_COMPILATION_CACHE_DIR=str(path),
                    JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS='0')
  drop_torn_entries(path)
  return path

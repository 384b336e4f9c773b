"""Start-up noise off: what reads like an error on this machine but is not one.

TensorFlow's CUDA probe on a machine without an NVIDIA driver, its oneDNN and absl notices,
SeqIO's advice about uncached training data, and orbax's per-thread tracebacks of a failed
save (its error is reported once, on one line). Everything else still shows.

Loads neither JAX nor TensorFlow on import: the hooks act when their library is first
imported, so `t5x --help` and `t5x score` stay light.
"""
import importlib
import importlib.abc
import importlib.util
import logging
import os
import re
import sys
import tempfile
from typing import Callable

def quiet_start(debug: bool = False) -> None:
  """Hides start-up noise for the rest of the process (idempotent).

  TensorFlow's own log level: INFO off, warnings and errors on (unless the user set
  TF_CPP_MIN_LOG_LEVEL). TensorFlow's import prints through absl before its log level is
  read, so its import is run with stderr (fd 2) caught and the caught lines that are known
  noise dropped (see `is_noise`). SeqIO's training advice is dropped from the absl logger.
  Without `debug`, orbax's tracebacks of a failed save are dropped too: the error is
  reported once, on one line. With `debug`, stderr is never caught.

  Both hooks act when their library is first imported, so that a command that never
  loads TensorFlow or absl (`t5x --help`, `t5x score`) does not load them here either.
  """
  os.environ.setdefault('TF_CPP_MIN_LOG_LEVEL', '1')
  _after_import('absl.logging', lambda absl: _filter_logs(absl.get_absl_logger(), debug))
  if not debug:
    _around_import('tensorflow', _import_tensorflow_quietly)
    sys.unraisablehook = _without_closed_loop_noise(sys.unraisablehook)


def _filter_logs(absl_logger: logging.Logger, debug: bool) -> None:
  """Adds the filters to absl's logger (absl's own logger class: records keep their
  caller's file, which the orbax filter reads) and asyncio's."""
  filters = [(absl_logger, _drop_seqio_advice), (absl_logger, _drop_item_metadata_notice)]
  if not debug:  # orbax logs through absl; its futures end in asyncio's
    filters += [(absl_logger, _orbax_error_without_traceback),
                (logging.getLogger('asyncio'), _orbax_error_without_traceback)]
  for logger, function in filters:
    if function not in logger.filters:
      logger.addFilter(function)


def _import_tensorflow_quietly(exec_module, module) -> None:
  """Runs TensorFlow's import with fd 2 caught, its noise dropped. Without an NVIDIA
  driver it also lets TensorFlow probe for GPUs inside the catch: the probe's failed
  cuInit is logged at ERROR level by whatever first lists devices, later."""
  driver = nvidia_driver_present()
  with _StderrCaught(driver):
    exec_module(module)
    if not driver:
      module.config.list_physical_devices('GPU')


def nvidia_driver_present() -> bool:
  """Whether this machine has an NVIDIA driver (then TF's CUDA messages are news)."""
  return os.path.exists('/proc/driver/nvidia/version') or os.path.exists('/dev/nvidia0')


# What TensorFlow prints on import (two copies: two of its libraries log), as absl writes
# it before InitializeLog ('I0000 00:00:1796647905.390052    5999 port.cc:153] ...') or
# as TF's own logging does after ('2025-01-01 12:00:00.000000: I external/.../x.cc:31] ...').
_NOISE = [re.compile(p) for p in (
    r'WARNING: All log messages before absl::InitializeLog\(\) is called are written to STDERR$',
    r'.*\bport\.cc:\d+\] oneDNN custom operations are on\.',
    r'.*\bcpu_feature_guard\.cc:\d+\] This TensorFlow binary is optimized to use available CPU',
    r'To enable the following instructions: .* rebuild TensorFlow with the appropriate')]
_NO_DRIVER_NOISE = [re.compile(p) for p in (
    r'.*\bcudart_stub\.cc:\d+\] Could not find cuda drivers on your machine, GPU will not be '
    r'used\.$',
    r'.*\bcuda_platform\.cc:\d+\] failed call to cuInit: ')]


def is_noise(line: str, driver: bool) -> bool:
  """Whether a line TensorFlow prints on import is known noise. CUDA's "no driver" lines
  are noise only where `driver` is False (no NVIDIA driver on the machine)."""
  patterns = _NOISE if driver else _NOISE + _NO_DRIVER_NOISE
  return any(p.match(line) for p in patterns)


def _after_import(name: str, then: Callable) -> None:
  """Calls then(module) once module `name` is imported: now if it is."""
  if name in sys.modules:
    then(sys.modules[name])
    return
  _around_import(name, lambda exec_module, module: (exec_module(module), then(module)))


def _around_import(name: str, wrap: Callable) -> None:
  """Runs the first import of module `name` as wrap(exec_module, module); nothing if it
  is already imported or already hooked."""
  if name not in sys.modules and not any(
      isinstance(f, _ImportHook) and f.name == name for f in sys.meta_path):
    sys.meta_path.insert(0, _ImportHook(name, wrap))


class _ImportHook(importlib.abc.MetaPathFinder):
  """Finds module `name` through the other finders, once, and has its loader's
  exec_module called through `wrap`."""

  def __init__(self, name: str, wrap: Callable):
    self.name, self.wrap = name, wrap

  def find_spec(self, fullname, path=None, target=None):
    if fullname != self.name:
      return None
    sys.meta_path.remove(self)  # once: the inner find_spec below must not come back here
    spec = importlib.util.find_spec(fullname)
    if spec is not None and spec.loader is not None:
      spec.loader = _WrappedLoader(spec.loader, self.wrap)
    return spec


class _WrappedLoader(importlib.abc.Loader):
  """Another loader, its exec_module run through wrap(exec_module, module)."""

  def __init__(self, loader, wrap: Callable):
    self.loader, self.wrap = loader, wrap

  def create_module(self, spec):
    return self.loader.create_module(spec)

  def exec_module(self, module):
    module.__spec__.loader = module.__loader__ = self.loader  # the module sees its own
    self.wrap(self.loader.exec_module, module)


class _StderrCaught:
  """Context: fd 2 goes to a temporary file; on exit its lines, minus noise, go back to the
  real stderr. Does nothing if fd 2 cannot be duplicated."""

  def __init__(self, driver: bool):
    self.driver = driver
    self.saved = self.file = None

  def __enter__(self):
    try:
      sys.stderr.flush()
      self.saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
      return self
    self.file = tempfile.TemporaryFile()
    os.dup2(self.file.fileno(), 2)
    return self

  def __exit__(self, *exc):
    if self.saved is None:
      return False
    try:
      sys.stderr.flush()
    except (OSError, ValueError, AttributeError):
      pass
    os.dup2(self.saved, 2)
    os.close(self.saved)
    self.file.seek(0)
    kept = [line for line in self.file.read().decode('utf-8', 'replace').splitlines(True)
            if not is_noise(line.rstrip('\r\n'), self.driver)]
    self.file.close()
    if kept:
      os.write(2, ''.join(kept).encode())
    return False


def _drop_seqio_advice(record: logging.LogRecord) -> bool:
  """Drops SeqIO's advice to cache a task before training with it (a small task read
  afresh each run is this project's design), and its note that packing drops the
  `*_pretokenized` features (they are never packed); the note stays for other features."""
  message = record.msg if isinstance(record.msg, str) else ''
  if message.startswith('Using an uncached FunctionDataset for training is not recommended'):
    return False
  if message.startswith('Features not in `features_length` will be removed during packing'):
    dropped = record.args[0] if isinstance(record.args, tuple) and record.args else ()
    return not (dropped and all(str(f).endswith('_pretokenized') for f in dropped))
  return True


_ITEM_METADATA = re.compile(r'^Metadata file does not exist: (.+)[/\\]_CHECKPOINT_METADATA$')


def _drop_item_metadata_notice(record: logging.LogRecord) -> bool:
  """Drops orbax's notice that an item folder (`checkpoint_<step>/state`) has no
  _CHECKPOINT_METADATA of its own when one item is read: that file is the checkpoint's,
  one level up, and is there."""
  match = _ITEM_METADATA.match(record.getMessage()) if isinstance(record.msg, str) else None
  if not match:
    return True
  checkpoint = os.path.dirname(match.group(1))
  return not os.path.isfile(os.path.join(checkpoint, '_CHECKPOINT_METADATA'))


def _without_closed_loop_noise(hook):
  """`hook` (sys.unraisablehook) minus the traceback that tensorstore reports for each
  write still pending when a failed orbax save closes its event loop ('Event loop is
  closed': about a hundred on a full disk). The save's own error is reported once, as
  `t5x train: error: could not save checkpoint ...`."""
  if getattr(hook, 'quiets_closed_loops', False):
    return hook

  def quiet(unraisable):
    value = unraisable.exc_value
    if isinstance(value, RuntimeError) and str(value) == 'Event loop is closed':
      return
    hook(unraisable)
  quiet.quiets_closed_loops = True
  return quiet


def _orbax_error_without_traceback(record: logging.LogRecord) -> bool:
  """Keeps orbax's own error lines but drops their tracebacks, and drops asyncio's
  'exception was never retrieved' reports of orbax's abandoned writes (printed as late
  as interpreter exit). A failed asynchronous save logs one traceback per thread and per
  pending write (about 1,000 lines on a full disk), all about the error that `t5x train`
  reports on one line with the folder and the cause."""
  if not record.exc_info:
    return True
  if record.name == 'asyncio':  # tensorstore's futures carry no Python frames: the path says
    error = record.exc_info[1] if isinstance(record.exc_info, tuple) else None
    return not (_in_orbax_traceback(record.exc_info) or '.orbax-checkpoint-tmp' in str(error))
  if _in_orbax(record.pathname):
    record.exc_info, record.exc_text = None, None
  return True


def _in_orbax(path: str) -> bool:
  return f'{os.sep}orbax{os.sep}' in (path or '')


def _in_orbax_traceback(exc_info) -> bool:
  tb = exc_info[2] if isinstance(exc_info, tuple) else None
  while tb is not None:
    if _in_orbax(tb.tb_frame.f_code.co_filename):
      return True
    tb = tb.tb_next
  return False

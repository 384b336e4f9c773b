"""Running a command the T5X way: `t5x train|infer|eval` and `python -m t5x.train|infer|eval`.

One path for both spellings: parse T5X-style gin flags (and the multi-host flags), join the
job, call the configured function, and report a user's error on one line. `--debug` (or
T5X_DEBUG=1) prints the full traceback instead; an XLA out-of-memory error is always
printed whole, since its message carries the allocation breakdown.

Start-up noise is hidden by `t5x.log_noise`.

This module loads neither JAX nor TensorFlow on import: `t5x --help` and `t5x score` use
`report_errors` too.
"""
import importlib
import os
import re
import sys
import traceback
from typing import Callable, Optional, Sequence

import gin

from t5x import gin_utils, log_noise, script_flags

# command -> (module, function) that the gin files configure.
COMMANDS = {'train': ('t5x.train', 'train'), 'infer': ('t5x.infer', 'infer'),
            'eval': ('t5x.eval', 'evaluate')}

# Errors whose message tells the user what to fix: printed without a traceback. (The
# converters' ConversionError and LegacyCheckpointError are ValueErrors.)
USER_ERRORS = (ValueError, KeyError, FloatingPointError, SyntaxError, RuntimeError,
               TimeoutError)

_DEBUG_ENV = 'T5X_DEBUG'


def usage(command: str) -> str:
  """The help text of `t5x COMMAND` and `python -m t5x.COMMAND` (train, infer, eval)."""
  return (f't5x {command} --gin_file=FILE [--gin_file=...] [--gin.NAME=VALUE ...] '
          '[--gin_bindings=...] [--gin_search_paths=DIR,...] [--multiprocess_gpu '
          '--coordinator_address=HOST:PORT --process_count=N --process_index=I] '
          '[--tfds_data_dir=DIR] [--seqio_additional_cache_dirs=DIR,...] [absl logging '
          'flags: --alsologtostderr, --log_dir, --verbosity, ...]'
          + (' [--num_runs=N] [--shard_id=N]' if command == 'infer' else '') + ' [--debug]. '
          'String values need quotes: --gin.MODEL_DIR=\\"/tmp/model\\". Relative gin files '
          "are found in the search paths, the repository's gin/ folder and the installed copy "
          'of it. --debug (or T5X_DEBUG=1) prints the full traceback of an error.')


def debug_requested(argv: Sequence[str]) -> tuple[bool, list[str]]:
  """(whether --debug or T5X_DEBUG=1 asks for tracebacks, argv without --debug)."""
  rest = [a for a in argv if a != '--debug']
  env = os.environ.get(_DEBUG_ENV, '').strip().lower() not in ('', '0', 'false', 'no')
  return env or len(rest) < len(argv), rest


def main(command: str, argv: Optional[Sequence[str]] = None) -> int:
  """`python -m t5x.COMMAND FLAGS`: as `t5x COMMAND FLAGS`; returns the exit code."""
  argv = list(sys.argv[1:] if argv is None else argv)
  if {'-h', '--help'} & set(argv):
    print(f'usage: {usage(command)}')
    return 0
  debug, flags = debug_requested(argv)
  log_noise.quiet_start(debug)
  return report_errors(f't5x {command}', lambda: run(command, flags), debug)


def run(command: str, flags: Sequence[str]) -> None:
  """Parses the gin and multi-host flags of `t5x COMMAND`, joins the job, then calls the
  function the gin files configure (t5x.train.train, t5x.infer.infer, t5x.eval.evaluate).

  Raises ValueError for an unknown flag or bad gin (before any host waits for another).
  """
  from t5x import distributed  # JAX: only commands that run a model load it
  files, bindings, paths, rest = gin_utils.split_flags(flags)
  multihost, rest = distributed.parse_flags(rest)
  rest = script_flags.apply(rest)
  call_args = {}  # flags that T5X's scripts pass to the function itself
  for flag in list(rest):
    name, _, value = flag.partition('=')
    if command == 'infer' and name == '--num_runs' and value:
      bindings.append(f'NUM_RUNS = {int(value)}')
      rest.remove(flag)
    elif command == 'infer' and name == '--shard_id' and value:
      call_args['shard_id'] = int(value)  # T5X's flag: it overrides infer.shard_id
      rest.remove(flag)
  if rest:
    raise ValueError(f'unknown arguments {rest}; t5x {command} takes --gin_file, '
                     '--gin.NAME=VALUE, --gin_bindings, --gin_search_paths, the multi-host '
                     'flags --multiprocess_gpu, --coordinator_address, --process_count, '
                     '--process_index, --initialization_timeout, T5X\'s '
                     + ', '.join(script_flags.names())
                     + (', --num_runs=N, --shard_id=N' if command == 'infer' else '')
                     + ' and --debug')
  module, name = COMMANDS[command]
  try:
    gin_utils.parse(files, bindings, paths, main_module=module)  # bad gin fails here, first
  except Exception:
    gin.clear_config()  # no half-parsed config stays bound in this process (notebooks, tests)
    raise
  distributed.initialize(multihost)
  # By name, never __main__'s copy: `python -m t5x.train` runs the file as __main__, but
  # the gin files configure the function of the module t5x.train.
  gin.get_configurable(getattr(importlib.import_module(module), name))(**call_args)


# ----------------------------------------------------------------------------- errors

def report_errors(label: str, fn: Callable[[], Optional[int]], debug: bool = False) -> int:
  """Calls `fn`; returns its status (None -> 0), or reports its error on stderr.

  A user error (bad input, a missing file, a full disk) is one line `LABEL: error: ...`,
  exit code 2; with `debug`, its full traceback instead (still 2). An XLA out-of-memory
  error is printed whole, then named on a last line; exit code 1. Other errors propagate.
  """
  try:
    return fn() or 0
  except Exception as e:  # pylint: disable=broad-except
    if is_out_of_memory(e):
      traceback.print_exc()
      print(f'{label}: error: out of device memory; XLA\'s report of what it tried to '
            'allocate is above. Lower BATCH_SIZE or the feature lengths, or partition the '
            'model over more devices.', file=sys.stderr)
      return 1
    if not isinstance(e, (OSError, *USER_ERRORS)):
      raise
    if debug:
      traceback.print_exc()
      return 2
    message = _os_error(e) if isinstance(e, OSError) else _one_line(e)
    print(f'{label}: error: {message}', file=sys.stderr)
    return 2


def is_out_of_memory(error: BaseException) -> bool:
  """Whether `error` is XLA's out-of-memory error (jaxlib's XlaRuntimeError, JAX's
  JaxRuntimeError, or gin's re-raised copy of one): RESOURCE_EXHAUSTED or "out of memory".
  A checkpoint that could not be saved on a full disk is an OSError, not one of these."""
  names = {cls.__name__ for cls in type(error).__mro__}
  if not names & {'XlaRuntimeError', 'JaxRuntimeError'}:
    return False
  text = str(error)
  return 'RESOURCE_EXHAUSTED' in text or 'out of memory' in text.lower()


def _one_line(error) -> str:
  """The message on one line: a KeyError's quotes dropped, line breaks folded, and gin's
  "In call to configurable 'train' (<function ...>)" note (an address) left out."""
  text = error.args[0] if isinstance(error, KeyError) and len(error.args) == 1 else error
  text = re.sub(r"\s*In call to configurable '[^']*' \(<[^>]*>\)", '', str(text))
  return ' '.join(text.split())


def _os_error(error: OSError) -> str:
  """'FILE: reason' for an OSError that names its file, else its own message."""
  if error.filename is None or not error.strerror:
    return _one_line(error)
  other = f' -> {error.filename2}' if error.filename2 else ''
  return _one_line(f'{error.filename}{other}: {error.strerror}')

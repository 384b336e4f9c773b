"""The flags of T5X's scripts besides gin's and the multi-host ones.

- `--tfds_data_dir=DIR`: where TFDS-backed SeqIO tasks read their data
  (seqio.set_tfds_data_dir_override, as T5X's train/infer/eval do);
- `--seqio_additional_cache_dirs=DIR[,DIR]`: more folders searched for cached SeqIO tasks
  (seqio.add_global_cache_dirs);
- absl's logging flags (`--logtostderr`, `--alsologtostderr`, `--log_dir`, `--verbosity`
  or `-v`, `--stderrthreshold`, `--logger_levels`, `--showprefixforinfo`), which T5X's
  scripts accept because they run under absl: parsed by absl and applied by its handler.
"""
from typing import Sequence

from absl import flags
from absl import logging as absl_logging

_ABSL_LOGGING = ('logtostderr', 'alsologtostderr', 'log_dir', 'verbosity', 'v',
                 'stderrthreshold', 'logger_levels', 'showprefixforinfo')
_BOOLEAN = ('logtostderr', 'alsologtostderr', 'showprefixforinfo')


def names() -> list[str]:
  """The flags this module takes, as written on a command line."""
  return ['--tfds_data_dir', '--seqio_additional_cache_dirs',
          *(f'--{n}' for n in _ABSL_LOGGING if n != 'v'), '-v']


def _name(arg: str) -> str:
  """'--alsologtostderr' / '--noalsologtostderr' / '-v=1' -> 'alsologtostderr' / 'v'."""
  name = arg.lstrip('-').partition('=')[0]
  if name.startswith('no') and name[2:] in _BOOLEAN:
    return name[2:]
  return name


def apply(args: Sequence[str]) -> list[str]:
  """Applies the flags above found in `args`; returns the other arguments, in order.

  Raises ValueError for a flag above without its value.
  """
  rest, absl_args = [], []
  args = list(args)
  i = 0
  while i < len(args):
    arg, name = args[i], _name(args[i])
    if not arg.startswith('-') or name not in (*_ABSL_LOGGING, 'tfds_data_dir',
                                               'seqio_additional_cache_dirs'):
      rest.append(arg)
      i += 1
      continue
    value = arg.partition('=')[2] if '=' in arg else None
    if value is None and name not in _BOOLEAN:
      if i + 1 >= len(args):
        raise ValueError(f'{arg} needs a value')
      i += 1
      value = args[i]
    if name == 'tfds_data_dir':
      import seqio  # the data layer; only a run that names the flag pays its import
      seqio.set_tfds_data_dir_override(value)
    elif name == 'seqio_additional_cache_dirs':
      import seqio
      seqio.add_global_cache_dirs([d for d in value.split(',') if d])
    else:
      absl_args.append(arg if value is None else f'--{name}={value}')
    i += 1
  if absl_args:
    _apply_absl_logging(absl_args)
  return rest


def _apply_absl_logging(absl_args: list[str]) -> None:
  try:
    flags.FLAGS(['t5x', *absl_args], known_only=True)
  except flags.Error as e:
    raise ValueError(f'absl logging flag: {e}') from None
  absl_logging.use_absl_handler()
  # absl's handler sets the Python level from --verbosity when it starts: apply it now.
  absl_logging.get_absl_handler().activate_python_handler()
  absl_logging.set_verbosity(flags.FLAGS.verbosity)
  if flags.FLAGS.log_dir:
    absl_logging.get_absl_handler().start_logging_to_file(log_dir=flags.FLAGS.log_dir)

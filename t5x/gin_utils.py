"""T5X-style gin flags: --gin_file, --gin.NAME=VALUE, --gin_bindings, --gin_search_paths.

Relative gin files (and `include` lines) are looked up in the current folder, the search
paths given, the repository's `gin/` folder, and the copy of it installed with the package.
"""
import difflib
import logging
import os
import pathlib
import re
from typing import Optional, Sequence

import gin
from gin import config as gin_config
from gin import config_parser

_PACKAGE = pathlib.Path(__file__).resolve().parent
DEFAULT_SEARCH_PATHS = (
    _PACKAGE.parent / 'gin',   # a source checkout
    _PACKAGE / 'gin',          # an installed package (setup.py copies gin/ here)
)


def split_flags(argv: Sequence[str]) -> tuple[list[str], list[str], list[str], list[str]]:
  """argv -> (gin_files, gin_bindings, search_paths, other args), keeping flag order."""
  files, bindings, paths, rest = [], [], [], []
  args = list(argv)
  i = 0
  while i < len(args):
    arg = args[i]
    name, eq, value = arg.partition('=')
    needs_value = name in ('--gin_file', '--gin_bindings', '--gin_search_paths') and not eq
    if needs_value:
      if i + 1 >= len(args):
        raise ValueError(f'{name} needs a value')
      value, i = args[i + 1], i + 1
    if name == '--gin_file':
      files.append(value)
    elif name == '--gin_bindings':
      bindings.append(value)
    elif name == '--gin_search_paths':
      paths.extend(p for p in value.split(',') if p)
    elif name.startswith('--gin.'):
      if not eq:
        raise ValueError(f'{arg}: write --gin.NAME=VALUE (strings in quotes: '
                         '--gin.MODEL_DIR=\\"/tmp/model\\")')
      bindings.append(f'{name[len("--gin."):]} = {value}')
    else:
      rest.append(arg)
    i += 1
  return files, bindings, paths, rest


def parse(gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = ()):
  """Parses files then bindings (later ones win), after registering the search paths.

  Raises FileNotFoundError naming a gin file that no search path holds, and ValueError
  for a command-line macro that nothing reads (a typo would otherwise pass silently).
  """
  if not gin_files:
    raise ValueError('no --gin_file given; e.g. t5x train --gin_file=gin/quickstart.gin')
  folders = [p for p in [*search_paths, *map(str, DEFAULT_SEARCH_PATHS)] if os.path.isdir(p)]
  for path in folders:
    gin.add_config_file_search_path(path)
  for name in gin_files:
    _check_found(name, folders)
  # gin logs an ERROR for every search-path candidate it tries before the one that exists.
  root = logging.getLogger()
  root.addFilter(_quiet_search)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), [], finalize_config=False)
  except OSError as e:  # an `include` that no search path holds
    message = _missing_include(str(e), folders)
    if message is None:
      raise
    raise FileNotFoundError(message) from None
  finally:
    root.removeFilter(_quiet_search)
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except (SyntaxError, ValueError) as e:
      hint = (' String values need quotes, e.g. --gin.MODEL_DIR=\\"/tmp/model\\".'
              if 'Unable to parse value' in str(e) else '')
      raise ValueError(f'gin binding {binding!r}: {e}.{hint}') from None
  check_macros_read(bindings)


def _searched(folders: Sequence[str]) -> str:
  return ', '.join([f'the current folder ({os.getcwd()})', *folders])


def _check_found(name: str, folders: Sequence[str]) -> None:
  """Raises FileNotFoundError unless gin's lookup (as is, then in each folder) finds `name`."""
  if '://' in name:  # bucket paths: gin reads them through TensorFlow and says so itself
    return
  if any(os.path.isfile(os.path.join(folder, name)) for folder in ['', *folders]):
    return
  raise FileNotFoundError(f'gin file {name!r} not found; searched {_searched(folders)}. '
                          'Check the name, or add its folder with --gin_search_paths=DIR.')


def _missing_include(message: str, folders: Sequence[str]) -> Optional[str]:
  """gin's multi-line 'Unable to open file' error as one line naming the including file;
  None for other errors."""
  name = re.search(r'Unable to open file: (.*?)\. Searched config paths', message)
  where = re.search(r'In file "(.*?)", line (\d+)', message)
  if not name:
    return None
  source = f' (included from {where[1]}:{where[2]})' if where else ''
  return (f'gin file {name[1]!r}{source} not found; searched {_searched(folders)}. Check '
          'the name, or add its folder with --gin_search_paths=DIR.')


class _Names(config_parser.ParserDelegate):
  """Parses binding text without importing or evaluating anything."""

  def configurable_reference(self, name, evaluate):
    return None

  def macro(self, name):
    return None


def command_line_macros(bindings: Sequence[str]) -> list[str]:
  """Names of the macros that `bindings` set (`NAME = VALUE`: no dot, no scope)."""
  names = []
  for binding in bindings:
    for statement in config_parser.ConfigParser(binding, _Names()):
      if (isinstance(statement, config_parser.BindingStatement) and not statement.arg_name
          and not statement.scope and '.' not in statement.selector):
        names.append(statement.selector)
  return names


def referenced_macros() -> set[str]:
  """Names of the macros that the parsed config reads (`%NAME` anywhere in a bound value,
  nested in lists and dicts, or in another macro's value)."""
  names = set()
  config = gin_config._CONFIG  # pylint: disable=protected-access
  for reference in gin_config.iterate_references(config):
    if reference.configurable.wrapped is gin_config.macro and reference.scopes:
      names.add('/'.join(reference.scopes))
  return names


def check_macros_read(bindings: Sequence[str]) -> None:
  """Raises ValueError for a macro set in `bindings` that no parsed file or binding reads,
  naming the closest macro that is read."""
  read = referenced_macros()
  for name in command_line_macros(bindings):
    if name in read:
      continue
    close = difflib.get_close_matches(name, sorted(read), n=1, cutoff=0.6)
    hint = (f'did you mean {close[0]}?' if close else
            f'the config reads {", ".join(sorted(read)) or "no macros"}.')
    raise ValueError(f'--gin.{name}: no gin file or binding reads the macro {name} (nothing '
                     f'refers to %{name}), so setting it would change nothing; {hint}')


def _quiet_search(record: logging.LogRecord) -> bool:
  return not str(record.msg).startswith('Path not found')

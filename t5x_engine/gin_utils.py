"""T5X-style gin flags: --gin_file, --gin.NAME=VALUE, --gin_bindings, --gin_search_paths.

Relative gin files (and `include` lines) are looked up in the current folder, the search
paths given, the repository's `gin/` folder, and the copy of it installed with the package.
"""
import logging
import os
import pathlib
from typing import Sequence

import gin

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
  """Parses files then bindings (later ones win), after registering the search paths."""
  if not gin_files:
    raise ValueError('no --gin_file given; e.g. t5x train --gin_file=gin/quickstart.gin')
  for path in [*search_paths, *map(str, DEFAULT_SEARCH_PATHS)]:
    if os.path.isdir(path):
      gin.add_config_file_search_path(path)
  # gin logs an ERROR for every search-path candidate it tries before the one that exists.
  root = logging.getLogger()
  root.addFilter(_quiet_search)
  try:
    gin.parse_config_files_and_bindings(list(gin_files), [], finalize_config=False)
  finally:
    root.removeFilter(_quiet_search)
  for binding in bindings:
    try:
      gin.parse_config(binding)
    except (SyntaxError, ValueError) as e:
      hint = (' String values need quotes, e.g. --gin.MODEL_DIR=\\"/tmp/model\\".'
              if 'Unable to parse value' in str(e) else '')
      raise ValueError(f'gin binding {binding!r}: {e}.{hint}') from None


def _quiet_search(record: logging.LogRecord) -> bool:
  return not str(record.msg).startswith('Path not found')

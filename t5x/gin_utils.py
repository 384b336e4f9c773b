"""Gin text, read and written here only.

- T5X-style flags (--gin_file, --gin.NAME=VALUE, --gin_bindings, --gin_search_paths) and
  parsing them into gin's config. Relative gin files (and `include` lines) are looked up
  in the current folder, the search paths given, the repository's `gin/` folder, and the
  copy of it installed with the package.
- Gin files written before the engine moved to the package `t5x` (a MODEL_DIR's
  config.gin naming the former package) parse: see `_engine_imports`.
- A file's literal bindings read as text, without importing what it names (to read a
  MODEL_DIR's architecture and macros), and the gin text that this project writes: a
  checkpoint's model.gin and a run's config.gin.
"""
import contextlib
import dataclasses
import difflib
import importlib.util
import logging
import os
import pathlib
import re
from typing import Any, Iterator, Optional, Sequence

import gin
from gin import config as gin_config
from gin import config_parser

from t5x import fs_utils

_PACKAGE = pathlib.Path(__file__).resolve().parent
DEFAULT_SEARCH_PATHS = (
    _PACKAGE.parent / 'gin',   # a source checkout
    _PACKAGE / 'gin',          # an installed package (setup.py copies gin/ here)
    # T5X's paths, e.g. 't5x/examples/t5/t5_1_1/base.gin': the folder holding the package
    # (T5X's scripts search the same one).
    _PACKAGE.parent,
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


def parse(gin_files: Sequence[str], bindings: Sequence[str], search_paths: Sequence[str] = (),
          main_module: Optional[str] = None):
  """Parses files then bindings (later ones win), after registering the search paths.

  `main_module` is the module that T5X's run configs mean by `import __main__ as
  train_script` (T5X runs them as its scripts' __main__): 't5x.train', 't5x.infer' or
  't5x.eval', whichever command runs them, `t5x train` or `python -m t5x.train`.

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
  with _engine_imports(main_module):
    try:
      gin.parse_config_files_and_bindings(list(gin_files), [], finalize_config=False)
    except OSError as e:  # an `include` that no search path holds
      message = _missing_include(str(e), folders)
      if message is None:
        raise
      raise FileNotFoundError(message) from None
    except AttributeError as e:  # dynamic registration: a name the module does not have
      raise ValueError(str(e)) from None  # gin's text names the file and line
    finally:
      root.removeFilter(_quiet_search)
    for binding in bindings:
      try:
        gin.parse_config(binding)
      except (SyntaxError, ValueError, AttributeError) as e:
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


def command_line_macros(bindings: Sequence[str]) -> list[str]:
  """Names of the macros that `bindings` set (`NAME = VALUE`: no dot, no scope)."""
  names = []
  for binding in bindings:
    for statement in config_parser.ConfigParser(binding, _Literal()):
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


# ----------------------------------------------------------------------------- former modules
# A MODEL_DIR's config.gin names the modules its run imported. Runs from before the engine
# became the package `t5x` name a package that is no longer installed; T5X users' files may
# name modules by a path this project keeps elsewhere. An import line whose module cannot
# be imported, and whose last component is one of the engine's modules, is read as that
# module, with a warning: the binding names (`network.T5Config`, ...) stay as written.

_ENGINE_MODULES = {
    **{name: f't5x.{name}' for name in (
        'adafactor', 'checkpoints', 'data', 'decoding', 'eval', 'gin_utils', 'infer',
        'losses', 'metrics_writer', 'model_config', 'models', 'optimizers', 'partitioning',
        'scan_layout', 'train', 'trainer', 'utils')},
    'evaluation': 't5x.eval',
    'network': 't5x.examples.t5.network',
    'lora': 't5x.lora.adapters',
    'plan': 't5x.memory.plan',
    **{name: f't5x.conversion.{name}' for name in (
        'converters', 'hf_convert', 'hf_export', 'legacy_t5x')},
}


def engine_module(module: str) -> Optional[str]:
  """The engine module that an import of `module` (not importable) is read as; None when
  `module` is importable or its last component is none of the engine's modules."""
  replacement = _ENGINE_MODULES.get(module.rsplit('.', 1)[-1])
  if replacement is None or replacement == module or _importable(module):
    return None
  return replacement


def _importable(module: str) -> bool:
  try:
    return importlib.util.find_spec(module) is not None
  except ImportError:  # a parent package is missing
    return False


@contextlib.contextmanager
def _engine_imports(main_module: Optional[str] = None) -> Iterator[None]:
  """While gin parses: an import line naming a missing module that `engine_module` knows
  imports the engine's module under the same bound name. One warning per file at the end
  lists the lines read so.

  Only `from A import B [as C]` and `import A.B as C` lines qualify: there the name that
  bindings use does not depend on the module's path.
  """
  original = gin_config.ParseContext.process_import
  replaced = {}  # file -> ['line 3: A.models as t5x.models', ...]

  def process_import(context, statement: config_parser.ImportStatement):
    if statement.module == '__main__' and main_module:
      statement = statement._replace(module=main_module)
    try:
      return original(context, statement)
    except ModuleNotFoundError as e:
      missing = e.name or ''
      named = statement.module == missing or statement.module.startswith(missing + '.')
      replacement = engine_module(statement.module)
      if not named or replacement is None or not (statement.is_from or statement.alias):
        raise
      where = statement.location
      replaced.setdefault(where.filename or '<gin text>', []).append(
          f'line {where.line_num}: {statement.module} as {replacement}')
      # Bindings name the module as the file bound it: `from A import evaluation` stays
      # `evaluation` though the engine's module is t5x.eval.
      name = statement.bound_name()
      alias = None if replacement.rsplit('.', 1)[-1] == name else name
      return original(context, statement._replace(module=replacement, alias=alias))

  gin_config.ParseContext.process_import = process_import
  try:
    yield
  finally:
    gin_config.ParseContext.process_import = original
    for filename, lines in replaced.items():
      logging.warning('%s imports modules that are not installed; read as the engine\'s (a '
                      'MODEL_DIR written before the engine moved to the package t5x): %s',
                      filename, '; '.join(lines))


# ----------------------------------------------------------------------------- gin text out

def config_to_gin(cfg, vocabulary_path: Optional[str] = None) -> str:
  """gin text binding `network.T5Config` (T5X's names) for `cfg` (a network.T5Config), and
  VOCABULARY_PATH when given: a checkpoint's model.gin."""
  lines = ['# The architecture of this checkpoint; include it with --gin_file.',
           'from __gin__ import dynamic_registration',
           'from t5x.examples.t5 import network', '',
           'network.Transformer.config = @network.T5Config()', 'network.T5Config:']
  for field in dataclasses.fields(cfg):
    lines.append(f'  {field.name} = {getattr(cfg, field.name)!r}')
  if vocabulary_path:
    lines += ['', f'VOCABULARY_PATH = {vocabulary_path!r}']
  return '\n'.join(lines) + '\n'


def summarize_gin_config(model_dir: str, summary_writer: Any = None,
                         step: Optional[int] = None) -> None:
  """T5X's hook for recording a run's operative gin config: here it is written to
  MODEL_DIR/config.gin (which `t5x.load` and a resumed run read). T5X's `summary_writer`
  and `step` are accepted and unused: TensorBoard holds the metrics only."""
  del summary_writer, step
  fs_utils.write_atomic(os.path.join(model_dir, 'config.gin'), operative_config())


def operative_config() -> str:
  """The parsed config as gin text (every binding, with the imports that resolve it): a
  run's config.gin, from which the run restarts with --gin_file."""
  return gin.config_str()


# ----------------------------------------------------------------------------- gin text in

class _Literal(config_parser.ParserDelegate):
  """Keeps references and macros as markers; nothing is imported or evaluated."""

  def configurable_reference(self, name, evaluate):
    return ('@', name)

  def macro(self, name):
    return ('%', name)


def read_gin_literals(path: str, search_paths: Sequence[str] = ()
                      ) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
  """(macros, {selector: {argument: value}}) of a gin file's literal bindings, its
  `include`d files' first (looked up as `parse` does), later bindings winning.

  Reads the files as text through gin's parser, so it needs none of their imports;
  macros are resolved, references (@...) are left out.
  """
  macros, bindings = {}, {}
  for stmt in _binding_statements(path, [*search_paths, *map(str, DEFAULT_SEARCH_PATHS)], ()):
    if stmt.arg_name:
      bindings.setdefault(stmt.selector, {})[stmt.arg_name] = stmt.value
    else:
      macros[stmt.selector] = stmt.value

  def resolve(value):
    seen = 0
    while isinstance(value, tuple) and len(value) == 2 and value[0] == '%' and seen < 20:
      value, seen = macros.get(value[1]), seen + 1
    return None if isinstance(value, tuple) and value[:1] == ('@',) else value

  macros = {k: resolve(v) for k, v in macros.items()}
  bindings = {sel: {k: v for k, v in ((a, resolve(v)) for a, v in args.items()) if v is not None}
              for sel, args in bindings.items()}
  return macros, bindings


def _binding_statements(path: str, folders: Sequence[str], including: tuple[str, ...]):
  """The BindingStatements of `path` in order, each `include` replaced by its file's."""
  if path in including:
    raise ValueError(f'gin file {path} includes itself (through {" -> ".join(including)})')
  with open(path) as f:
    statements = list(config_parser.ConfigParser(f, _Literal()))
  for stmt in statements:
    if isinstance(stmt, config_parser.BindingStatement):
      yield stmt
    elif isinstance(stmt, config_parser.IncludeStatement):
      yield from _binding_statements(_find_include(stmt.filename, folders, path), folders,
                                     (*including, path))


def _find_include(name: str, folders: Sequence[str], including: str) -> str:
  candidates = [name] if os.path.isabs(name) else [os.path.join(p, name) for p in ['', *folders]]
  for candidate in candidates:
    if os.path.isfile(candidate):
      return candidate
  raise FileNotFoundError(f'gin file {name!r} (included from {including}) not found; '
                          f'searched {_searched([p for p in folders if os.path.isdir(p)])}.')


def gin_macros(path: str) -> dict[str, Any]:
  """The macros a gin file (and what it includes) sets, resolved."""
  return read_gin_literals(path)[0]


def gin_bindings(path: str, configurable: str) -> dict[str, Any]:
  """Literal bindings of the configurable whose name ends with `configurable`."""
  out = {}
  for selector, args in read_gin_literals(path)[1].items():
    if selector.split('.')[-1] == configurable:
      out.update(args)
  return out


def config_from_gin(path: str) -> dict[str, Any]:
  """The literal `T5Config` bindings in a gin file (macros defined there resolved)."""
  return gin_bindings(path, 'T5Config')

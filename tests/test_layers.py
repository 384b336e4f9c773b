"""The three layers' imports, read from the source with `ast` (nothing is imported).

Layers, bottom to top: `t5x_tasks` (SeqIO tasks, metrics, readers), `t5x` (the engine),
`t5x_cli` (the `t5x` command and CoPoet's app). Every `import` and `from ... import` of
every module is an edge of the module graph: `from pkg import mod` points at the
submodule `pkg.mod` when there is one, relative imports are resolved, and imports inside
functions ("deferred") count like the others. The rules:

  1. Imports point down (or within a layer): t5x_tasks imports neither t5x nor t5x_cli,
     t5x does not import t5x_cli.
  2. Of the engine, only t5x/data.py imports t5x_tasks (it registers the tasks gin names).
  3. No cycle among the modules. A cycle one of whose imports is deferred is still a cycle:
     deferring hides it from Python, not from a reader.
  4. An import inside a function is a deliberate deferral of something heavy, never a way
     around rule 3. It is allowed for
       - a third-party library of DEFERRABLE (heavy to import, or an optional extra) that
         the importer's module-level imports do not load already (else it saves nothing);
       - t5x_tasks, from t5x/data.py only (its tasks load SeqIO and TensorFlow);
       - a project module imported by the top layer (a command loads only what its
         subcommand runs);
       - an engine module imported by a light engine module (one whose module-level
         imports load nothing of HEAVY) when that engine module does load something heavy:
         the deferral is what keeps the importer light.
     Never the standard library, nor a project module whose deferral keeps nothing out.

A failure names the file and line of each offending import.
"""
import ast
import dataclasses
import os
from typing import Iterable, Optional

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LAYERS = {'t5x_tasks': 0, 't5x': 1, 't5x_cli': 2}
TOP = 't5x_cli'
# A module that loads one of these at import time is heavy: start-up in seconds, or a
# framework's threads and devices.
HEAVY = frozenset({'jax', 'jaxlib', 'flax', 'optax', 'orbax', 'tensorstore', 'tensorflow',
                   'seqio', 'torch', 'transformers', 'fastapi', 'uvicorn', 'starlette'})
# Libraries a function may import for itself: the heavy ones, the optional `hf` extra
# (safetensors) and libraries that take 50 ms to seconds to import and serve one
# function (plots, TensorBoard events, tokenizer, metrics, parquet, file systems, bars).
DEFERRABLE = HEAVY | {'safetensors', 'matplotlib', 'tensorboardX', 'sentencepiece', 'sacrebleu',
                      'rouge_score', 'nltk', 'pyarrow', 'etils', 'tqdm', 'gin'}
ONLY_TASK_IMPORTER = 't5x.data'


@dataclasses.dataclass(frozen=True)
class Import:
  importer: str  # module name, e.g. 't5x.conversion.converters'
  target: str  # a project module, or a third-party dotted name
  where: str  # 'path/to/file.py:line'
  deferred: bool  # inside a function


def find_modules(root: str = ROOT) -> dict[str, str]:
  """{module name: file path} of every module of the three packages."""
  modules = {}
  for package in LAYERS:
    for folder, _, files in os.walk(os.path.join(root, package)):
      for name in files:
        if name.endswith('.py'):
          path = os.path.join(folder, name)
          module = os.path.relpath(path, root)[:-len('.py')].replace(os.sep, '.')
          modules[module.removesuffix('.__init__')] = path
  return modules


def read_imports(module: str, path: str, modules: Iterable[str],
                 root: str = ROOT) -> list[Import]:
  """The imports of one module's source, resolved against the project's `modules`."""
  modules = set(modules)
  tree = ast.parse(open(path, encoding='utf-8').read(), path)
  where = lambda node: f'{os.path.relpath(path, root)}:{node.lineno}'
  is_package = path.endswith('__init__.py')
  found = []

  def visit(node, deferred):
    for child in ast.iter_child_nodes(node):
      if isinstance(child, ast.Import):
        for alias in child.names:
          found.append(Import(module, _resolve(alias.name, modules), where(child), deferred))
      elif isinstance(child, ast.ImportFrom):
        base = child.module or ''
        if child.level:
          parts = module.split('.')[:len(module.split('.')) - child.level + is_package]
          base = '.'.join(parts + ([base] if base else []))
        for alias in child.names:
          sub = f'{base}.{alias.name}'
          target = sub if sub in modules else _resolve(base, modules)
          found.append(Import(module, target, where(child), deferred))
      visit(child, deferred or isinstance(
          child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)))

  visit(tree, False)
  return found


def _resolve(name: str, modules: set[str]) -> str:
  """A project name -> its longest prefix that is a module; other names unchanged."""
  parts = name.split('.')
  if parts[0] not in LAYERS:
    return name
  for end in range(len(parts), 0, -1):
    if '.'.join(parts[:end]) in modules:
      return '.'.join(parts[:end])
  return name


def _top(name: str) -> str:
  return name.split('.')[0]


def _module_level_libraries(imports: list[Import]) -> dict[str, set[str]]:
  """{module: third-party top-level packages its module-level imports load, transitively
  through project modules}."""
  direct: dict[str, set[str]] = {}
  for imp in imports:
    direct.setdefault(imp.importer, set())
    direct.setdefault(imp.target, set())
    if not imp.deferred:
      direct[imp.importer].add(imp.target)
  loads: dict[str, set[str]] = {}

  def visit(module, seen):
    if module in loads:
      return loads[module]
    if _top(module) not in LAYERS:
      return {_top(module)}
    seen.add(module)
    out = set()
    for target in direct.get(module, ()):
      if target not in seen:
        out |= visit(target, seen)
    loads[module] = out
    return out

  for module in direct:
    visit(module, set())
  return loads


def find_cycles(imports: list[Import]) -> list[tuple[list[str], list[Import]]]:
  """(the modules of a strongly connected group, one cycle's imports in order) for each
  group of modules that reach each other."""
  graph: dict[str, dict[str, Import]] = {}
  for imp in imports:
    if _top(imp.target) in LAYERS and imp.target != imp.importer:
      graph.setdefault(imp.importer, {}).setdefault(imp.target, imp)
  index: dict[str, int] = {}
  low: dict[str, int] = {}
  stack: list[str] = []
  groups = []

  def strongconnect(v):  # Tarjan; the graph has a few dozen nodes, recursion is fine
    index[v] = low[v] = len(index)
    stack.append(v)
    for w in graph.get(v, {}):
      if w not in index:
        strongconnect(w)
        low[v] = min(low[v], low[w])
      elif w in stack:
        low[v] = min(low[v], index[w])
    if low[v] == index[v]:
      group = []
      while True:
        w = stack.pop()
        group.append(w)
        if w == v:
          break
      if len(group) > 1:
        groups.append(set(group))

  for v in sorted(graph):
    if v not in index:
      strongconnect(v)
  return [(sorted(group), _cycle_in(group, graph)) for group in groups]


def _cycle_in(group: set[str], graph: dict[str, dict[str, Import]]) -> list[Import]:
  """A shortest cycle through the group's first module (breadth-first)."""
  start = min(group)
  paths = {start: []}
  frontier = [start]
  while frontier:
    nxt = []
    for v in frontier:
      for w, imp in sorted(graph.get(v, {}).items()):
        if w == start:
          return paths[v] + [imp]
        if w in group and w not in paths:
          paths[w] = paths[v] + [imp]
          nxt.append(w)
    frontier = nxt
  raise AssertionError(f'no cycle in {group}')


def problems(imports: list[Import], modules: Iterable[str]) -> list[str]:
  """Every breach of the module docstring's rules, one line each (file:line first)."""
  modules = set(modules)
  out = []
  loads = _module_level_libraries(imports)
  for imp in imports:
    src, dst = _top(imp.importer), _top(imp.target)
    if dst in LAYERS and LAYERS[dst] > LAYERS[src]:
      out.append(f'{imp.where}: {imp.importer} imports {imp.target}, a layer up '
                 f'({src} -> {dst}); imports point down: {" -> ".join(LAYERS)} from the top')
    if src == 't5x' and dst == 't5x_tasks' and imp.importer != ONLY_TASK_IMPORTER:
      out.append(f'{imp.where}: {imp.importer} imports {imp.target}; of the engine only '
                 f'{ONLY_TASK_IMPORTER} imports t5x_tasks')
    if imp.deferred:
      reason = _deferral_fault(imp, loads, modules)
      if reason:
        out.append(f'{imp.where}: import of {imp.target} inside a function: {reason}')
  for group, cycle in find_cycles(imports):
    chain = ' -> '.join([cycle[0].importer] + [imp.target for imp in cycle])
    edges = '; '.join(f'{imp.where}{" (deferred)" if imp.deferred else ""}' for imp in cycle)
    out.append(f'{cycle[0].where}: import cycle {chain} (imports at {edges}); modules that '
               f'reach each other: {", ".join(group)}')
  return out


def _deferral_fault(imp: Import, loads: dict[str, set[str]],
                    modules: set[str]) -> Optional[str]:
  """Why this deferred import breaks rule 4, or None when it is allowed."""
  src, dst = _top(imp.importer), _top(imp.target)
  own = loads.get(imp.importer, set())
  if dst not in LAYERS:
    if dst not in DEFERRABLE:
      return (f'{dst} is not a heavy or optional library (DEFERRABLE); import it at the top '
              'of the module')
    if dst in own:
      return (f'{imp.importer} already loads {dst} at import time, so deferring it saves '
              'nothing; import it at the top of the module')
    return None
  if dst == 't5x_tasks' and src == 't5x':
    return None if imp.importer == ONLY_TASK_IMPORTER else 'only t5x.data imports t5x_tasks'
  if src == TOP:
    return None
  if own & HEAVY:
    return (f'{imp.importer} is not light (it loads {", ".join(sorted(own & HEAVY))} at '
            'import time), so deferring a project module keeps nothing out; import it at the '
            'top, or break the cycle that the deferral hides')
  if not (loads.get(imp.target, set()) | {dst}) & HEAVY:
    return f'{imp.target} loads nothing heavy; import it at the top of the module'
  return None


def project_imports() -> tuple[list[Import], dict[str, str]]:
  modules = find_modules()
  imports = []
  for module, path in sorted(modules.items()):
    imports += read_imports(module, path, modules)
  return imports, modules


# ----------------------------------------------------------------------------- tests

def test_the_project_keeps_its_layers():
  imports, modules = project_imports()
  # The parse found the graph it claims to check.
  assert {'t5x.data', 't5x.train', 't5x_cli.main', 't5x_tasks.copoet'} <= set(modules)
  assert any(i.importer == 't5x.train' and i.target == 't5x.trainer' for i in imports)
  found = problems(imports, modules)
  assert not found, '\n' + '\n'.join(found)


def test_commands_read_models_through_the_loader_not_the_notebook_api():
  """t5x.api (`t5x.load`, for notebooks) is a leaf: train, infer, eval (through
  script_args), export, the planner and serving read models with t5x.loader."""
  imports, _ = project_imports()
  users = sorted({i.where for i in imports if i.target == 't5x.api'})
  assert not users, f'modules importing the notebook API: {users}'
  loader_users = {i.importer for i in imports if i.target == 't5x.loader'}
  assert {'t5x.api', 't5x.train', 't5x.infer', 't5x.script_args', 't5x.conversion.converters',
          't5x.conversion.hf_export', 't5x.serving.batched_sampler',
          't5x_cli.copoet_app'} <= loader_users


def test_the_checks_fail_on_a_synthetic_graph(tmp_path):
  """Modules written to a temporary tree: each rule must fire, with file and line."""
  files = {
      't5x_tasks/__init__.py': '',
      't5x_tasks/task.py': 'import seqio\nfrom t5x import light\n',  # up a layer
      't5x/__init__.py': '',
      't5x/light.py': ('import os\n\ndef f():\n  from . import heavy\n  import json\n'
                       '  from t5x import other\n'),
      't5x/heavy.py': 'import jax\nfrom t5x import other\n\ndef g():\n  import jax\n',
      't5x/other.py': 'def h():\n  from t5x import heavy\n',  # cycle hidden by deferral
      't5x/infer.py': ('from t5x_tasks import task\nfrom t5x_cli import main\nimport jax\n\n'
                       'def k():\n  from t5x import light\n'),
      't5x_cli/__init__.py': '',
      't5x_cli/main.py': 'def run():\n  from t5x import heavy\n',
  }
  for name, text in files.items():
    (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / name).write_text(text)
  modules = find_modules(str(tmp_path))
  imports = []
  for module, path in sorted(modules.items()):
    imports += read_imports(module, path, modules, str(tmp_path))
  assert Import('t5x.light', 't5x.heavy', 't5x/light.py:4', True) in imports  # relative
  found = problems(imports, modules)
  expect = {
      't5x_tasks/task.py:2: t5x_tasks.task imports t5x.light, a layer up',
      't5x/infer.py:2: t5x.infer imports t5x_cli.main, a layer up',
      't5x/infer.py:1: t5x.infer imports t5x_tasks.task; of the engine only t5x.data',
      't5x/light.py:5: import of json inside a function: json is not a heavy',
      't5x/heavy.py:5: import of jax inside a function: t5x.heavy already loads jax',
      't5x/light.py:6: import of t5x.other inside a function: t5x.other loads nothing',
      't5x/infer.py:6: import of t5x.light inside a function: t5x.infer is not light',
      't5x/heavy.py:2: import cycle t5x.heavy -> t5x.other -> t5x.heavy',
  }
  for start in expect:
    assert sum(line.startswith(start) for line in found) == 1, (start, found)
  assert len(found) == len(expect), found
  # Allowed: the light module defers a heavy one; the command defers an engine module.
  assert not any(line.startswith(('t5x/light.py:4', 't5x_cli/main.py')) for line in found)


@pytest.mark.parametrize('source, expected', [
    ('from . import b', 'pkg.sub.b'),
    ('from .. import c', 'pkg.c'),
    ('from ..c import name', 'pkg.c'),
    ('from pkg.sub import b', 'pkg.sub.b'),
    ('import pkg.sub.b as b', 'pkg.sub.b'),
    ('from pkg.sub.b import name', 'pkg.sub.b'),
])
def test_imports_resolve_to_modules(tmp_path, monkeypatch, source, expected):
  monkeypatch.setitem(LAYERS, 'pkg', 1)
  path = tmp_path / 'a.py'
  path.write_text(source + '\n')
  modules = {'pkg', 'pkg.sub', 'pkg.sub.a', 'pkg.sub.b', 'pkg.c'}
  [imp] = read_imports('pkg.sub.a', str(path), modules, str(tmp_path))
  assert imp.target == expected


def test_the_engine_finds_task_modules_without_a_list(tmp_path, monkeypatch):
  """t5x.data imports the modules that register SeqIO tasks, found by reading sources."""
  from t5x import data
  assert set(data.task_modules()) == {'t5x_tasks.copoet', 't5x_tasks.haiku', 't5x_tasks.ni',
                                      't5x_tasks.caption_contest'}
  package = tmp_path / 'more_tasks'
  package.mkdir()
  (package / '__init__.py').write_text('')
  (package / 'poems.py').write_text('import seqio\n\nseqio.TaskRegistry.add(\n  "x")\n')
  (package / 'scores.py').write_text('def score(): pass\n')
  monkeypatch.syspath_prepend(str(tmp_path))
  assert data.task_modules('more_tasks') == ['more_tasks.poems']

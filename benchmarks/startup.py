"""Start-up of the `t5x` command: wall time, modules loaded, and the slowest imports.

  python benchmarks/startup.py [--runs 3] [--json OUT]
  python benchmarks/startup.py --tree /tmp/old --entry PKG.MODULE:main   # an older tree

Each command runs in a fresh interpreter `--runs` times (wall time of the whole process,
as `/usr/bin/time -f %e` reports it), once more to count the modules it left in
sys.modules (and whether JAX and TensorFlow are among them), and once under
`python -X importtime` for the largest cumulative imports. An older tree (e.g. from
`git archive COMMIT | tar -x -C /tmp/old`) is measured by running from its folder, which
puts its packages first on sys.path.
"""
import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
COPOET_OUTPUT = ROOT.parent / 'shared' / 'data' / 'copoet' / 'outputs' / 'T03B' / 'ki_ke_2.output'
COMMANDS = {'t5x --help': ['--help'], 't5x score copoet ki_ke_2.output':
            ['score', 'copoet', str(COPOET_OUTPUT)]}

# Runs ENTRY(argv), then writes the module count and the heavy modules loaded to $PROBE_FD.
PROBE = '''
import importlib, json, os, sys
module, _, name = sys.argv[1].partition(':')
try:
  getattr(importlib.import_module(module), name)(sys.argv[2:])
except SystemExit:
  pass
with os.fdopen(int(os.environ['PROBE_FD']), 'w') as out:
  json.dump({'modules': len(sys.modules),
             'loaded': [m for m in ('jax', 'tensorflow', 'seqio') if m in sys.modules]}, out)
'''
RUN = 'import importlib, sys; m, _, f = sys.argv[1].partition(":"); ' \
      'sys.argv = sys.argv[1:]; getattr(importlib.import_module(m), f)(sys.argv[1:])'


def measure(entry: str, argv: list, tree: pathlib.Path, runs: int) -> dict:
  """{'wall_s': [...], 'modules': N, 'loaded': [...], 'slowest_imports': [(name, s)]}."""
  env = dict(os.environ, PYTHONPATH=str(tree))
  env.pop('TF_CPP_MIN_LOG_LEVEL', None)
  walls = []
  for _ in range(runs):
    start = time.perf_counter()
    subprocess.run([sys.executable, '-c', RUN, entry, *argv], cwd=tree, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, check=False)
    walls.append(round(time.perf_counter() - start, 2))
  read, write = os.pipe()
  subprocess.run([sys.executable, '-c', PROBE, entry, *argv], cwd=tree,
                 env=dict(env, PROBE_FD=str(write)), stdout=subprocess.DEVNULL,
                 stderr=subprocess.DEVNULL, pass_fds=(write,), check=False)
  os.close(write)
  with os.fdopen(read) as f:
    probe = json.load(f)
  proc = subprocess.run([sys.executable, '-X', 'importtime', '-c', RUN, entry, *argv],
                        cwd=tree, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                        text=True, check=False)
  imports = []
  for line in proc.stderr.splitlines():
    match = re.match(r'import time:\s+\d+ \|\s+(\d+) \|( *)(\S+)', line)
    if match and len(match[2]) <= 3 and match[3] != 'site' and not match[3].startswith('__'):
      # top-level and one level down; not Python's own start-up (site, editable installs)
      imports.append((match[3], int(match[1]) / 1e6))
  imports.sort(key=lambda item: -item[1])
  return {'wall_s': walls, **probe, 'slowest_imports': imports[:5]}


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
  parser.add_argument('--runs', type=int, default=3)
  parser.add_argument('--tree', type=pathlib.Path, default=ROOT, help='source tree to run')
  parser.add_argument('--entry', default='t5x_cli.main:main', help='MODULE:FUNCTION(argv)')
  parser.add_argument('--json', help='write the results here too')
  args = parser.parse_args()
  results = {name: measure(args.entry, argv, args.tree.resolve(), args.runs)
             for name, argv in COMMANDS.items()}
  print('| command | wall s | modules | loads | largest imports (cumulative s) |')
  print('|---|---|---|---|---|')
  for name, r in results.items():
    slowest = ', '.join(f'{m} {s:.2f}' for m, s in r['slowest_imports'][:3])
    print(f"| `{name}` | {min(r['wall_s']):.2f}-{max(r['wall_s']):.2f} | {r['modules']} | "
          f"{', '.join(r['loaded']) or 'neither JAX nor TF'} | {slowest} |")
  if args.json:
    pathlib.Path(args.json).write_text(json.dumps(results, indent=2))


if __name__ == '__main__':
  main()

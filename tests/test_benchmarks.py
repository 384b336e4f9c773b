"""Benchmarks run end to end on a tiny setting (`--smoke`); their arithmetic is exact.
Speed itself is measured by the benchmarks, never asserted here."""
import json
import sys

import jobs
from conftest import ENV, ROOT

sys.path.insert(0, str(ROOT / 'benchmarks'))
import train_step  # noqa: E402
from t5x.examples.t5.network import T5Config  # noqa: E402


def test_model_flops_match_a_hand_count():
  cfg = T5Config(**train_step.TINY)  # emb 64, 4 heads x 16, gated mlp 128, vocab 256, 2 + 2
  # Encoder: per layer attention 4*64*64 + mlp 3*64*128 + 2 norms of 64; relpos 4*32; norm.
  encoder = 2 * (4 * 64 * 64 + 3 * 64 * 128 + 2 * 64) + 4 * 32 + 64
  # Decoder: self + cross attention, mlp, 3 norms per layer; relpos; norm; logits 64*256.
  decoder = 2 * (8 * 64 * 64 + 3 * 64 * 128 + 3 * 64) + 4 * 32 + 64 + 64 * 256
  assert encoder + decoder + 256 * 64 == 230_400  # + the embedding: the model's count
  batch, inputs, targets, hd = 8, 32, 16, 64
  dense = 6 * (encoder * batch * inputs + decoder * batch * targets)
  attention = 12 * hd * batch * (2 * inputs ** 2 + 2 * (targets ** 2 + targets * inputs))
  assert train_step.model_flops_per_step(cfg, batch, inputs, targets) == dense + attention


@jobs.fixture(scope='module')
def train_step_smoke(folder):
  """(completed process, result JSON) of `benchmarks/train_step.py --smoke`."""
  out = folder / 'result.json'
  proc = jobs.run([sys.executable, 'benchmarks/train_step.py', '--smoke', '--json', str(out)],
                  cwd=ROOT, env=ENV, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  return proc, json.loads(out.read_text())


def test_train_step_benchmark_smoke(train_step_smoke):
  proc, result = train_step_smoke
  assert result['parameters'] == 230_400 and result['device'] == 'cpu'
  assert result['tokens_per_s'] > 0 and 0 < result['mfu'] < 1
  tokens = result['batch'] * (result['inputs_length'] + result['targets_length'])
  assert abs(result['tokens_per_s'] * result['step_s_median'] - tokens) < 1e-6 * tokens
  assert 'mfu:' in proc.stdout


def _run_train_benchmark(out, *extra):
  proc = jobs.run([sys.executable, 'benchmarks/train.py', '--smoke', '--out', str(out), *extra],
                  cwd=ROOT, env=ENV, timeout=900)
  assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
  return proc


@jobs.fixture(scope='module')
def train_compare_smoke(folder):
  """(completed process, output folder) of `benchmarks/train.py --smoke`."""
  return _run_train_benchmark(folder), folder


@jobs.fixture(scope='module')
def train_scaling_smoke(folder):
  """(completed process, output folder) of `benchmarks/train.py --smoke --scaling`."""
  return _run_train_benchmark(folder, '--scaling'), folder


def test_train_benchmark_smoke_compares_both_stacks_on_the_same_examples(train_compare_smoke):
  proc, out = train_compare_smoke
  result = json.loads((out / 'train_compare_tiny.json').read_text())
  assert (out / 'train_compare_tiny.png').stat().st_size > 0
  (round_,) = result['rounds']
  project, pytorch = round_['project']['windows'], round_['pytorch']['windows']
  # Both stacks trained the same examples in the same steps (4 steps, windows of 2).
  assert [w['step'] for w in project] == [w['step'] for w in pytorch] == [2, 4]
  for p, t in zip(project, pytorch):
    assert p['examples'] == t['examples'] > 0 and p['target_tokens'] == t['target_tokens'] > 0
  summary = round_['summary']
  for stack, windows in (('project', project), ('pytorch', pytorch)):
    s = summary[stack]
    steady = windows[1:]  # the first window holds compilation / warm-up
    seconds = sum(w['seconds'] for w in steady)
    assert s['examples_per_s'] == sum(w['examples'] for w in steady) / seconds
    assert s['final_loss'] == windows[-1]['loss'] and 0 < s['final_loss'] < 20
    assert s['peak_rss_gib'] > 0 and s['startup_s'] > 0
  ratio = summary['project']['examples_per_s'] / summary['pytorch']['examples_per_s']
  assert result['ratios'] == [ratio]
  assert proc.stdout.strip().splitlines()[-2] == (
      f'ratio (project/pytorch examples/s): {ratio:.2f}')
  assert 'same data: ' in proc.stdout


def test_train_benchmark_smoke_scaling(train_scaling_smoke):
  proc, out = train_scaling_smoke
  result = json.loads((out / 'train_scaling_tiny.json').read_text())
  assert (out / 'train_scaling_tiny.png').stat().st_size > 0
  grid = result['grid']
  points = [(r['batch'], r['length']) for r in result['rows']]
  assert points == [(grid['batch'], n) for n in grid['lengths']] + [
      (b, grid['length']) for b in grid['batches'] if (b, grid['length']) != (grid['batch'],
                                                                             grid['length'])]
  for r in result['rows']:
    assert r['project_s'] > 0 and r['pytorch_s'] > 0
    assert r['ratio'] == r['pytorch_s'] / r['project_s']
  assert 'scaling, T5 1.1 tiny' in proc.stdout


def test_decode_benchmark_runs_its_mesh_correctness_column():
  """`benchmarks/decode.py --mesh 2x2` on the quickstart preset: both stacks decode the
  batch, and the 2x2 simulated mesh decodes the tokens one device decodes."""
  proc = jobs.run([sys.executable, 'benchmarks/decode.py', '--preset', 'quickstart', '--reps',
                   '1', '--batch', '8', '--max_length', '8', '--mesh', '2x2'],
                  cwd=ROOT, env=ENV, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert 'ratio (ours / transformers)' in proc.stdout
  assert 'tokens identical to one device for seeds 0 and 1: yes' in proc.stdout, proc.stdout

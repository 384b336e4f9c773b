"""The input-pipeline benchmark runs end to end on its smoke setting and its arithmetic is
exact. Speed itself is measured by the benchmark, never asserted here."""
import json
import math
import subprocess
import sys

import numpy as np
import pytest

from conftest import ENV, ROOT

sys.path.insert(0, str(ROOT / 'benchmarks'))
import input_pipeline  # noqa: E402


def close(a: float, b: float) -> bool:
  return math.isclose(a, b, rel_tol=1e-9)


def test_batch_stats_count_packed_segments():
  ids = np.array([[1, 1, 2, 2, 2, 3, 0, 0],     # three examples, then padding
                  [1, 1, 1, 1, 1, 1, 1, 1],     # one example filling the row
                  [0, 0, 0, 0, 0, 0, 0, 0]])    # an empty row
  tokens = np.where(ids > 0, 7, 0)
  targets = np.array([[5, 1, 0, 0], [5, 5, 1, 0], [0, 0, 0, 0]])
  stats = input_pipeline.batch_stats(dict(encoder_segment_ids=ids, encoder_input_tokens=tokens,
                                          decoder_target_tokens=targets))
  assert stats == dict(examples=4, input_tokens=14, target_tokens=5, input_positions=24,
                       target_positions=12)


@pytest.mark.slow
def test_input_pipeline_benchmark_smoke(tmp_path):
  out = tmp_path / 'result.json'
  proc = subprocess.run(
      [sys.executable, 'benchmarks/input_pipeline.py', '--smoke', '--json', str(out),
       '--plot', str(tmp_path / 'plot.png')],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert set(result['families']) == set(input_pipeline.FAMILIES)
  assert result['machine']['cpu_count'] >= 1 and result['machine']['jax']
  for family, r in result['families'].items():
    assert r['task'] == input_pipeline.FAMILIES[family][0]
    assert r['batches'] >= 3 and r['examples'] >= r['batches'] * r['rows'] > 0
    assert close(r['examples_per_s'] * r['elapsed_s'], r['examples'])
    assert close(r['batches_per_s'] * r['elapsed_s'], r['batches'])
    assert close(r['target_tokens_per_s'] * r['elapsed_s'], r['target_tokens'])
    assert r['input_positions'] == r['batches'] * r['rows'] * r['inputs_length']
    assert r['target_positions'] == r['batches'] * r['rows'] * r['targets_length']
    for density in (r['input_density'], r['target_density'], r['density']):
      assert 0 < density <= 1
    assert close(r['density'], (r['input_tokens'] + r['target_tokens'])
                 / (r['input_positions'] + r['target_positions']))
    # The train step ran on copoet's batches (the default --step_on) for every family.
    assert r['step_on'] == 'copoet'
    assert close(r['step_examples_per_s'] * r['step_elapsed_s'], r['step_examples'])
    assert close(r['step_s'] * r['step_count'], r['step_elapsed_s'])
    assert close(r['ratio'], r['examples_per_s'] / r['step_examples_per_s'])
    assert math.isfinite(r['loss'])
  assert (tmp_path / 'plot.png').stat().st_size > 0
  assert result['min_ratio'] == min(r['ratio'] for r in result['families'].values())
  assert f'min ratio (pipeline/train step examples/s): {result["min_ratio"]:.2f}' in proc.stdout

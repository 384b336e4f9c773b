"""Benchmarks run end to end on a tiny setting (`--smoke`); their arithmetic is exact.
Speed itself is measured by the benchmarks, never asserted here."""
import json
import os
import subprocess
import sys

from conftest import ENV, ROOT

sys.path.insert(0, str(ROOT / 'benchmarks'))
import train_step  # noqa: E402
from t5x_engine.network import T5Config  # noqa: E402


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


def test_train_step_benchmark_smoke(tmp_path):
  out = tmp_path / 'result.json'
  proc = subprocess.run([sys.executable, 'benchmarks/train_step.py', '--smoke', '--json', str(out)],
                        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=600)
  assert proc.returncode == 0, proc.stderr[-3000:]
  result = json.loads(out.read_text())
  assert result['parameters'] == 230_400 and result['device'] == 'cpu'
  assert result['tokens_per_s'] > 0 and 0 < result['mfu'] < 1
  tokens = result['batch'] * (result['inputs_length'] + result['targets_length'])
  assert abs(result['tokens_per_s'] * result['step_s_median'] - tokens) < 1e-6 * tokens
  assert 'mfu:' in proc.stdout

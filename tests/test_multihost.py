"""Multi-host training on localhost: two processes with two CPU devices each, against one
process on one device. Also the flag checks that must fail before JAX is contacted."""
import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

import jobs
from conftest import ENV, ROOT
from t5x import checkpoints
from t5x import distributed
from t5x import model_config

WORKER = os.path.join(os.path.dirname(__file__), 'multihost_worker.py')


def _free_port() -> int:
  with socket.socket() as s:
    s.bind(('127.0.0.1', 0))
    return s.getsockname()[1]


def _run_two_processes(model_dir, steps):
  port = _free_port()
  procs = [jobs.popen(
      [sys.executable, WORKER, str(model_dir), str(steps), '2', '2',
       f'--coordinator_address=127.0.0.1:{port}', '--process_count=2', f'--process_index={i}',
       '--initialization_timeout=120'],
      env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
  outs = [jobs.communicate(p, timeout=600) for p in procs]
  for p, (out, err) in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
  return [_result(out) for out, _ in outs]


def _result(stdout: str) -> dict:
  lines = [l for l in stdout.splitlines() if l.startswith('RESULT ')]
  assert lines, stdout[-2000:]
  return json.loads(lines[-1][len('RESULT '):])


def _metrics(model_dir, split, key='loss'):
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    rows = [json.loads(line) for line in f]
  return {r['step']: r[key] for r in rows if r['split'] == split}


@jobs.fixture(scope='module')
def multihost_runs(root):
  """Two processes train 3 steps and save; a second launch restores and trains to 5.
  The reference is one process, one device, 5 steps on the same global batches; it runs
  beside the two launches (it shares nothing with them)."""
  def multi():
    return _run_two_processes(root / 'multi', 3), _run_two_processes(root / 'multi', 5)

  def single():
    proc = jobs.run([sys.executable, WORKER, str(root / 'single'), '5', '1', '1'], env=ENV,
                    timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _result(proc.stdout)

  (first, second), reference = jobs.concurrently(multi, single)
  return root, first, second, reference


def test_two_processes_share_one_mesh(multihost_runs):
  _, first, second, single = multihost_runs
  assert [r['process_index'] for r in first] == [0, 1]
  for r in first + second:
    assert r['process_count'] == 2 and r['devices'] == 4 and r['local_devices'] == 2
    assert r['mesh'] == {'data': 2, 'model': 2}
  assert single['devices'] == 1


def test_losses_equal_single_process_run(multihost_runs):
  root, _, _, _ = multihost_runs
  multi, single = _metrics(root / 'multi', 'train'), _metrics(root / 'single', 'train')
  assert sorted(multi) == sorted(single) == [1, 2, 3, 4, 5]  # 4-5 after a collective restore
  np.testing.assert_allclose([multi[s] for s in range(1, 6)], [single[s] for s in range(1, 6)],
                             atol=1e-5, rtol=0)
  assert abs(single[1] - single[2]) > 1e-3  # the loss moves, so equal losses mean equal updates


def test_hosts_with_unequal_eval_batches_agree_with_one_process(multihost_runs):
  root, _, _, _ = multihost_runs
  for key, tolerance in (('target_tokens', 0), ('loss_per_token', 1e-5)):
    multi = _metrics(root / 'multi', 'training_eval', key)
    single = _metrics(root / 'single', 'training_eval', key)
    assert sorted(multi) == sorted(single) == [3, 5]
    for step in (3, 5):
      assert multi[step] == pytest.approx(single[step], abs=tolerance)


def test_final_parameters_agree_and_every_process_saw_them(multihost_runs):
  _, _, second, single = multihost_runs
  assert second[0]['param_sum'] == second[1]['param_sum']
  assert second[0]['param_sum'] == pytest.approx(single['param_sum'], abs=1e-4)


def test_multihost_checkpoint_restores_in_one_process(multihost_runs):
  root, _, _, _ = multihost_runs
  multi = model_config.flatten(checkpoints.restore_target(root / 'multi' / 'checkpoint_3'))
  single = model_config.flatten(checkpoints.restore_target(root / 'single' / 'checkpoint_3'))
  assert sorted(multi) == sorted(single)
  worst = max(float(np.max(np.abs(multi[k] - single[k]))) for k in multi)
  assert worst <= 1e-5, worst
  assert sorted(os.listdir(root / 'multi')) == sorted(os.listdir(root / 'single'))


def test_only_process_zero_logs(multihost_runs):
  root, _, _, _ = multihost_runs
  lines = (root / 'multi' / 'metrics.jsonl').read_text().splitlines()
  assert len(lines) == 5 + 2  # one record per train step and per eval, not one per host
  assert len(os.listdir(root / 'multi' / 'train')) == 2  # one events file per launch


# ------------------------------------------------------------------ flag checks

@pytest.mark.parametrize('flags, message', [
    (['--coordinator_address=127.0.0.1:1234', '--process_count=2', '--process_index=2'],
     '--process_index=2 is out of range for --process_count=2; use 0 to 1'),
    (['--coordinator_address=127.0.0.1:1234', '--process_count=0', '--process_index=0'],
     '--process_count=0'),
    (['--coordinator_address=localhost', '--process_count=2', '--process_index=0'],
     "--coordinator_address='localhost': write HOST:PORT"),
    (['--process_count=2'], 'also give --coordinator_address, --process_index'),
    (['--process_index=x'], "--process_index='x' is not an integer"),
])
def test_bad_multihost_flags_name_the_numbers(flags, message):
  with pytest.raises(ValueError, match=None) as e:
    cfg, rest = distributed.parse_flags(flags)
    assert rest == []
    distributed.check(cfg)
  assert message in str(e.value)


def test_silent_coordinator_times_out_with_a_clear_error():
  port = _free_port()  # nothing listens there
  with pytest.raises(TimeoutError) as e:
    distributed.wait_for_coordinator('127.0.0.1', port, timeout=1.0)
  assert f'127.0.0.1:{port} did not answer within 1 s' in str(e.value)
  assert '--process_index=0' in str(e.value)


@pytest.mark.slow
def test_cli_rejects_bad_flags_before_compiling(tmp_path):
  port = _free_port()
  proc = subprocess.run(
      [sys.executable, '-m', 't5x_cli.main', 'train', '--gin_file=gin/quickstart.gin',
       f'--gin.MODEL_DIR="{tmp_path / "m"}"', f'--coordinator_address=127.0.0.1:{port}',
       '--process_count=2', '--process_index=1', '--initialization_timeout=1'],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert f'the coordinator at 127.0.0.1:{port} did not answer within 1 s' in proc.stderr
  assert 'Traceback' not in proc.stderr
  assert not (tmp_path / 'm').exists()

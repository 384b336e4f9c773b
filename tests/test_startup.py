"""Start-up: light commands load neither JAX nor TensorFlow; every command starts quietly.

`t5x --help`, `t5x score ...` and `t5x prep ...` run in a fresh interpreter, and the test
reads that interpreter's sys.modules afterwards (no timers). Training runs once, through
`python -m t5x.train`, with TensorFlow's log level unset, as a newcomer would run it.
"""
import json
import os
import subprocess
import sys
import textwrap

import pytest

from conftest import ENV, ROOT
from t5x import log_noise

DATA = ROOT / 't5x_tasks' / 'data'
HEAVY = ('jax', 'tensorflow', 'seqio', 'torch')

# Runs `t5x ARGV` in-process, then prints the exit code and which HEAVY modules loaded.
PROBE = textwrap.dedent('''
    import json, sys
    from t5x_cli import main as cli
    try:
      code = cli.main(sys.argv[1:])
    except SystemExit as e:  # argparse's --help
      code = e.code
    print(json.dumps({'code': code, 'loaded': [m for m in %r if m in sys.modules]}),
          file=sys.stderr)
''' % (HEAVY,))


def _probe(*argv, code: int = 0) -> list:
  """The HEAVY modules that `t5x ARGV` loaded; asserts its exit code."""
  proc = subprocess.run([sys.executable, '-c', PROBE, *map(str, argv)], cwd=ROOT, env=ENV,
                        capture_output=True, text=True, timeout=300)
  result = json.loads(proc.stderr.splitlines()[-1])
  assert result['code'] == code, proc.stderr[-3000:]
  return result['loaded']


def _predictions(tmp_path) -> dict:
  """{'{name}': path} of one-line prediction files for `t5x score NAME`."""
  records = {
      'haiku': {'prediction': 'an old silent pond / a frog jumps into the pond / splash '
                              'silence again', 'topic': 'pond'},
      'copoet': {'instruction': 'Write a line that ends with "rain"',
                 'prediction': 'and the rain'},
      'ni': {'id': 'a', 'prediction': 'x', 'references': ['x']}}
  paths = {}
  for name, record in records.items():
    paths['{%s}' % name] = tmp_path / f'{name}.jsonl'
    paths['{%s}' % name].write_text(json.dumps(record) + '\n')
  return {k: str(v) for k, v in paths.items()}


@pytest.mark.parametrize('argv', [
    ['--help'],
    ['score', '--help'],
    ['score', 'copoet', '{copoet}'],
    ['score', 'copoet', '{shared}/data/copoet/outputs/T03B/ki_ke_2.output'],
    ['score', 'haiku', '{haiku}'],
    ['score', 'ni', '--predictions', '{ni}', '--references', '{ni}'],
    ['prep', 'copoet-instructions', DATA / 'poem_lines_sample.txt', '{out}/pairs.jsonl'],
    ['prep', 'haiku', DATA / 'haiku_sample.txt', '{out}/haiku.parquet'],
    ['prep', 'ni', '--data', DATA / 'ni_raw_sample', '--out', '{out}/ni'],
], ids=lambda argv: ' '.join(str(a) for a in argv[:2]))
def test_light_commands_load_neither_jax_nor_tensorflow(tmp_path, argv):
  shared = ROOT.parent / 'shared'
  if any('{shared}' in str(a) for a in argv) and not shared.is_dir():
    pytest.skip(f'{shared} is absent (a user clone without the reference data)')
  fill = {'{shared}': str(shared), '{out}': str(tmp_path / 'out'), **_predictions(tmp_path)}
  args = [str(a) for a in argv]
  for key, value in fill.items():
    args = [a.replace(key, value) for a in args]
  assert _probe(*args) == []


def test_score_caption_loads_neither(tmp_path):
  # Answer A to every instance of the sample's matching split: a real run of the scorer.
  from t5x_tasks import caption_contest_data
  rows = caption_contest_data.load_rows('matching', 0, 'test')
  path = tmp_path / 'matching_split=0.json'
  path.write_text(json.dumps({r['instance_id']: 'A' for r in rows}))
  assert _probe('score', 'caption', '--task', 'matching', '--predictions', path) == []


def test_a_user_error_loads_neither(tmp_path):
  assert _probe('score', 'haiku', tmp_path, code=2) == []


def test_train_help_loads_no_jax():
  assert _probe('train', '--help') == []


# ----------------------------------------------------------------------------- quiet start

NOISE = ('Could not find cuda drivers', 'failed call to cuInit', 'oneDNN custom operations',
         'absl::InitializeLog', 'uncached FunctionDataset', 'will be removed during packing',
         'cpu_feature_guard')


@pytest.mark.slow
def test_python_m_train_runs_the_quickstart_quietly(tmp_path):
  """`python -m t5x.train` trains the quickstart as `t5x train` does, and its stderr holds
  the progress bar only: TensorFlow's log level is left unset, as a user's shell has it."""
  env = {k: v for k, v in ENV.items() if k != 'TF_CPP_MIN_LOG_LEVEL'}
  model_dir = tmp_path / 'model'
  proc = subprocess.run(
      [sys.executable, '-m', 't5x.train', '--gin_file=gin/quickstart.gin',
       f'--gin.MODEL_DIR="{model_dir}"', '--gin.TRAIN_STEPS=2', '--gin.EVAL_PERIOD=2',
       '--gin.SAVE_PERIOD=2'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert f'done: {model_dir}' in proc.stdout
  assert (model_dir / 'checkpoint_2').is_dir()
  assert [json.loads(l)['step'] for l in (model_dir / 'metrics.jsonl').read_text().splitlines()
          if 'loss' in l][-1] == 2
  lines = [l for l in proc.stderr.replace('\r', '\n').splitlines() if l.strip()]
  assert lines and all(l.startswith('train: ') for l in lines), lines  # the progress bar
  for noise in NOISE:
    assert noise not in proc.stderr


# What TensorFlow 2.21 writes to fd 2 on import on a machine without an NVIDIA driver
# (absl's format), with a real error among them; then what its first GPU probe writes.
ABSL = 'WARNING: All log messages before absl::InitializeLog() is called are written to STDERR'
ONEDNN = ('I0000 00:00:1796647905.390052    5999 port.cc:153] oneDNN custom operations are on. '
          'You may see slightly different numerical results due to floating-point round-off.')
REAL = 'E0000 00:00:1796647905.390101    5999 op_kernel.cc:1830] OP_REQUIRES failed: a real error'
CUDA = ('I0000 00:00:1796647905.391181    5999 cudart_stub.cc:31] Could not find cuda drivers on '
        'your machine, GPU will not be used.')
CU_INIT = ('E0000 00:00:1796647915.458123    5999 cuda_platform.cc:52] failed call to cuInit: '
           'INTERNAL: CUDA error: Failed call to cuInit: UNKNOWN ERROR (303)')

# A stand-in for TensorFlow that writes those lines as its C++ libraries do (fd 2).
FAKE_TF = f"""
import os
os.write(2, {(chr(10).join([ABSL, ONEDNN, REAL, CUDA]) + chr(10)).encode()!r})

class config:
  @staticmethod
  def list_physical_devices(kind):
    os.write(2, {(CU_INIT + chr(10)).encode()!r})
    return []
"""

IMPORT_FAKE = ('import os, sys\nfrom t5x import launch, log_noise\n'
               'log_noise.quiet_start(launch.debug_requested([])[0])\n'
               'os.write(2, b"before\\n")\nimport tensorflow\nos.write(2, b"after\\n")\n')


def _import_fake_tensorflow(tmp_path, **env) -> list:
  (tmp_path / 'tensorflow').mkdir(parents=True)
  (tmp_path / 'tensorflow' / '__init__.py').write_text(FAKE_TF)
  proc = subprocess.run([sys.executable, '-c', IMPORT_FAKE], cwd=ROOT, capture_output=True,
                        text=True, timeout=120,
                        env=dict(ENV, PYTHONPATH=os.pathsep.join([str(tmp_path), str(ROOT)]),
                                 **env))
  assert proc.returncode == 0, proc.stderr
  return proc.stderr.splitlines()


@pytest.mark.skipif(log_noise.nvidia_driver_present(), reason='CUDA lines are news with a driver')
def test_import_noise_dropped_and_a_real_error_kept(tmp_path):
  assert _import_fake_tensorflow(tmp_path / 'quiet') == ['before', REAL, 'after']
  # T5X_DEBUG=1 (or --debug) catches nothing, and probes nothing early.
  assert _import_fake_tensorflow(tmp_path / 'debug', T5X_DEBUG='1') == [
      'before', ABSL, ONEDNN, REAL, CUDA, 'after']


def test_cuda_lines_are_noise_only_without_a_driver():
  for line in (CUDA, CU_INIT):
    assert log_noise.is_noise(line, driver=False) and not log_noise.is_noise(line, driver=True)
  for line in (ABSL, ONEDNN):
    assert log_noise.is_noise(line, driver=False) and log_noise.is_noise(line, driver=True)
  assert not log_noise.is_noise(REAL, driver=False)
  assert not log_noise.is_noise('E0000 00:00:1 1 cuda_platform.cc:52] something else', False)


def test_seqio_advice_dropped_other_warnings_kept(caplog):
  import logging
  from absl import logging as absl_logging
  log_noise.quiet_start(debug=True)  # filters only; nothing caught
  absl = absl_logging.get_absl_logger()
  with caplog.at_level(logging.WARNING, logger='absl'):
    absl.warning('Using an uncached FunctionDataset for training is not recommended since it '
                 'often results in insufficient shuffling on restarts, resulting in overfitting.')
    absl.warning('Features not in `features_length` will be removed during packing: %s',
                 {'inputs_pretokenized', 'targets_pretokenized'})
    absl.warning('Features not in `features_length` will be removed during packing: %s',
                 {'inputs_pretokenized', 'my_feature'})
    absl.warning('a real warning')
  messages = [r.getMessage() for r in caplog.records]
  assert len(messages) == 2 and 'my_feature' in messages[0], messages
  assert messages[1] == 'a real warning'


def test_item_metadata_notice_dropped_only_beside_a_checkpoints_metadata(tmp_path, caplog):
  """orbax's "Metadata file does not exist" for an item read alone (the file is one level
  up) is noise; for a folder with no checkpoint metadata at all it stays."""
  import logging
  from absl import logging as absl_logging
  log_noise.quiet_start(debug=True)
  (tmp_path / 'checkpoint_3' / 'state').mkdir(parents=True)
  (tmp_path / 'checkpoint_3' / '_CHECKPOINT_METADATA').write_text('{}')
  (tmp_path / 'loose' / 'state').mkdir(parents=True)
  absl = absl_logging.get_absl_logger()
  with caplog.at_level(logging.WARNING, logger='absl'):
    for folder in ('checkpoint_3', 'loose'):
      absl.warning('Metadata file does not exist: %s',
                   tmp_path / folder / 'state' / '_CHECKPOINT_METADATA')
  assert [r.getMessage() for r in caplog.records] == [
      f'Metadata file does not exist: {tmp_path / "loose" / "state" / "_CHECKPOINT_METADATA"}']

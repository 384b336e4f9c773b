"""Training survives a damaged newest checkpoint, a full disk during a save, and kills at
awkward moments (issue 15, items 1-3). Tiny numpy runs, a few steps each."""
import errno
import json
import os
import pathlib
import shutil
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

import train_helpers
from t5x import checkpoints
from t5x import model_config
from t5x import partitioning
from t5x import trainer

from conftest import ENV, ROOT

TESTS = pathlib.Path(__file__).resolve().parent
T5X = [sys.executable, '-m', 't5x_cli.main', 'train']
TIMING = {'steps_per_sec', 'target_tokens_per_sec', 'examples_per_sec', 'window_sec'}

# `t5x train` on the tiny model and numpy batches (no SeqIO, no TensorFlow): saves every 2
# steps, evaluates every 4, logs every 3 (so windows also end at saves), 10 steps.
TINY_GIN = """
from __gin__ import dynamic_registration
import test_train_faults
import train_helpers
from t5x import partitioning
from t5x import utils
from t5x import train as train_script

MODEL_DIR = %gin.REQUIRED
TRAIN_STEPS = 10
train_script.train:
  model = @train_helpers.tiny_model()
  model_dir = %MODEL_DIR
  total_steps = %TRAIN_STEPS
  train_dataset_cfg = @train/utils.DatasetConfig()
  train_eval_dataset_cfg = @train_eval/utils.DatasetConfig()
  partitioner = @partitioning.PjitPartitioner()
  checkpoint_cfg = @utils.CheckpointConfig()
  get_dataset_fn = @test_train_faults.killing_dataset()
  eval_period = 4
  stats_period = 3
  show_progress = False
train/utils.DatasetConfig:
  mixture_or_task_name = 'numpy'
  task_feature_lengths = {}
  split = 'train'
  batch_size = 8
  shuffle = True
  seed = 0
train_eval/utils.DatasetConfig:
  mixture_or_task_name = 'numpy'
  task_feature_lengths = {}
  split = 'validation'
  batch_size = 8
  shuffle = False
  seed = 0
utils.CheckpointConfig.save = @utils.SaveCheckpointConfig()
utils.SaveCheckpointConfig:
  period = 2
  use_async = %USE_ASYNC
USE_ASYNC = False
"""


def killing_dataset():
  """train_helpers.numpy_dataset, which kills its own process (os._exit, no clean-up) when
  $KILL_AT says so: 'batch:N' as the train batch N is requested, 'eval:S' as the evaluation
  of step S starts (after step S's checkpoint is saved). With $WAIT_SAVES_AT=N, the train
  batch N is given only once orbax's background saves have ended."""
  batches = train_helpers.numpy_dataset()
  kind, _, at = os.environ.get('KILL_AT', ':').partition(':')
  wait_at = int(os.environ.get('WAIT_SAVES_AT', '-1'))
  seen = {'step': 0}

  def get_dataset(cfg, num_epochs=None, skip_batches=0):
    if num_epochs == 1 and kind == 'eval' and seen['step'] == int(at):
      os._exit(9)
    for i, batch in enumerate(batches(cfg, num_epochs, skip_batches), skip_batches):
      if num_epochs is None:
        if kind == 'batch' and i == int(at):
          os._exit(9)
        if i == wait_at:
          _wait_for_save_threads()
        seen['step'] = i + 1  # this batch makes step i + 1
      yield batch
  return get_dataset


def _tiny_cli(model_dir, tmp_path, kill_at=''):
  gin_file = tmp_path / 'tiny.gin'
  gin_file.write_text(TINY_GIN)
  env = dict(ENV, KILL_AT=kill_at, PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT)]))
  return subprocess.run(T5X + [f'--gin_file={gin_file}', f'--gin.MODEL_DIR="{model_dir}"'],
                        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)


def _records(model_dir):
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    return [json.loads(line) for line in f]


def _without_timing(records):
  return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def _run(model_dir, steps, **kw):
  """A tiny in-process run on numpy batches."""
  return train_helpers.numpy_run(model_dir, steps=steps, **kw)


def _assert_restorable(checkpoint, expected=None):
  params = model_config.flatten(checkpoints.restore_target(str(checkpoint)))
  assert params and all(np.isfinite(v).all() for v in params.values())
  if expected is not None:
    for key, value in model_config.flatten(expected).items():
      assert np.asarray(value).tobytes() == params[key].tobytes(), key


# ------------------------------------------------------------------ 1. damaged checkpoint

def _truncate_arrays(checkpoint):
  """Halves the largest array file of a checkpoint's state item (a copy cut short)."""
  largest = max((p for p in (checkpoint / 'state').rglob('*') if p.is_file() and
                 p.parent.name == 'd'), key=lambda p: p.stat().st_size)
  largest.write_bytes(largest.read_bytes()[: largest.stat().st_size // 2])


@pytest.mark.slow
def test_damaged_newest_checkpoint_is_moved_aside_and_the_step_saved_again(tmp_path, caplog):
  _run(tmp_path, 6)
  _truncate_arrays(tmp_path / 'checkpoint_6')
  with caplog.at_level('WARNING'):
    state = _run(tmp_path, 8, keep=2)  # before the fix: "Checkpoint for step 6 already exists"
  aside = sorted(tmp_path.glob('checkpoint_6.corrupt-*'))
  assert len(aside) == 1 and aside[0].name[len('checkpoint_6.corrupt-'):].endswith('Z')
  moved = [r.getMessage() for r in caplog.records if 'moved the unreadable' in r.getMessage()]
  assert len(moved) == 1 and str(tmp_path / 'checkpoint_6') in moved[0]
  assert str(aside[0]) in moved[0] and 'resuming from step 4' in moved[0]
  # The reason in plain words: tensorstore's own message, not orbax's bound-method repr.
  assert 'Error reading' in moved[0] and '<bound method' not in caplog.text
  # Step 6 was trained and saved again; keep=2 collects checkpoints, never the evidence.
  assert checkpoints.steps(str(tmp_path)) == [6, 8]
  assert (aside[0] / 'state').is_dir()
  _assert_restorable(tmp_path / 'checkpoint_8', state.params)
  steps = [r['step'] for r in _records(tmp_path) if r['split'] == 'train']
  assert steps == [1, 2, 3, 4, 5, 6, 7, 8]  # steps 5 and 6 once each, from the re-run
  # A third start finds step 8 done: nothing moved, nothing trained.
  _run(tmp_path, 8, keep=2)
  assert len(list(tmp_path.glob('checkpoint_*.corrupt-*'))) == 1


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_no_readable_checkpoint_is_an_error_that_moves_nothing(tmp_path):
  _run(tmp_path, 4)
  for step in (2, 4):
    _truncate_arrays(tmp_path / f'checkpoint_{step}')
  abstract = trainer.Trainer(train_helpers.tiny_model(),
                             partitioning.PjitPartitioner(1)).abstract_state
  ckpt = checkpoints.TrainCheckpointer(str(tmp_path), use_async=False)
  with pytest.raises(RuntimeError, match='no checkpoint in .* could be read') as raised:
    ckpt.restore_latest(abstract.params, abstract.opt_state)
  assert str(tmp_path / 'checkpoint_4') in str(raised.value)
  assert 'Error reading' in str(raised.value) and '<bound method' not in str(raised.value)
  assert checkpoints.steps(str(tmp_path)) == [2, 4] and not list(tmp_path.glob('*.corrupt-*'))


# ------------------------------------------------------------------------- 2. full disk

def _wait_for_save_threads():
  """Blocks until orbax's background save threads have ended (the failure is then known)."""
  deadline = time.time() + 120
  while any(t.name in ('async_save', 'save_finalize') and t.is_alive()
            for t in threading.enumerate()):
    assert time.time() < deadline, 'the background save never ended'
    time.sleep(0.01)


@pytest.mark.slow
def test_simulated_full_disk_stops_the_run_at_the_next_step(tmp_path, monkeypatch):
  from orbax.checkpoint._src.serialization import serialization
  real_write = serialization.async_serialize_from_host

  async def write(rslices, spec, **kw):
    if 'checkpoint_4' in json.dumps(spec, default=str):  # the disk is full from step 4 on
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(tmp_path / 'checkpoint_4'))
    return await real_write(rslices, spec, **kw)
  monkeypatch.setattr(serialization, 'async_serialize_from_host', write)

  numpy_batches = train_helpers.numpy_dataset()

  def get_dataset(cfg, num_epochs=None, skip_batches=0):
    for i, batch in enumerate(numpy_batches(cfg, num_epochs, skip_batches), skip_batches):
      if i == 4:  # step 5 starts once the failed save of step 4 has ended
        _wait_for_save_threads()
      yield batch

  with pytest.raises(checkpoints.CheckpointSaveError) as raised:
    _run(tmp_path, 10, use_async=True, get_dataset_fn=get_dataset)
  message = str(raised.value)
  assert message.startswith(f'could not save checkpoint {tmp_path / "checkpoint_4"}: ')
  assert 'No space left on device' in message and raised.value.errno == errno.ENOSPC
  assert f'the previous checkpoint {tmp_path / "checkpoint_2"} is intact' in message
  # Stopped at step 5, the first step after the failed save: step 4's record is the last.
  assert [r['step'] for r in _records(tmp_path)] == [1, 2, 3, 4]
  assert checkpoints.steps(str(tmp_path)) == [2]
  _assert_restorable(tmp_path / 'checkpoint_2')
  # With space again, the same run resumes from step 2, past the failed save's leftovers.
  monkeypatch.setattr(serialization, 'async_serialize_from_host', real_write)
  _run(tmp_path, 6, use_async=True)
  assert checkpoints.steps(str(tmp_path)) == [2, 4, 6]
  assert not list(tmp_path.glob('*.orbax-checkpoint-tmp*'))
  assert [r['step'] for r in _records(tmp_path)] == [1, 2, 3, 4, 5, 6]


def _mount_prefix():
  """The command prefix that gives a private mount namespace, or None."""
  if not shutil.which('unshare'):
    return None
  for prefix in (['unshare', '-Urm'], ['unshare', '-m']):
    try:
      if subprocess.run(prefix + ['sh', '-c', 'mount -t tmpfs -o size=64k tmpfs /mnt'],
                        capture_output=True, timeout=30).returncode == 0:
        return prefix
    except (OSError, subprocess.TimeoutExpired):
      pass
  return None


@pytest.mark.slow
def test_full_tmpfs_fails_the_cli_with_one_error_line(tmp_path):
  prefix = _mount_prefix()
  if prefix is None:
    pytest.skip('cannot mount a tmpfs here (no unshare, no user namespaces, not root); '
                'test_simulated_full_disk_stops_the_run_at_the_next_step covers the logic')
  disk, copy = tmp_path / 'disk', tmp_path / 'copy'
  disk.mkdir()
  gin_file = tmp_path / 'tiny.gin'
  gin_file.write_text(TINY_GIN)
  model_dir = disk / 'model'
  # A 1 MB disk holds one tiny checkpoint (about 0.7 MB), not two. The copy lets the
  # test look at MODEL_DIR after the private mount is gone.
  script = ('mount -t tmpfs -o size=1m tmpfs "$DISK" && '
            'timeout 240 "$@"; status=$?; cp -a "$DISK/model" "$COPY"; exit $status')
  # Step 5 waits for the failed save of step 4 to end, and no record is written between
  # that save and step 5's check (no evaluation), so the save is what fails first.
  env = dict(ENV, DISK=str(disk), COPY=str(copy), WAIT_SAVES_AT='4',
             PYTHONPATH=os.pathsep.join([str(TESTS), str(ROOT)]))
  proc = subprocess.run(
      prefix + ['sh', '-c', script, 'sh'] + T5X + [
          f'--gin_file={gin_file}', f'--gin.MODEL_DIR="{model_dir}"', '--gin.USE_ASYNC=True',
          '--gin.train_script.train.train_eval_dataset_cfg=None'],
      cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-3000:]  # 124 would be a hang cut by timeout
  # orbax logs the failure of each of its threads on one line each; their tracebacks, and
  # tensorstore's and asyncio's reports of the abandoned writes (about 1,000 lines), are
  # dropped by the CLI, which says what failed once, as its last line.
  errors = [line for line in proc.stderr.splitlines() if line.startswith('t5x train: error:')]
  assert len(errors) == 1, proc.stderr[-3000:]
  assert proc.stderr.splitlines()[-1] == errors[0], proc.stderr[-3000:]
  assert 'Traceback' not in proc.stderr and 'Event loop is closed' not in proc.stderr, (
      proc.stderr[-3000:])
  assert checkpoints.steps(str(copy)) == [2]
  assert errors[0].startswith(f't5x train: error: could not save checkpoint {model_dir}/'
                              'checkpoint_4: ')
  assert 'No space left on device' in errors[0]
  assert f'the previous checkpoint {model_dir}/checkpoint_2 is intact' in errors[0]
  _assert_restorable(copy / 'checkpoint_2')


# A MetricsWriter on a disk that fills up. tensorboardX's SummaryWriter writes from a thread
# through a bounded queue: once ENOSPC kills that thread, the next writes block for ever
# (the run "hangs at 800/800"). With SIMULATE=1 only the event file's writes fail (the
# case where metrics.jsonl still fits); else the folder is a real full tmpfs.
FILL_METRICS = """
import errno, os, sys
from t5x import metrics_writer
model_dir = sys.argv[1]
if os.environ.get('SIMULATE'):
  import tensorboardX.record_writer as rw
  class Full:
    def __init__(self, path): self.file = open(path, 'wb')
    def write(self, data): self.file.write(data)
    def flush(self):
      if os.environ.get('FULL'): raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
      self.file.flush()
    def close(self): self.file.close()
  rw.open_file = Full
writer = metrics_writer.MetricsWriter(model_dir, 0, 10**6, show_progress=False)
writer.write(1, 'train', {'loss': 1.0})
os.environ['FULL'] = '1'
if not os.environ.get('SIMULATE'):
  with open(os.path.join(model_dir, 'filler'), 'wb') as f:
    try:
      f.write(bytes(1 << 20))
    except OSError:
      pass
try:
  for step in range(2, 10**5):
    writer.write(step, 'train', {f'scalar_{i}': float(i) for i in range(12)})
except OSError as e:
  print('RAISED', os.path.relpath(e.filename, model_dir), e.strerror, flush=True)
  os._exit(3)
"""


def _fill_metrics(tmp_path, prefix, env):
  script = tmp_path / 'fill_metrics.py'
  script.write_text(FILL_METRICS)
  return subprocess.run(prefix + [sys.executable, str(script), str(tmp_path / 'disk')],
                        cwd=ROOT, env=dict(env, PYTHONPATH=str(ROOT)), capture_output=True,
                        text=True, timeout=60)  # a hang fails the test, not the suite


def test_event_file_write_error_is_raised_not_a_hang(tmp_path):
  (tmp_path / 'disk').mkdir()
  proc = _fill_metrics(tmp_path, [], dict(ENV, SIMULATE='1'))
  assert proc.returncode == 3, proc.stderr[-3000:]
  name, reason = proc.stdout.split()[1], proc.stdout.split(maxsplit=2)[2].strip()
  assert name.startswith('train/events.out.tfevents.') and reason == 'No space left on device'


@pytest.mark.slow
def test_full_tmpfs_metrics_write_names_its_file(tmp_path):
  prefix = _mount_prefix()
  if prefix is None:
    pytest.skip('cannot mount a tmpfs here; test_event_file_write_error_is_raised_not_a_hang '
                'simulates the full disk')
  (tmp_path / 'disk').mkdir()
  # sh -c SCRIPT python fill_metrics.py DISK: mount a 256 KB tmpfs on DISK, then run.
  mount = prefix + ['sh', '-c', 'mount -t tmpfs -o size=256k tmpfs "$2" && exec "$0" "$@"']
  proc = _fill_metrics(tmp_path, mount, ENV)
  assert proc.returncode == 3, proc.stderr[-3000:]
  name, reason = proc.stdout.split()[1], proc.stdout.split(maxsplit=2)[2].strip()
  assert name == 'metrics.jsonl' or name.startswith('train/events.out.tfevents.'), name
  assert reason == 'No space left on device'


# ------------------------------------------------------------------- 3. kills and records

@pytest.mark.slow
def test_records_after_kills_equal_an_uninterrupted_run(tmp_path):
  whole, killed = tmp_path / 'whole', tmp_path / 'killed'
  proc = _tiny_cli(whole, tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]
  expected = _records(whole)
  assert [(r['step'], r['split']) for r in expected] == [
      (2, 'train'), (3, 'train'), (4, 'train'), (4, 'training_eval'), (6, 'train'),
      (8, 'train'), (8, 'training_eval'), (9, 'train'), (10, 'train'), (10, 'training_eval')]

  # Killed between the save of step 4 and its evaluation.
  assert _tiny_cli(killed, tmp_path, 'eval:4').returncode == 9
  assert checkpoints.steps(str(killed)) == [2, 4]
  assert not any(r['split'] == 'training_eval' for r in _records(killed))
  # Killed as step 10 starts: step 9's record is newer than the checkpoint of step 8.
  assert _tiny_cli(killed, tmp_path, 'batch:9').returncode == 9
  assert max(r['step'] for r in _records(killed)) == 9
  # Killed after the final save, before the final evaluation and the plot.
  assert _tiny_cli(killed, tmp_path, 'eval:10').returncode == 9
  assert checkpoints.steps(str(killed))[-1] == 10 and not (killed / 'loss.png').exists()
  # A zero-byte event file, as a writer killed before its first flush leaves.
  (killed / 'train' / 'events.out.tfevents.0.killed').write_bytes(b'')
  proc = _tiny_cli(killed, tmp_path)
  assert proc.returncode == 0, proc.stderr[-3000:]

  records = _records(killed)
  assert _without_timing(records) == _without_timing(expected)
  assert len({(r['step'], r['split']) for r in records}) == len(records)
  assert (killed / 'loss.png').stat().st_size > 0
  events = list(killed.glob('*/events.out.tfevents.*'))
  assert events and all(p.stat().st_size > 0 for p in events)

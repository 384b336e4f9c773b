"""`t5x train` end to end: the quickstart, exact resume after SIGKILL, checkpoint
fall-back, NaN handling, and the errors a user meets first."""
import json
import logging
import os
import pathlib
import re
import shutil
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import jobs
import train_helpers
import t5x
from t5x import checkpoints
from t5x_cli import main as cli
from t5x import model_config
from t5x import partitioning
from t5x import train
from t5x import trainer
from t5x import utils

from conftest import ENV, ROOT

T5X = [sys.executable, '-m', 't5x_cli.main', 'train']


def _records(model_dir, split='train'):
  with open(os.path.join(model_dir, 'metrics.jsonl')) as f:
    return [r for r in map(json.loads, f) if r['split'] == split]


def test_quickstart_halves_the_loss_and_leaves_its_files(quickstart):
  model_dir, proc = quickstart
  train = _records(model_dir)
  assert train[-1]['step'] == 800
  assert train[-1]['loss_per_token'] < 0.5 * train[0]['loss_per_token']
  # Packed rows hold several examples: each record counts them and their rate.
  for r in train:
    assert r['num_examples'] > 32 * 10  # 10 steps of 32 rows, more than one example a row
    assert r['examples_per_sec'] * r['window_sec'] == pytest.approx(r['num_examples'], rel=1e-9)
    assert r['target_tokens_per_sec'] * r['window_sec'] == pytest.approx(r['target_tokens'],
                                                                         rel=1e-9)
  evals = _records(model_dir, 'training_eval')
  assert [r['step'] for r in evals] == [400, 800] and evals[-1]['accuracy'] > evals[0]['accuracy']
  for name in ('config.gin', 'model-info.txt', 'loss.png', 'checkpoint_800', 'checkpoint_400'):
    assert (model_dir / name).exists(), name
  assert list((model_dir / 'train').glob('events.out.tfevents.*'))
  assert list((model_dir / 'training_eval').glob('events.out.tfevents.*'))
  assert "MIXTURE_OR_TASK_NAME = 'copoet_instructions'" in (model_dir / 'config.gin').read_text()
  info = (model_dir / 'model-info.txt').read_text()
  assert "decoder/logits_dense/kernel  (64, 384)  ('embed', 'vocab')  (None, 'model')" in info
  assert 'training' in proc.stdout + proc.stderr and 'done:' in proc.stdout + proc.stderr


def test_load_accepts_a_training_model_dir(quickstart):
  model_dir, _ = quickstart
  model = t5x.load(str(model_dir))
  assert model.source.endswith('checkpoint_800')
  assert (model.config.emb_dim, model.config.vocab_size, model.config.dtype) == (64, 384, 'float32')
  target = checkpoints.restore_target(str(model_dir / 'checkpoint_800'))
  for key, value in model_config.flatten(target).items():
    np.testing.assert_array_equal(model_config.flatten(model.params)[key], value)
  logits = model.logits(np.array([[5, 6, 7, 1]]), np.array([[0, 5, 6]]))
  assert logits.shape == (1, 3, 384) and np.isfinite(logits).all()


def _resume_cmd(model_dir):
  return T5X + ['--gin_file=gin/quickstart.gin', f'--gin.MODEL_DIR="{model_dir}"',
                '--gin.TRAIN_STEPS=40', '--gin.SAVE_PERIOD=10', '--gin.DROPOUT_RATE=0.1',
                '--gin.BATCH_SIZE=16', '--gin.train_script.train.train_eval_dataset_cfg=None']


@pytest.mark.slow
def test_sigkill_and_restart_gives_bit_identical_parameters(tmp_path):
  whole, resumed = tmp_path / 'whole', tmp_path / 'resumed'

  def kill_and_resume():
    proc = jobs.popen(_resume_cmd(resumed), cwd=ROOT, env=ENV, stdout=subprocess.DEVNULL,
                      stderr=subprocess.DEVNULL)
    deadline = time.time() + 300
    while not (resumed / 'checkpoint_20' / 'commit_success.txt').exists():
      assert proc.poll() is None and time.time() < deadline, 'run ended before its checkpoint'
      time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    jobs.communicate(proc, timeout=60)
    killed_at = checkpoints.steps(str(resumed))[-1]
    assert 20 <= killed_at < 40, killed_at
    subprocess.run(_resume_cmd(resumed), cwd=ROOT, env=ENV, check=True, capture_output=True,
                   timeout=600)

  # The uninterrupted run is independent of the other: both run at once.
  jobs.concurrently(lambda: subprocess.run(_resume_cmd(whole), cwd=ROOT, env=ENV, check=True,
                                           capture_output=True, timeout=600),
                    kill_and_resume)
  a = model_config.flatten(checkpoints.restore_target(str(whole / 'checkpoint_40')))
  b = model_config.flatten(checkpoints.restore_target(str(resumed / 'checkpoint_40')))
  assert a.keys() == b.keys()
  for key in a:
    assert a[key].tobytes() == b[key].tobytes(), key


# ----------------------------------------------------------------------------- numpy runs

_run = train_helpers.numpy_run


@pytest.fixture(scope='module')
def six_steps(tmp_path_factory) -> pathlib.Path:
  """MODEL_DIR of one 6-step numpy run (checkpoints 2, 4, 6), for tests that only read it."""
  model_dir = tmp_path_factory.mktemp('six_steps') / 'model'
  _run(model_dir)
  return model_dir


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_unreadable_newest_checkpoint_falls_back_with_a_warning(six_steps, tmp_path, caplog):
  tmp_path = shutil.copytree(six_steps, tmp_path / 'model')  # damaged below: a copy
  assert checkpoints.steps(str(tmp_path)) == [2, 4, 6]
  newest = tmp_path / 'checkpoint_6'
  damaged = [p for p in (newest / 'state').rglob('*') if p.is_file() and p.stat().st_size > 0]
  for p in damaged:
    p.write_bytes(p.read_bytes()[: len(p.read_bytes()) // 2])
  abstract = trainer.Trainer(train_helpers.tiny_model(), partitioning.PjitPartitioner(1)).abstract_state
  ckpt = checkpoints.TrainCheckpointer(str(tmp_path), use_async=False)
  with caplog.at_level('WARNING'):
    step, params, _, position = ckpt.restore_latest(abstract.params, abstract.opt_state)
  assert (step, position) == (4, 4)
  assert str(newest) in caplog.text and 'unreadable' in caplog.text
  expected = model_config.flatten(checkpoints.restore_target(str(tmp_path / 'checkpoint_4')))
  for key, value in model_config.flatten(params).items():
    np.testing.assert_array_equal(np.asarray(value), expected[key])
  # With every checkpoint damaged the run refuses to start over from scratch.
  for name in ('checkpoint_2', 'checkpoint_4'):
    for p in (tmp_path / name / 'state').rglob('*'):
      if p.is_file():
        p.write_bytes(b'')
  with pytest.raises(RuntimeError, match='could be read'):
    ckpt.restore_latest(abstract.params, abstract.opt_state)


class _PoisonedModel(train_helpers.models.EncoderDecoderModel):
  """NaN loss on the batch whose first token is 99 (the numpy dataset's batch 2)."""

  def loss_fn(self, params, batch, dropout_rng, normalizer):
    loss, sums = super().loss_fn(params, batch, dropout_rng, normalizer)
    bad = batch['encoder_input_tokens'][0, 0] == 99
    sums = dict(sums, loss_sum=jax.numpy.where(bad, jax.numpy.nan, sums['loss_sum']))
    return jax.numpy.where(bad, jax.numpy.nan, loss), sums


def _poisoned():
  base = train_helpers.tiny_model()
  return _PoisonedModel(base.module, optimizer_def=base.optimizer_def,
                        loss_normalizing_factor='NUM_REAL_TARGET_TOKENS')


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_nan_loss_stops_or_skips(tmp_path):
  batches = train_helpers.numpy_dataset()

  def poisoned(cfg, **kw):
    for i, b in enumerate(batches(cfg, **kw)):
      if i + kw.get('skip_batches', 0) == 2:
        b['encoder_input_tokens'][0, 0] = 99
      yield b

  with pytest.raises(FloatingPointError, match='step 3.*nan_policy'):
    _run(tmp_path / 'stop', model=_poisoned(), get_dataset_fn=poisoned)
  state = _run(tmp_path / 'skip', model=_poisoned(), get_dataset_fn=poisoned, nan_policy='skip')
  assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree_util.tree_leaves(state.params))
  assert [r['skipped_steps'] for r in _records(tmp_path / 'skip')] == [0, 0, 1, 1, 1, 1]


# ----------------------------------------------------------------------------- bad input

def test_unknown_task_lists_the_closest_names():
  from t5x import data
  import t5x_tasks.copoet  # noqa: F401
  with pytest.raises(ValueError, match="'copoet_instructionz'.*closest registered: copoet_instructions"):
    data.get_task(utils.DatasetConfig('copoet_instructionz', {}, 'train', 8, False, 0))


def test_gin_typo_names_the_binding(tmp_path, capsys):
  code = cli.main(['train', '--gin_file=gin/quickstart.gin', f'--gin.MODEL_DIR="{tmp_path}"',
                   '--gin.network.T5Config.emb_dimm=8'])
  assert code == 2
  err = capsys.readouterr().err
  assert 'emb_dimm' in err
  assert not list(tmp_path.iterdir())


def test_unwritable_model_dir_fails_before_compiling(tmp_path):
  blocker = tmp_path / 'file'
  blocker.write_text('x')
  with pytest.raises(PermissionError, match='not writable'):
    _run(blocker / 'model')


def test_engine_imports_without_tensorflow():
  code = ('import sys, t5x, t5x.train, t5x.trainer, t5x_cli.main; '
          'assert "tensorflow" not in sys.modules and "seqio" not in sys.modules, "TF imported"')
  subprocess.run([sys.executable, '-c', code], check=True, env=ENV, timeout=120)


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_keep_last_n_checkpoints(tmp_path):
  cfg = utils.DatasetConfig('numpy', {}, 'train', 8, True, 0)
  train.train(model=train_helpers.tiny_model(), train_dataset_cfg=cfg,
              partitioner=partitioning.PjitPartitioner(1), model_dir=str(tmp_path), total_steps=8,
              checkpoint_cfg=utils.CheckpointConfig(
                  save=utils.SaveCheckpointConfig(period=2, keep=2, use_async=True)),
              get_dataset_fn=train_helpers.numpy_dataset(), show_progress=False)
  assert checkpoints.steps(str(tmp_path)) == [6, 8]


def _start_from(path, tmp_path, model):
  """The state a run in MODEL_DIR `tmp_path` starts with when INITIAL_CHECKPOINT_PATH is
  `path` (train's own restore order, without training a step)."""
  run = trainer.Trainer(model, partitioning.PjitPartitioner(1))
  ckpt = checkpoints.TrainCheckpointer(str(tmp_path), use_async=False)
  try:
    state, _, _ = train._restore_or_init(  # pylint: disable=protected-access
        run, ckpt, utils.CheckpointConfig(restore=utils.RestoreCheckpointConfig(path)), 0)
  finally:
    ckpt.close()
  return state


def _assert_same_params(state, expected):
  got = model_config.flatten(jax.device_get(state.params))
  want = model_config.flatten(expected)
  assert got.keys() == want.keys()
  for key in want:
    np.testing.assert_array_equal(got[key], np.asarray(want[key], np.float32))


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_initial_checkpoint_from_each_format(six_steps, tmp_path, shared_dir):
  # Our own MODEL_DIR (a finished run) ...
  ours = checkpoints.restore_target(str(six_steps / 'checkpoint_6'))
  start = _start_from(str(six_steps), tmp_path / 'a', train_helpers.tiny_model())
  _assert_same_params(start, ours)
  assert int(start.step) == 6  # steps are absolute, as in T5X: its step carries over
  # (read shard by shard into the mesh: the formats match, so no host-side copy)
  t = trainer.Trainer(train_helpers.tiny_model(), partitioning.PjitPartitioner())
  folder = train._matching_checkpoint(str(six_steps), t)
  assert folder == str(six_steps / 'checkpoint_6')
  sharded = train._restore_initial_sharded(folder, t)
  _assert_same_params(trainer.TrainState(step=0, params=sharded, opt_state=None), ours)
  other = trainer.Trainer(train_helpers.tiny_model(emb_dim=16), partitioning.PjitPartitioner())
  assert train._matching_checkpoint(str(six_steps), other) is None
  # ... a legacy T5X checkpoint (T5X's own tiny test checkpoint) ...
  fixture = shared_dir / 'fixtures' / 't5x' / 'test_t5_tiny.checkpoint_0'
  tiny = train_helpers.models.EncoderDecoderModel(train_helpers.Transformer(
      t5x.load(str(fixture)).config))
  _assert_same_params(_start_from(str(fixture), tmp_path / 'b', tiny),
                      t5x.load(str(fixture)).params)
  # ... and a Hugging Face folder.
  from t5x.conversion import converters
  converters.export_hf(str(six_steps), str(tmp_path / 'hf'))
  start = _start_from(str(tmp_path / 'hf'), tmp_path / 'c', train_helpers.tiny_model())
  _assert_same_params(start, ours)
  assert int(start.step) == 0  # a Hugging Face folder has no step


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_model_dir_checkpoint_wins_over_initial_checkpoint(six_steps, tmp_path):
  # MODEL_DIR holds checkpoint 2 only (a copy of the 6-step run's); the initial one is 6.
  shutil.copytree(six_steps, tmp_path / 'run', ignore=shutil.ignore_patterns('checkpoint_[46]'))
  assert checkpoints.steps(str(tmp_path / 'run')) == [2]
  resumed = _start_from(str(six_steps), tmp_path / 'run', train_helpers.tiny_model())
  assert int(resumed.step) == 2
  _assert_same_params(resumed, checkpoints.restore_target(str(tmp_path / 'run' / 'checkpoint_2')))


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_initial_checkpoint_of_another_shape_names_the_parameter(six_steps, tmp_path):
  message = f"{six_steps}: parameter 'decoder/decoder_norm/scale' has shape (32,), expected (16,)"
  with pytest.raises(ValueError, match=re.escape(message)):
    _start_from(str(six_steps), tmp_path / 'x', train_helpers.tiny_model(emb_dim=16))


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_random_seed_none_draws_and_logs_a_seed(tmp_path, caplog):
  with caplog.at_level(logging.WARNING):
    state = train_helpers.numpy_run(tmp_path / 'a', steps=1, random_seed=None)
  (seed,) = re.findall(r'RANDOM_SEED is None: drew seed (\d+)', caplog.text)
  again = train_helpers.numpy_run(tmp_path / 'b', steps=1, random_seed=int(seed))
  for a, b in zip(jax.tree_util.tree_leaves(jax.device_get(state.params)),
                  jax.tree_util.tree_leaves(jax.device_get(again.params))):
    assert np.asarray(a).tobytes() == np.asarray(b).tobytes()


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_t5x_save_and_restore_settings(tmp_path, caplog):
  """SaveCheckpointConfig.checkpoint_steps and .dtype; RestoreCheckpointConfig.fallback_to_scratch."""
  save = utils.SaveCheckpointConfig(period=4, use_async=False, checkpoint_steps=(1,),
                                    dtype='bfloat16')
  train_helpers.numpy_run(tmp_path / 'a', steps=4, checkpoint_cfg=utils.CheckpointConfig(save=save))
  assert checkpoints.steps(str(tmp_path / 'a')) == [1, 4]
  stored = model_config.flatten(checkpoints.restore_target(str(tmp_path / 'a' / 'checkpoint_4')))
  assert {str(v.dtype) for v in stored.values()} == {'bfloat16'}

  empty = tmp_path / 'nothing_here'
  empty.mkdir()
  restore = utils.RestoreCheckpointConfig(str(empty), fallback_to_scratch=True)
  with caplog.at_level(logging.WARNING):
    state = train_helpers.numpy_run(tmp_path / 'b', steps=1, checkpoint_cfg=utils.CheckpointConfig(
        save=utils.SaveCheckpointConfig(period=1, use_async=False), restore=restore))
  assert int(state.step) == 1 and 'holds no model; starting from scratch' in caplog.text
  with pytest.raises(FileNotFoundError, match='nothing_here: found no model'):
    train_helpers.numpy_run(tmp_path / 'c', steps=1, checkpoint_cfg=utils.CheckpointConfig(
        restore=utils.RestoreCheckpointConfig(str(empty))))
  with pytest.raises(ValueError, match=r"RestoreCheckpointConfig.mode='newest'; use one of"):
    utils.RestoreCheckpointConfig('x', mode='newest')

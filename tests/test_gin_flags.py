"""T5X-style gin flags and search paths for `t5x train`."""
import gin
import pytest

from t5x import gin_utils


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def test_flags_split_like_t5x():
  files, bindings, paths, rest = gin_utils.split_flags([
      '--gin_file=quickstart.gin', '--gin_file', 'runs/finetune.gin',
      '--gin.MODEL_DIR="/tmp/m"', '--gin_bindings=TRAIN_STEPS = 5',
      '--gin_search_paths=/a,/b', '--unknown'])
  assert files == ['quickstart.gin', 'runs/finetune.gin']
  assert bindings == ['MODEL_DIR = "/tmp/m"', 'TRAIN_STEPS = 5']
  assert paths == ['/a', '/b'] and rest == ['--unknown']
  with pytest.raises(ValueError, match='--gin.NAME=VALUE'):
    gin_utils.split_flags(['--gin.MODEL_DIR'])


def test_relative_gin_files_resolve_from_any_folder(tmp_path, monkeypatch):
  monkeypatch.chdir(tmp_path)
  gin_utils.parse(['quickstart.gin'], ['MODEL_DIR = "/tmp/m"', 'TRAIN_STEPS = 5'])
  assert gin.query_parameter('MODEL_DIR/gin.macro.value') == '/tmp/m'
  assert gin.query_parameter('TRAIN_STEPS/gin.macro.value') == 5
  # The included files' T5X fine-tuning defaults are in force.
  assert gin.query_parameter('optimizers.adafactor.decay_rate') == 0.8
  assert gin.query_parameter('optimizers.adafactor.clipping_threshold') == 1.0
  assert gin.query_parameter('optimizers.adafactor.momentum') is None
  assert gin.query_parameter('utils.create_learning_rate_scheduler.factors') == 'constant'
  assert gin.query_parameter('utils.create_learning_rate_scheduler.base_learning_rate') == 0.001
  assert gin.query_parameter('Z_LOSS/gin.macro.value') == 0.0001
  assert gin.query_parameter('train/utils.DatasetConfig.pack') is True


def test_finetune_defaults_without_overrides():
  gin_utils.parse(['models/t5_1_1/base.gin', 'runs/finetune.gin'], [])
  assert gin.query_parameter('DROPOUT_RATE/gin.macro.value') == 0.1
  assert gin.query_parameter('LOSS_NORMALIZING_FACTOR/gin.macro.value') is None
  assert gin.query_parameter('BATCH_SIZE/gin.macro.value') == 128


def test_extra_search_path_and_unquoted_strings(tmp_path):
  (tmp_path / 'mine.gin').write_text("include 'quickstart.gin'\nTRAIN_STEPS = 7\n")
  gin_utils.parse(['mine.gin'], [], [str(tmp_path)])
  assert gin.query_parameter('TRAIN_STEPS/gin.macro.value') == 7
  gin.clear_config()
  with pytest.raises(Exception, match='MODEL_DIR'):
    gin_utils.parse(['quickstart.gin'], ['MODEL_DIR = /tmp/m'])

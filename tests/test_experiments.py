"""Every experiment gin file parses, names registered tasks, and builds its model
abstractly (jax.eval_shape: nothing is allocated, nothing trains)."""
import pathlib

import gin
import jax
import numpy as np
import pytest
import seqio

from t5x import gin_utils
from t5x import model_config
from t5x import models
from t5x import utils

GIN_DIR = pathlib.Path(__file__).resolve().parents[1] / 'gin'
ADD_ONS = {'lora.gin'}  # given after an experiment file; tested in test_lora.py
EXPERIMENTS = sorted(p.name for p in GIN_DIR.glob('*.gin') if p.name not in ADD_ONS)
EXPECTED = {  # file -> (task or mixture, the model size file it must match)
    'copoet_11b.gin': ('copoet_instructions', 'models/t5_1_1/xxl.gin'),
    'copoet_3b.gin': ('copoet_instructions', 'models/t5_1_1/xl.gin'),
    'haiku_base.gin': ('haiku_multitask', 'models/t5_1_1/base.gin'),
    'quickstart.gin': ('copoet_instructions', None),
    'tk_instruct_3b.gin': ('ni_def_pos2', 'models/t5_1_1/xl.gin'),
    'tk_instruct_11b.gin': ('ni_def_pos2', 'models/t5_1_1/xxl.gin'),
    'caption_matching_11b.gin': ('caption_matching_split0', 'models/t5_1_0/11B.gin'),
    'caption_ranking_11b.gin': ('caption_ranking_split0', 'models/t5_1_0/11B.gin'),
    'caption_explanation_11b.gin': ('caption_explanation_split0', 'models/t5_1_0/11B.gin'),
}


@pytest.fixture(autouse=True)
def clean_gin():
  gin.clear_config()
  yield
  gin.clear_config()


def _macro(name):
  return gin.query_parameter(f'{name}/gin.macro.value')


def _size_params(size_file):
  gin_utils.parse([size_file], [])
  from t5x.examples.t5 import network
  count = model_config.count_params(gin.get_configurable(network.T5Config)())
  gin.clear_config()
  return count


def test_every_experiment_is_covered():
  assert set(EXPERIMENTS) == set(EXPECTED)


@pytest.mark.parametrize('name', EXPERIMENTS)
def test_experiment_parses_and_builds_abstractly(name):
  task_name, size_file = EXPECTED[name]
  expected_params = _size_params(size_file) if size_file else None
  gin_utils.parse([str(GIN_DIR / name)], [])
  with gin.config_scope('train'):
    train_cfg = gin.get_configurable(utils.DatasetConfig)()
  assert train_cfg.mixture_or_task_name == task_name
  task = seqio.get_mixture_or_task(task_name)  # registered by the file's imports
  assert 'train' in task.splits
  model = gin.get_configurable(models.EncoderDecoderModel)()
  abstract = jax.eval_shape(model.init_params, jax.random.PRNGKey(0))
  count = sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(abstract))
  if expected_params:
    assert count == expected_params
  batch = _macro('BATCH_SIZE')
  microbatches = gin.query_parameter('trainer.Trainer.num_microbatches') or 1
  assert batch % microbatches == 0


def test_copoet_11b_recipe():
  gin_utils.parse([str(GIN_DIR / 'copoet_11b.gin')], [])
  assert _macro('TASK_FEATURE_LENGTHS') == {'inputs': 64, 'targets': 64}
  assert gin.query_parameter('utils.create_learning_rate_scheduler.base_learning_rate') == 1e-4
  assert gin.query_parameter('partitioning.PjitPartitioner.num_partitions') == 8
  assert gin.query_parameter(
      'partitioning.standard_logical_axis_rules.parameter_partitioning_dims') == 2
  # Effective batch ~1008 through microbatching, one epoch of ~808k pairs.
  assert _macro('BATCH_SIZE') == 1008 and _macro('BATCH_SIZE') * _macro('TRAIN_STEPS') >= 808_000
  assert _macro('INITIAL_CHECKPOINT_PATH').endswith('t5_1_1_xxl/checkpoint_1000000')


def test_caption_split_is_a_gin_variable():
  gin_utils.parse([str(GIN_DIR / 'caption_ranking_11b.gin')], ['SPLIT = 3'])
  with gin.config_scope('train'):
    assert gin.get_configurable(utils.DatasetConfig)().mixture_or_task_name == (
        'caption_ranking_split3')


def test_tk_instruct_recipe():
  gin_utils.parse([str(GIN_DIR / 'tk_instruct_3b.gin')], [])
  assert _macro('TASK_FEATURE_LENGTHS') == {'inputs': 1024, 'targets': 128}
  assert gin.query_parameter('utils.create_learning_rate_scheduler.base_learning_rate') == 5e-5
  assert gin.query_parameter('utils.create_learning_rate_scheduler.factors') == 'constant'
  assert _macro('BATCH_SIZE') == 16
  assert _macro('TRAIN_STEPS') * 16 >= 2 * 757 * 100  # 2 epochs
  assert _macro('INITIAL_CHECKPOINT_PATH').endswith('t5_1_1_lm100k_xl/checkpoint_1100000')

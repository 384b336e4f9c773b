"""T5X's own run configs (../shared/t5x_configs, read in place) drive `t5x train`: their
`import __main__ as train_script` resolves, and every binding they make is accepted."""
import json
import logging

import gin
import pytest

from t5x import launch

# What a T5X user adds for a task of this project: its module and vocabulary.
TASK_GIN = """
from __gin__ import dynamic_registration
import t5x_tasks.copoet
from t5x_tasks import vocabularies
vocabularies.task_vocabulary.name = 'quickstart'
VOCABULARY = @vocabularies.quickstart_vocabulary()
NUM_EMBEDDINGS = 384
"""


@pytest.fixture
def clean_gin():
  yield
  gin.clear_config()


def test_t5x_finetune_gin_trains_three_steps(shared_dir, tmp_path, caplog, clean_gin):
  task_gin = tmp_path / 'task.gin'
  task_gin.write_text(TASK_GIN)
  model_dir = tmp_path / 'model'
  with caplog.at_level(logging.WARNING):
    launch.run('train', [
        '--gin_file=models/t5_1_1/tiny.gin',
        f'--gin_file={shared_dir}/t5x_configs/configs/runs/finetune.gin',
        f'--gin_file={task_gin}',
        f'--gin.MODEL_DIR="{model_dir}"', '--gin.MIXTURE_OR_TASK_NAME="copoet_instructions"',
        "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 24}", '--gin.TRAIN_STEPS=3',
        '--gin.INITIAL_CHECKPOINT_PATH=None', '--gin.USE_CACHED_TASKS=False',
        '--gin.BATCH_SIZE=8', '--gin.EVAL_STEPS=2', '--alsologtostderr'])
  assert (model_dir / 'checkpoint_3').is_dir()  # T5X saves every 5000 steps and at the end
  with open(model_dir / 'metrics.jsonl') as f:
    records = [json.loads(line) for line in f]
  splits = {(r['step'], r['split']) for r in records}
  assert {(3, 'train'), (3, 'training_eval')} <= splits
  # T5X's infer_eval config (lengths None: SeqIO computes them) ran at the final step;
  # copoet_instructions has no metric functions (`t5x score` scores it), so SeqIO says so.
  assert 'No eval task with valid split and metric fn found' in caplog.text
  # T5X's RANDOM_SEED = None draws a seed; its evaluator class is named as inert here.
  assert 'RANDOM_SEED is None: drew seed' in caplog.text
  assert 'T5X train arguments with no effect here: inference_evaluator_cls' in caplog.text
  assert 'summarize_config_fn' not in caplog.text  # it writes config.gin here
  # The run's config.gin names the real module, so it reads back outside `t5x train`.
  config = (model_dir / 'config.gin').read_text()
  assert 'import t5x.train as train_script' in config and '__main__' not in config
  assert 'train_script.train.relative_steps = %TRAIN_STEPS_RELATIVE' in config

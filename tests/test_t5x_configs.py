"""T5X's own gin files (../shared/t5x_configs, read in place) drive this project: a T5X
model file with T5X's `runs/finetune.gin` trains through `python -m t5x.train`, and every
model file at T5X's paths (T5X's and this project's `t5x/examples/t5/...`) builds."""
import json
import subprocess
import sys

import gin
import pytest

from conftest import ENV, ROOT
from t5x import adafactor
from t5x import gin_utils
from t5x import model_config

# What a T5X user adds for a task of this project: its module and vocabulary.
TASK_GIN = """
from __gin__ import dynamic_registration
import t5x_tasks.copoet
from t5x_tasks import vocabularies
vocabularies.task_vocabulary.name = 'quickstart'
VOCABULARY = @vocabularies.quickstart_vocabulary()
NUM_EMBEDDINGS = 384
"""
# T5X's model files in ../shared and the sizes they set (T5X's numbers).
T5X_MODEL_FILES = {'tiny': (8, 4, 3, 16, 2), 'small': (512, 6, 64, 1024, 8),
                   'base': (768, 12, 64, 2048, 12)}


def _t5x_script(module, configs, run_gin, task_gin, cwd, *bindings):
  """`python -m t5x.MODULE` with T5X's tiny model file and T5X's run file, read in place."""
  return subprocess.run(
      [sys.executable, '-m', module, f'--gin_search_paths={configs}',
       '--gin_file=examples/t5/t5_1_1/tiny.gin', f'--gin_file=configs/runs/{run_gin}',
       f'--gin_file={task_gin}', *bindings, '--alsologtostderr'],
      cwd=cwd, env=ENV, capture_output=True, text=True, timeout=600)


def _t5x_train(configs, run_gin, tmp_path, *bindings):
  """(MODEL_DIR, finished process) of `python -m t5x.train` with T5X's tiny.gin and
  `run_gin` on copoet_instructions, batches of 8."""
  task_gin = tmp_path / 'task.gin'
  task_gin.write_text(TASK_GIN)
  model_dir = tmp_path / 'model'
  proc = _t5x_script(
      't5x.train', configs, run_gin, task_gin, tmp_path, f'--gin.MODEL_DIR="{model_dir}"',
      '--gin.MIXTURE_OR_TASK_NAME="copoet_instructions"', '--gin.USE_CACHED_TASKS=False',
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 24}", '--gin.BATCH_SIZE=8',
      *bindings)
  return model_dir, proc


@pytest.fixture(scope='module')
def t5x_tiny_run(shared_dir, tmp_path_factory):
  """(MODEL_DIR, finished process) of T5X's tiny.gin + runs/finetune.gin, 3 steps."""
  return _t5x_train(shared_dir / 't5x_configs', 'finetune.gin',
                    tmp_path_factory.mktemp('t5x_tiny'), '--gin.TRAIN_STEPS=3',
                    '--gin.INITIAL_CHECKPOINT_PATH=None', '--gin.EVAL_STEPS=2')


@pytest.mark.slow
def test_t5x_tiny_with_t5x_finetune_gin_trains_three_steps(t5x_tiny_run):
  model_dir, proc = t5x_tiny_run
  assert proc.returncode == 0, proc.stderr[-3000:]
  assert (model_dir / 'checkpoint_3').is_dir()  # T5X saves every 5000 steps and at the end
  with open(model_dir / 'metrics.jsonl') as f:
    splits = {(r['step'], r['split']) for r in map(json.loads, f)}
  assert {(3, 'train'), (3, 'training_eval')} <= splits
  # T5X's infer_eval config (lengths None: SeqIO computes them) ran at the final step;
  # copoet_instructions has no metric functions (`t5x score` scores it), so SeqIO says so.
  assert 'No eval task with valid split and metric fn found' in proc.stderr
  # T5X's RANDOM_SEED = None draws a seed; its evaluator class and config summary act here.
  assert 'RANDOM_SEED is None: drew seed' in proc.stderr
  assert 'no effect here' not in proc.stderr
  # The run's config.gin names the real modules, so it reads back outside `t5x train`;
  # T5X's network sizes and T5X's Adafactor are what trained.
  config = (model_dir / 'config.gin').read_text()
  assert 'import t5x.train as train_script' in config and '__main__' not in config
  assert 'OPTIMIZER = @adafactor.Adafactor()' in config
  fields = gin_utils.config_from_gin(str(model_dir / 'config.gin'))
  assert (fields['emb_dim'], fields['head_dim'], fields['mlp_dim']) == (8, 3, 16)


@pytest.mark.slow
def test_t5x_infer_and_eval_gin_decode_and_evaluate(t5x_tiny_run, shared_dir):
  """T5X's runs/infer.gin and runs/eval.gin with the same model file, as T5X users run
  them (`python -m t5x.infer`, `python -m t5x.eval`), on the checkpoint trained above."""
  model_dir, _ = t5x_tiny_run
  configs, work = shared_dir / 't5x_configs', model_dir.parent
  common = [f'--gin.CHECKPOINT_PATH="{model_dir}/checkpoint_3"', '--gin.DROPOUT_RATE=0.0']
  infer = _t5x_script(
      't5x.infer', configs, 'infer.gin', work / 'task.gin', work, *common,
      f'--gin.INFER_OUTPUT_DIR="{work / "infer"}"', '--gin.MIXTURE_OR_TASK_NAME="copoet_ki_ke"',
      "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 24}", '--gin.infer.num_shards=2',
      '--gin.infer.mode="predict_with_aux"')
  assert infer.returncode == 0, infer.stderr[-3000:]
  # T5X's output name and marker; shard 0 of 2 holds every other example of 40.
  out = work / 'infer' / 'copoet_ki_ke-predict_with_aux.jsonl-00000-of-00002'
  rows = [json.loads(line) for line in out.read_text().splitlines()]
  assert len(rows) == 20 and (work / 'infer' / f'{out.name}.COMPLETED').exists()
  assert all(isinstance(r['prediction'], str) and r['aux']['scores'] < 0 for r in rows)
  assert (work / 'infer' / 'config.gin').exists()  # shard 0 writes the config, as T5X
  evaluation = _t5x_script(
      't5x.eval', configs, 'eval.gin', work / 'task.gin', work, *common,
      f'--gin.EVAL_OUTPUT_DIR="{work / "eval"}"',
      '--gin.MIXTURE_OR_TASK_NAME="copoet_compositional"', '--gin.utils.DatasetConfig.batch_size=8')
  assert evaluation.returncode == 0, evaluation.stderr[-3000:]
  # TASK_FEATURE_LENGTHS = None (eval.gin's) and seqio.Evaluator's gin-bound loggers: the
  # JSON logger's files and the TensorBoard logger's events are T5X's, beside this project's.
  ours = json.loads((work / 'eval' / 'metrics-step3.json').read_text())['metrics']
  theirs = json.loads((work / 'eval' / 'copoet_compositional-metrics.jsonl').read_text())
  assert theirs['step'] == 3
  assert theirs['success_rate'] == ours['copoet_compositional']['success_rate']
  assert (work / 'eval' / 'copoet_compositional-000003.jsonl').exists()
  assert list((work / 'eval' / 'copoet_compositional').glob('events.out.tfevents.*'))


def _model(files, search_paths=(), bindings=()):
  """The EncoderDecoderModel a model gin file builds (gin parsed afresh, then cleared)."""
  gin.clear_config()
  try:
    gin_utils.parse(files, ['DROPOUT_RATE = 0.0', *bindings], search_paths)
    return gin.query_parameter('%MODEL').scoped_configurable_fn()
  finally:
    gin.clear_config()


@pytest.mark.parametrize('size', sorted(T5X_MODEL_FILES))
def test_t5x_model_files_build(shared_dir, size):
  # Offline, the gs:// vocabulary is overridden the T5X way.
  spiece = ROOT / 't5x_tasks' / 'data' / 'copoet_sample' / 'spiece.model'
  model = _model([f'examples/t5/t5_1_1/{size}.gin'], [str(shared_dir / 't5x_configs')],
                 [f"seqio.SentencePieceVocabulary.sentencepiece_model_file = '{spiece}'"])
  cfg = model.module.config
  assert isinstance(model.optimizer_def, adafactor.Adafactor)
  vocab = model.input_vocabulary
  assert vocab.sentencepiece_model_file == str(spiece)
  # read from that file: its 320 pieces plus the sentinels the model file asks for
  assert vocab.tokenizer.get_piece_size() == 320 + vocab.extra_ids
  emb, heads, head_dim, mlp, layers = T5X_MODEL_FILES[size]
  assert (cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim, cfg.num_encoder_layers,
          cfg.num_decoder_layers) == (emb, heads, head_dim, mlp, layers, layers)
  assert model_config.count_params(cfg) > 0  # the whole model built abstractly


@pytest.mark.parametrize('path', sorted(
    str(p.relative_to(ROOT)) for p in (ROOT / 't5x' / 'examples' / 't5').glob('*/*.gin')))
def test_model_files_at_t5x_paths_equal_the_project_files(path):
  """t5x/examples/t5/FAMILY/SIZE.gin is models/FAMILY/SIZE.gin; both use T5X's Adafactor."""
  family, size = path.split('/')[-2], path.split('/')[-1]
  ours, theirs = _model([f'models/{family}/{size}']), _model([path])
  assert theirs.module.config == ours.module.config
  assert isinstance(theirs.optimizer_def, adafactor.Adafactor)
  assert theirs.optimizer_def.logical_factor_rules == adafactor.standard_logical_factor_rules()


def test_t5x_macros_reach_their_bindings():
  """T5X's macros in this project's run configs do what they do in T5X's."""
  gin.clear_config()
  try:
    gin_utils.parse(['quickstart.gin'], [
        'EVAL_STEPS = 3', "MIXTURE_OR_TASK_MODULE = 't5x_tasks.haiku'",
        'USE_HARDWARE_RNG = True', 'TRAIN_STEPS_RELATIVE = 5', 'RANDOM_SEED = None'])
    def value(selector):  # a binding to a macro -> the macro's value
      bound = gin.query_parameter(selector)
      return gin.query_parameter(str(bound)) if str(bound).startswith('%') else bound
    train = lambda name: value(f'train_script.train.{name}')
    assert (train('eval_steps'), train('relative_steps'), train('random_seed')) == (3, 5, None)
    assert train('use_hardware_rng') is True
    for scope in ('train', 'train_eval'):
      assert value(f'{scope}/utils.DatasetConfig.module') == 't5x_tasks.haiku', scope
  finally:
    gin.clear_config()


@pytest.mark.parametrize('binding, named', [
    ('adafactor.Adafactor.no_such_argument = 1',
     "Configurable 'adafactor.Adafactor' doesn't have a parameter named 'no_such_argument'"),
    ('partitioning.NoSuchPartitioner.num_partitions = 2',
     "Couldn't resolve selector partitioning.NoSuchPartitioner")])
def test_unknown_t5x_binding_is_gins_error_with_file_and_line(shared_dir, tmp_path, capsys,
                                                              binding, named):
  from t5x_cli import main as cli
  user_gin = tmp_path / 'user.gin'
  user_gin.write_text('from __gin__ import dynamic_registration\nfrom t5x import adafactor\n'
                      f'from t5x import partitioning\n{binding}\n')
  code = cli.main(['train', f'--gin_search_paths={shared_dir / "t5x_configs"}',
                   '--gin_file=examples/t5/t5_1_1/tiny.gin', f'--gin_file={user_gin}'])
  err = capsys.readouterr().err
  assert code == 2, err
  assert named in err and f'In file "{user_gin}", line 4' in err


@pytest.mark.slow
def test_t5x_pretrain_gin_trains_with_its_schedule(shared_dir, tmp_path):
  """T5X's runs/pretrain.gin: packed examples, RestoreCheckpointConfig.path = [] (from
  scratch), RANDOM_SEED = None, and its rsqrt schedule: 1.0 / sqrt(10_000 warm-up steps)."""
  model_dir, proc = _t5x_train(shared_dir / 't5x_configs', 'pretrain.gin', tmp_path,
                               '--gin.TRAIN_STEPS=2', '--gin.DROPOUT_RATE=0.0',
                               '--gin.train_script.train.eval_steps=1')
  assert proc.returncode == 0, proc.stderr[-3000:]
  with open(model_dir / 'metrics.jsonl') as f:
    train = [r for r in map(json.loads, f) if r['split'] == 'train']
  assert train[-1]['step'] == 2 and train[-1]['learning_rate'] == pytest.approx(0.01)
  assert train[-1]['num_examples'] > 2 * 8  # packed: more examples than rows
  assert (model_dir / 'checkpoint_2' / 'state').is_dir()

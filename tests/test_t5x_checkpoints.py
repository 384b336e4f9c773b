"""Checkpoints written by upstream T5X (../shared/fixtures/t5x/t5x_orbax) are read here:
by `t5x.load`, as INITIAL_CHECKPOINT_PATH, and as a MODEL_DIR that training resumes."""
import json
import logging
import shutil

import jax
import numpy as np
import pytest

import t5x
import train_helpers
from upstream_fixtures import FIXTURE_NETWORK, npz_tree
from t5x import adafactor
from t5x import checkpoints
from t5x import model_config
from t5x import partitioning
from t5x import trainer


@pytest.fixture(scope='module')
def t5x_orbax(shared_dir):
  return shared_dir / 'fixtures' / 't5x' / 't5x_orbax'


@pytest.fixture(scope='module')
def step3(t5x_orbax):
  """(params, param_states) of T5X's in-memory state at step 3, flat."""
  npz = t5x_orbax / 'state_step3.npz'
  return npz_tree(npz, "['target']"), npz_tree(npz, "['state']['param_states']")


def _t5x_model():
  opt = adafactor.Adafactor(decay_rate=0.8, step_offset=0,
                            logical_factor_rules=adafactor.standard_logical_factor_rules())
  return train_helpers.tiny_model(opt, **FIXTURE_NETWORK)


def _equal_bits(got: dict, want: dict) -> None:
  assert got.keys() == want.keys()
  for key, value in want.items():
    assert np.asarray(got[key]).tobytes() == value.tobytes(), key


def test_load_reads_a_t5x_model_dir_and_checkpoint(t5x_orbax, step3):
  for path in (t5x_orbax, t5x_orbax / 'checkpoint_3'):
    model = t5x.load(str(path))
    assert model.source.endswith('checkpoint_3')
    _equal_bits(model_config.flatten(model.params), step3[0])
  cfg = model.config
  assert (cfg.vocab_size, cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim) == (
      384, 64, 4, 16, 128)
  logits = model.logits(np.array([[5, 6, 7, 1]]), np.array([[0, 5, 6]]))
  assert logits.shape == (1, 3, 384) and np.isfinite(logits).all()


def test_initial_checkpoint_starts_from_its_parameters(t5x_orbax, step3, tmp_path):
  tr = trainer.Trainer(_t5x_model(), partitioning.PjitPartitioner(1))
  from t5x import train
  folder = train._matching_checkpoint(str(t5x_orbax / 'checkpoint_3'), tr)
  params = train._restore_initial_sharded(folder, tr)
  _equal_bits(model_config.flatten(jax.device_get(params)), step3[0])


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_model_dir_resumes_bit_for_bit_then_trains(t5x_orbax, step3, tmp_path, caplog):
  model_dir = tmp_path / 'model'
  shutil.copytree(t5x_orbax, model_dir)  # training writes beside T5X's checkpoints
  tr = trainer.Trainer(_t5x_model(), partitioning.PjitPartitioner(1))
  abstract = tr.abstract_state
  with caplog.at_level(logging.WARNING):
    step, params, opt_state, position = checkpoints.TrainCheckpointer(
        str(model_dir), use_async=False).restore_latest(abstract.params, abstract.opt_state)
  assert (step, position) == (3, 0) and 'holds no input position (T5X wrote it)' in caplog.text
  _equal_bits(model_config.flatten(jax.device_get(params)), step3[0])
  (slots,) = [s for s in opt_state if isinstance(s, adafactor.AdafactorState)]
  assert int(slots.step) == 3
  _equal_bits(model_config.flatten(jax.device_get(slots.param_states)), step3[1])

  state = train_helpers.numpy_run(model_dir, _t5x_model(), steps=5, period=1)
  assert checkpoints.steps(str(model_dir)) == [0, 3, 4, 5]
  assert int(state.step) == 5 and int(state.opt_state[-1].step) == 5
  moved = model_config.flatten(jax.device_get(state.params))
  assert max(float(np.max(np.abs(moved[k] - v))) for k, v in step3[0].items()) > 1e-5


def _tree(path):
  """{key path: (shape, dtype)} of an Orbax item, read by orbax alone (as T5X reads it)."""
  import orbax.checkpoint as ocp
  metadata = ocp.PyTreeCheckpointer().metadata(str(path)).item_metadata
  return {k: (tuple(v.shape), str(v.dtype)) for k, v in model_config.flatten(metadata).items()}


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_written_checkpoints_are_t5xs_layout(t5x_orbax, tmp_path):
  """What `t5x train` writes for T5X's network and Adafactor is what T5X writes: the same
  items and handlers, and a `state` item with T5X's tree, shapes and dtypes. Resuming it
  here is bit for bit, input position included."""
  model_dir = tmp_path / 'model'
  state = train_helpers.numpy_run(model_dir, _t5x_model(), steps=3, period=3)
  ours, theirs = model_dir / 'checkpoint_3', t5x_orbax / 'checkpoint_3'
  meta = lambda folder: json.loads((folder / '_CHECKPOINT_METADATA').read_text())
  assert meta(ours)['item_handlers'] == meta(theirs)['item_handlers'] == {
      'dataset': 't5x.checkpoints.DatasetCheckpointHandler',
      'state': 'orbax.checkpoint._src.handlers.pytree_checkpoint_handler.PyTreeCheckpointHandler'}
  assert {p.name for p in ours.iterdir() if p.is_dir()} == {'state', 'dataset'}
  assert _tree(ours / 'state') == _tree(theirs / 'state')
  assert len(_tree(ours / 'state')) == 52 * 5 + 1  # parameters, 4 slots each, the step
  item = lambda folder: json.loads((folder / 'state' / '_METADATA').read_text())
  assert item(ours)['use_ocdbt'] == item(theirs)['use_ocdbt'] is True
  # T5X's restore of the item (orbax with T5X's structure, nothing of this project).
  import orbax.checkpoint as ocp
  restored = ocp.PyTreeCheckpointer().restore(str(ours / 'state'))
  _equal_bits(model_config.flatten(restored['target']),
              model_config.flatten(jax.device_get(state.params)))
  (slots,) = [s for s in state.opt_state if isinstance(s, adafactor.AdafactorState)]
  _equal_bits(model_config.flatten(restored['state']['param_states']),
              model_config.flatten(jax.device_get(slots.param_states)))
  assert int(restored['state']['step']) == 3
  # And back here.
  tr = trainer.Trainer(_t5x_model(), partitioning.PjitPartitioner(1))
  step, params, opt_state, position = checkpoints.TrainCheckpointer(
      str(model_dir), use_async=False).restore_latest(tr.abstract_state.params,
                                                      tr.abstract_state.opt_state)
  assert (step, position) == (3, 3)
  _equal_bits(model_config.flatten(jax.device_get(params)),
              model_config.flatten(jax.device_get(state.params)))
  (back,) = [s for s in opt_state if isinstance(s, adafactor.AdafactorState)]
  _equal_bits(model_config.flatten(jax.device_get(back.param_states)),
              model_config.flatten(jax.device_get(slots.param_states)))


def test_t5x_optimizer_state_needs_t5x_adafactor(t5x_orbax, tmp_path):
  model_dir = tmp_path / 'model'
  shutil.copytree(t5x_orbax, model_dir)
  tr = trainer.Trainer(train_helpers.tiny_model(**FIXTURE_NETWORK), partitioning.PjitPartitioner(1))
  with pytest.raises(ValueError, match=r"checkpoint_3 holds T5X's Adafactor state.*"
                     r'@adafactor.Adafactor'):
    checkpoints.TrainCheckpointer(str(model_dir), use_async=False).restore_latest(
        tr.abstract_state.params, tr.abstract_state.opt_state)


def test_step_folders_nothing_reads_are_an_error(tmp_path):
  (tmp_path / 'checkpoint_7').mkdir()
  (tmp_path / 'checkpoint_7' / 'checkpoint').write_bytes(b'msgpack?')
  tr = trainer.Trainer(train_helpers.tiny_model(), partitioning.PjitPartitioner(1))
  with pytest.raises(RuntimeError, match=r'checkpoint_7 but no checkpoint this project reads'):
    checkpoints.TrainCheckpointer(str(tmp_path), use_async=False).restore_latest(
        tr.abstract_state.params, tr.abstract_state.opt_state)


def _from_initial(model_dir, path, steps, **kw):
  from t5x import utils
  return train_helpers.numpy_run(
      model_dir, _t5x_model(), steps=steps, checkpoint_cfg=utils.CheckpointConfig(
          save=utils.SaveCheckpointConfig(period=1, use_async=False),
          restore=utils.RestoreCheckpointConfig(str(path))), **kw)


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_legacy_step_1000_with_train_steps_1001_runs_one_step(shared_dir, tmp_path):
  legacy = shared_dir / 'fixtures' / 't5x' / 't5x_legacy_step1000' / 'checkpoint_1000'
  state = _from_initial(tmp_path / 'model', legacy, 1001)
  assert int(state.step) == 1001
  assert checkpoints.steps(str(tmp_path / 'model')) == [1001]  # one step, one save
  with open(tmp_path / 'model' / 'metrics.jsonl') as f:
    assert [r['step'] for r in map(json.loads, f) if r['split'] == 'train'] == [1001]


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_relative_steps_count_from_the_initial_step(t5x_orbax, tmp_path):
  state = _from_initial(tmp_path / 'model', t5x_orbax / 'checkpoint_3', 1, relative_steps=2)
  assert int(state.step) == 5
  assert checkpoints.steps(str(tmp_path / 'model')) == [4, 5]


def test_train_steps_below_the_initial_step_says_steps_are_absolute(t5x_orbax, tmp_path):
  with pytest.raises(ValueError, match=r'INITIAL_CHECKPOINT_PATH is at step 3 and '
                     r'TRAIN_STEPS=2: steps are absolute.*TRAIN_STEPS = 3 \+ N'):
    _from_initial(tmp_path / 'model', t5x_orbax / 'checkpoint_3', 2)


def test_initial_step_of_each_kind_of_path(t5x_orbax, shared_dir, tmp_path):
  from t5x import train
  legacy = shared_dir / 'fixtures' / 't5x' / 't5x_legacy_step1000' / 'checkpoint_1000'
  assert train.initial_step(str(t5x_orbax)) == 3  # a MODEL_DIR: its latest checkpoint
  assert train.initial_step(str(t5x_orbax / 'checkpoint_0')) == 0
  assert train.initial_step(str(legacy)) == 1000
  assert train.initial_step(str(legacy / 'checkpoint')) == 1000
  assert train.initial_step(str(tmp_path)) == 0  # e.g. a Hugging Face folder



def test_export_hf_of_a_t5x_model_dir(t5x_orbax, step3, tmp_path):
  from t5x.conversion import converters
  converters.export_hf(str(t5x_orbax), str(tmp_path / 'hf'))  # verifies against transformers
  _equal_bits(model_config.flatten(t5x.load(str(tmp_path / 'hf')).params), step3[0])


def test_a_checkpoint_of_another_model_names_the_first_parameter(t5x_orbax):
  """Read in place (nothing is written): the mismatch is found from the metadata alone."""
  for kw, message in (
      (dict(mlp_dim=256), r"checkpoint_3 does not match this run's model: its parameter "
       r"'decoder/layers_0/mlp/wi_0/kernel' has shape \(64, 128\), the model's is \(64, 256\)"),
      (dict(num_decoder_layers=3), r"it has no parameter 'decoder/layers_2/"),
      (dict(num_decoder_layers=1), r"it holds parameter 'decoder/layers_1/.*', which the model lacks")):
    tr = trainer.Trainer(train_helpers.tiny_model(_t5x_model().optimizer_def, **{**FIXTURE_NETWORK, **kw}),
                         partitioning.PjitPartitioner(1))
    with pytest.raises(checkpoints.ModelMismatch, match=message):
      checkpoints.TrainCheckpointer(str(t5x_orbax), use_async=False).restore_latest(
          tr.abstract_state.params, tr.abstract_state.opt_state)


@pytest.mark.slow  # reads a checkpoint, decodes, loads transformers
def test_t5x_infer_and_export_read_a_t5x_model_dir(t5x_orbax, step3, tmp_path, capsys):
  from t5x_cli import main as cli
  task_gin = tmp_path / 'task.gin'
  task_gin.write_text('from __gin__ import dynamic_registration\nimport t5x_tasks.copoet\n'
                      "from t5x_tasks import vocabularies\n"
                      "vocabularies.task_vocabulary.name = 'quickstart'\n")
  assert cli.main(['infer', '--gin_file=runs/infer.gin', f'--gin_file={task_gin}',
                   f'--gin.CHECKPOINT_PATH="{t5x_orbax}"', f'--gin.INFER_OUTPUT_DIR="{tmp_path}"',
                   '--gin.MIXTURE_OR_TASK_NAME="copoet_ki_ke"',
                   "--gin.TASK_FEATURE_LENGTHS={'inputs': 32, 'targets': 24}",
                   '--gin.infer.mode="score"']) == 0
  rows = [json.loads(line) for line in
          (tmp_path / 'copoet_ki_ke-score.jsonl-00000-of-00001').read_text().splitlines()]
  assert len(rows) == 40 and all(r['score'] < 0 for r in rows)
  assert cli.main(['export-hf', str(t5x_orbax), str(tmp_path / 'hf')]) == 0
  assert 'greedy decodes of 4 prompts token-identical' in capsys.readouterr().out
  import safetensors.numpy
  exported = safetensors.numpy.load_file(str(tmp_path / 'hf' / 'model.safetensors'))
  assert exported['shared.weight'].tobytes() == step3[0]['token_embedder/embedding'].tobytes()


@pytest.mark.slow  # two training loops with checkpoints
def test_initial_checkpoint_continues_t5x_adafactor_like_a_resume(t5x_orbax, step3, tmp_path):
  """As in T5X, a fine-tune from a checkpoint holding T5X's Adafactor state continues that
  state and step: INITIAL_CHECKPOINT_PATH = checkpoint_3 trained to step 5 equals
  checkpoint_3 resumed as MODEL_DIR and trained to step 5, bit for bit."""
  started = _from_initial(tmp_path / 'initial', t5x_orbax / 'checkpoint_3', 5)
  resumed_dir = tmp_path / 'resumed'
  resumed_dir.mkdir()
  shutil.copytree(t5x_orbax / 'checkpoint_3', resumed_dir / 'checkpoint_3')
  resumed = train_helpers.numpy_run(resumed_dir, _t5x_model(), steps=5, period=1)
  assert int(started.step) == int(resumed.step) == 5
  leaves = lambda tree: dict(enumerate(map(np.asarray, jax.tree_util.tree_leaves(tree))))
  _equal_bits(leaves((started.params, started.opt_state)),
              leaves((resumed.params, resumed.opt_state)))
  (slots,) = [s for s in started.opt_state if isinstance(s, adafactor.AdafactorState)]
  assert int(slots.step) == 5  # the optimizer's own count went on from 3

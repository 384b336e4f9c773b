"""LoRA: fresh adapters change nothing, training moves only them, merging is exact, and
merged models load, export and resume like any other."""
import os
import pathlib

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hf_models
import train_helpers
import t5x
from t5x import (checkpoints, model_config, optimizers, partitioning, train, trainer,
                 utils)
from t5x.conversion import converters, hf_convert
from t5x.lora import adapters as lora
from t5x_cli import main as cli
from t5x.examples.t5.network import LORA_TARGETS, T5Config, Transformer

ROOT = pathlib.Path(__file__).resolve().parents[1]
SPIECE = ROOT / 't5x_tasks' / 'data' / 'copoet_sample' / 'spiece.model'  # 320 pieces
# Every target, so that attention and gated-MLP adapters are all exercised.
LORA = dict(vocab_size=384, lora_rank=4, lora_alpha=8.0, lora_targets=LORA_TARGETS)
STEPS = 3


def _logits(cfg: T5Config, params, seed: int = 0) -> np.ndarray:
  enc, dec = hf_models.padded_batch(cfg.vocab_size, seed=seed)
  apply = jax.jit(lambda p: Transformer(cfg).apply({'params': p}, enc, dec, enable_dropout=False))
  return np.asarray(apply(params))


def _flat(tree) -> dict:
  return {k: np.asarray(v) for k, v in model_config.flatten(jax.device_get(tree)).items()}


def _lora_trainer(num_microbatches=None) -> trainer.Trainer:
  # Adafactor without parameter scaling: with it, lora_b (zeros) would move by ~1e-3 * lr.
  model = train_helpers.tiny_model(optimizers.adafactor(multiply_by_parameter_scale=False),
                                   **LORA)
  return trainer.Trainer(model, partitioning.PjitPartitioner(1),
                         learning_rate_fn=optimizers.create_learning_rate_scheduler('constant', 1e-2),
                         num_microbatches=num_microbatches)


@pytest.fixture(scope='module')
def trained():
  """(trainer, parameters at step 0 (numpy), final train state) of 3 LoRA steps."""
  t = _lora_trainer()
  state = t.init_state(jax.random.PRNGKey(0))
  start = jax.device_get(state.params)
  for i in range(STEPS):
    state, _ = t.train_step(state, train_helpers.numpy_batch(i), jax.random.PRNGKey(1))
  return t, start, state


# ----------------------------------------------------------------------------- network

def test_fresh_adapters_give_the_base_model_exactly(trained):
  cfg = train_helpers.tiny_config(**LORA)
  params = trained[1]
  adapters, base = lora.split(params)
  base_cfg = lora.base_config(cfg)
  # Every T5X name of the plain model is kept; the factors sit beside the kernels.
  assert set(model_config.flatten(base)) == set(model_config.param_shapes(base_cfg))
  flat_adapters = model_config.flatten(adapters)
  assert 'encoder/layers_0/attention/query/lora_a' in flat_adapters
  assert 'decoder/layers_1/mlp/wo/lora_b' in flat_adapters
  assert all(np.all(np.asarray(v) == 0) for k, v in flat_adapters.items() if k.endswith('lora_b'))
  np.testing.assert_array_equal(_logits(cfg, params), _logits(base_cfg, base))


def test_adapter_axes_shard_like_their_kernel_with_the_rank_replicated():
  cfg = train_helpers.tiny_config(**LORA)
  axes = model_config.param_axes(cfg)
  assert axes['encoder/layers_0/attention/query/lora_a'] == ('embed', 'lora_rank')
  assert axes['encoder/layers_0/attention/query/lora_b'] == ('lora_rank', 'joined_kv')
  assert axes['decoder/layers_0/mlp/wo/lora_a'] == ('mlp', 'lora_rank')
  assert 'decoder/logits_dense/lora_a' not in axes  # the head is never adapted
  part = partitioning.PjitPartitioner(1)
  assert tuple(part.mesh_axes(('lora_rank', 'mlp'))) == (None, 'model')


# ----------------------------------------------------------------------------- training

def test_training_moves_only_the_adapters(trained):
  t, start, state = trained
  start, end = _flat(start), _flat(state.params)
  assert end.keys() == start.keys() and int(state.step) == STEPS
  adapters = [k for k in end if lora.is_adapter(k)]
  assert adapters and len(adapters) < len(end)
  for key in end:
    if lora.is_adapter(key):
      assert np.any(end[key] != start[key]), f'{key} did not train'
    else:
      assert end[key].tobytes() == start[key].tobytes(), f'{key} moved'
  # The optimizer holds state for adapters only.
  param_paths = set()
  for path, _ in jax.tree_util.tree_flatten_with_path(state.opt_state)[0]:
    keys = tuple(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
    if keys:
      assert lora.is_adapter(keys), keys
      param_paths.add('/'.join(keys))
  assert param_paths == set(adapters)


def test_optimizer_state_shards_like_the_adapters():
  # On a 1x1 mesh the specs still name mesh axes, so the mapping can be read off.
  rules = partitioning.standard_logical_axis_rules(parameter_partitioning_dims=2)
  t = trainer.Trainer(train_helpers.tiny_model(optimizers.adamw(), **LORA),
                      partitioning.PjitPartitioner(1, logical_axis_rules=rules))
  params = {k: v.spec for k, v in model_config.flatten(t.state_shardings.params).items()}
  assert params['encoder/layers_0/attention/query/lora_a'] == jax.sharding.PartitionSpec('data', None)
  checked = 0
  for path, sharding in jax.tree_util.tree_flatten_with_path(t.state_shardings.opt_state)[0]:
    keys = '/'.join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
    if keys:  # Adam's two moments, one per adapter
      assert sharding.spec == params[keys], keys
      checked += 1
  assert checked == 2 * sum(lora.is_adapter(k) for k in params)


def test_microbatched_adapter_gradients_equal_full_batch(trained):
  full, micro = _lora_trainer(), _lora_trainer(num_microbatches=4)
  params = trained[1]
  # B = 0 makes A's gradient zero; perturb B so that both factors get gradients.
  params = jax.tree_util.tree_map_with_path(
      lambda p, x: x + 0.1 if lora.is_adapter(p) else x, params)
  batch = jax.tree_util.tree_map(jnp.asarray, train_helpers.numpy_batch(5))
  norm = full.model.loss_normalizer(batch)
  g1, _ = jax.jit(full.accumulate_gradients)(params, batch, jax.random.PRNGKey(1), norm)
  g4, _ = jax.jit(micro.accumulate_gradients)(params, batch, jax.random.PRNGKey(1), norm)
  flat1, flat4 = _flat(g1), _flat(g4)
  assert flat1.keys() == {k for k in _flat(params) if lora.is_adapter(k)}
  assert max(np.abs(flat1[k] - flat4[k]).max() for k in flat1) <= 1e-5
  assert min(np.abs(v).max() for v in flat1.values()) > 0


def test_merged_model_equals_adapter_model(trained):
  t, start, state = trained
  cfg = t.model.config
  params = jax.device_get(state.params)
  ours = _logits(cfg, params, seed=1)
  merged = _logits(lora.base_config(cfg), lora.merge(params, cfg), seed=1)
  assert np.abs(merged - ours).max() <= 1e-5
  # The comparison means something: the trained adapters changed the function.
  assert np.abs(ours - _logits(cfg, start, seed=1)).max() > 1e-3


def test_resume_restores_identical_state(trained, tmp_path):
  t, _, state = trained
  ckpt = checkpoints.TrainCheckpointer(str(tmp_path), use_async=False)
  ckpt.save(STEPS, state.params, state.opt_state, input_position=STEPS)
  ckpt.wait()
  step, params, opt_state, position = ckpt.restore_latest(t.abstract_state.params,
                                                          t.abstract_state.opt_state)
  ckpt.close()
  assert (step, position) == (STEPS, STEPS)
  for a, b in ((state.params, params), (state.opt_state, opt_state)):
    fa, fb = _flat(a), _flat(b)
    assert fa.keys() == fb.keys()
    assert all(fa[k].tobytes() == fb[k].tobytes() for k in fa)
  # The checkpoint holds the whole tree: base and adapters.
  assert any(lora.is_adapter(k) for k in _flat(params))
  assert 'decoder/logits_dense/kernel' in _flat(params)


# ----------------------------------------------------------------------------- starting point

@pytest.fixture(scope='module')
def plain_model_dir(trained, tmp_path_factory):
  """(plain parameters, MODEL_DIR holding them) of the tiny model without LoRA."""
  cfg = lora.base_config(trained[0].model.config)
  params = lora.split(trained[1])[1]
  folder = tmp_path_factory.mktemp('plain') / 'model'
  converters.write_model_dir(str(folder), params, cfg)
  return params, folder


@pytest.mark.parametrize('source', ['ours', 'hf'])
def test_initial_params_from_a_plain_checkpoint_get_fresh_adapters(plain_model_dir, source,
                                                                   tmp_path):
  plain, folder = plain_model_dir
  if source == 'hf':
    cfg = lora.base_config(train_helpers.tiny_config(**LORA))
    folder = tmp_path / 'hf'
    folder.mkdir()
    hf_convert.write_hf_files(str(folder), plain, cfg)
  t = _lora_trainer()
  params = train.load_initial_params(str(folder), t)
  adapters, base = lora.split(params)
  want, got = _flat(plain), _flat(base)
  assert want.keys() == got.keys()
  assert all(want[k].tobytes() == got[k].tobytes() for k in want)
  flat = _flat(adapters)
  assert set(flat) == {k for k in model_config.param_shapes(t.model.config) if lora.is_adapter(k)}
  assert all(np.all(v == 0) for k, v in flat.items() if k.endswith('lora_b'))
  assert all(np.std(v) > 0 for k, v in flat.items() if k.endswith('lora_a'))
  state = t.state_from_params(params)  # the trainer takes it as a start point
  assert int(state.step) == 0


@pytest.mark.slow
def test_train_run_starts_from_a_plain_checkpoint_and_resumes(plain_model_dir, tmp_path):
  plain, folder = plain_model_dir
  model = train_helpers.tiny_model(optimizers.adafactor(multiply_by_parameter_scale=False),
                                   **LORA)

  def run(steps):
    return train.train(
        model=model, train_dataset_cfg=utils.DatasetConfig('numpy', {}, 'train', 8, True, 0),
        partitioner=partitioning.PjitPartitioner(1), model_dir=str(tmp_path),
        total_steps=steps, get_dataset_fn=train_helpers.numpy_dataset(), show_progress=False,
        checkpoint_cfg=utils.CheckpointConfig(
            save=utils.SaveCheckpointConfig(period=2, use_async=False),
            restore=utils.RestoreCheckpointConfig(str(folder))))

  first = _flat(run(2).params)
  second = _flat(run(4).params)  # resumes from checkpoint_2, not from the plain start
  assert checkpoints.steps(str(tmp_path)) == [2, 4]
  want = _flat(plain)
  for key, value in second.items():
    if lora.is_adapter(key):
      assert np.any(value != first[key]), key
    else:
      assert value.tobytes() == want[key].tobytes(), key


def test_initial_checkpoint_with_adapters_is_refused(trained, tmp_path):
  t, _, state = trained
  folder = tmp_path / 'lora_model'
  converters.write_model_dir(str(folder), jax.device_get(state.params), t.model.config)
  with pytest.raises(ValueError, match='merge-lora'):
    train.load_initial_params(str(folder), _lora_trainer())


# ----------------------------------------------------------------------------- merge and export

def test_merge_lora_writes_a_plain_model_dir_that_loads_and_exports(trained, tmp_path, capsys):
  t, _, state = trained
  cfg = t.model.config
  params = jax.device_get(state.params)
  lora_dir, merged_dir, hf_dir = tmp_path / 'lora', tmp_path / 'merged', tmp_path / 'hf'
  converters.write_model_dir(str(lora_dir), params, cfg, str(SPIECE))
  expected = _logits(cfg, params, seed=2)

  assert cli.main(['merge-lora', str(lora_dir), str(merged_dir)]) == 0
  assert sorted(os.listdir(merged_dir)) == ['checkpoint_0', 'model.gin', 'spiece.model']
  assert 'lora_rank = 0' in (merged_dir / 'model.gin').read_text()
  assert not lora.has_adapters(checkpoints.restore_target(str(merged_dir / 'checkpoint_0')))
  loaded = t5x.load(str(merged_dir))
  assert loaded.config.lora_rank == 0 and loaded.merged_lora_rank == 0
  enc, dec = hf_models.padded_batch(cfg.vocab_size, seed=2)
  assert np.abs(loaded.logits(enc, dec) - expected).max() <= 1e-5
  # api.load of the LoRA folder itself merges on the way in.
  direct = t5x.load(str(lora_dir))
  assert direct.merged_lora_rank == cfg.lora_rank
  assert np.abs(direct.logits(enc, dec) - expected).max() <= 1e-5

  # export-hf takes the LoRA MODEL_DIR directly (and verifies against transformers).
  assert cli.main(['export-hf', str(lora_dir), str(hf_dir)]) == 0
  assert 'verified' in capsys.readouterr().out
  assert 'LoRA (rank 4)' in (hf_dir / 'README.md').read_text()
  import transformers
  hf = transformers.T5ForConditionalGeneration.from_pretrained(hf_dir).eval()
  assert np.abs(hf_models.hf_logits(hf, enc, dec) - expected).max() <= 1e-4


def test_merge_lora_refuses_a_plain_model_dir(plain_model_dir, tmp_path, capsys):
  assert cli.main(['merge-lora', str(plain_model_dir[1]), str(tmp_path / 'out')]) == 2
  assert 'no LoRA adapters' in capsys.readouterr().err
  assert not (tmp_path / 'out').exists()


# ----------------------------------------------------------------------------- config

def test_bad_lora_settings_name_the_field_and_the_allowed_values():
  with pytest.raises(ValueError, match='lora_rank=-1'):
    T5Config(lora_rank=-1)
  with pytest.raises(ValueError, match=r"lora_targets.*'ffn'.*'query', 'key', 'value', 'out', 'mlp'"):
    T5Config(lora_rank=8, lora_targets=('query', 'ffn'))
  assert T5Config(lora_targets=['query']).lora_targets == ('query',)  # gin lists stay hashable
  assert T5Config(lora_targets='mlp').lora_targets == ('mlp',)


def test_parameter_counts_for_the_planner(trained):
  cfg = trained[0].model.config
  counts = model_config.parameter_counts(cfg)
  adapters, base = lora.split(trained[1])
  size = lambda tree: sum(int(np.prod(x.shape)) for x in jax.tree_util.tree_leaves(tree))
  assert counts == {'trainable': size(adapters), 'frozen': size(base),
                    'total': size(adapters) + size(base)}
  assert model_config.adapter_count(cfg) == size(adapters)
  # r * (in + out) per adapted projection: 4 attention + 3 gated-MLP kernels per layer,
  # twice the attention in decoder layers.
  e, m, r = cfg.emb_dim, cfg.mlp_dim, cfg.lora_rank
  per_attention, per_mlp = 4 * r * 2 * e, 3 * r * (e + m)
  assert size(adapters) == 2 * (per_attention + per_mlp) + 2 * (2 * per_attention + per_mlp)
  plain = lora.base_config(cfg)
  assert model_config.parameter_counts(plain) == {'trainable': size(base), 'frozen': 0,
                                          'total': size(base)}
  assert model_config.adapter_count(plain) == 0


def test_lora_gin_adds_to_an_experiment():
  import gin
  from t5x import gin_utils
  from t5x.examples.t5 import network
  gin.clear_config()
  try:
    gin_utils.parse(['copoet_3b.gin', 'lora.gin'], [])
    cfg = gin.get_configurable(network.T5Config)()
    schedule = gin.get_configurable(optimizers.create_learning_rate_scheduler)()
    optimizer = gin.query_parameter('OPTIMIZER/gin.macro.value')
  finally:
    gin.clear_config()
  assert (cfg.lora_rank, cfg.lora_alpha, cfg.lora_targets) == (8, 16.0, ('query', 'value'))
  assert cfg.emb_dim == 2048  # the experiment's model (T5 1.1 XL) is kept
  assert float(schedule(0)) == pytest.approx(1e-3)
  assert 'adamw' in str(optimizer)
  counts = model_config.parameter_counts(cfg)
  assert counts['trainable'] < 0.002 * counts['total']

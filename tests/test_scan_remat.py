"""`scan_layers` and `remat_policy`: same numbers as the plain model, both layouts everywhere.

Every comparison starts from the same initial parameters (the plain init, stacked for
the scanned model), so differences can only come from the levers themselves.
"""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hf_models
import train_helpers
from t5x import (api, checkpoints, decoding, model_config, partitioning, scan_layout,
                 trainer)
from t5x.conversion import converters
from t5x_cli import main as cli
from t5x.examples.t5.network import T5Config, Transformer

TOL = 1e-5
STEPS = 3
VARIANTS = {
    'scan': dict(scan_layers=True),
    'remat_minimal': dict(remat_policy='minimal'),
    'remat_full': dict(remat_policy='full'),
    'scan_remat_full': dict(scan_layers=True, remat_policy='full'),
}


def _max_diff(a, b) -> float:
  """Largest |a - b| over two trees of the same structure."""
  pairs = zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b))
  return max(float(np.max(np.abs(np.asarray(x, np.float32) - np.asarray(y, np.float32))))
             for x, y in pairs)


def _train(model, params, steps=STEPS, seed=1):
  """(losses, final params as numpy) of `steps` adafactor steps on fixed batches."""
  tr = trainer.Trainer(model, partitioning.PjitPartitioner(1))
  state = tr.state_from_params(params)
  losses = []
  for i in range(steps):
    batch = {k: jnp.asarray(v) for k, v in train_helpers.numpy_batch(i).items()}
    state, metrics = tr.train_step(state, batch, jax.random.PRNGKey(seed))
    losses.append(float(metrics['loss']))
  return np.array(losses), jax.device_get(state.params)


@pytest.fixture(scope='module')
def plain_run():
  """(initial params, losses, final params) of the plain model, dropout off."""
  model = train_helpers.tiny_model()
  init = jax.device_get(model.init_params(jax.random.PRNGKey(0)))
  losses, final = _train(model, init)
  return init, losses, final


@pytest.mark.parametrize('variant', sorted(VARIANTS))
def test_training_equals_plain_model(plain_run, variant):
  init, plain_losses, plain_final = plain_run
  model = train_helpers.tiny_model(**VARIANTS[variant])
  cfg = model.config
  losses, final = _train(model, scan_layout.params_for_config(init, cfg))
  loss_diff = float(np.max(np.abs(losses - plain_losses)))
  back = scan_layout.unscan_params(final, cfg.param_scan_axis)
  param_diff = _max_diff(back, plain_final)
  print(f'{variant}: losses max |diff| {loss_diff:.2e}, params max |diff| {param_diff:.2e}')
  assert scan_layout.is_scanned(final) == cfg.scan_layers
  assert loss_diff <= TOL and param_diff <= TOL
  # The steps moved the parameters, so equal parameters mean equal updates.
  assert _max_diff(plain_final, init) > 1e-3


def test_scanned_dropout_runs_and_differs_per_layer():
  cfg = train_helpers.tiny_config(scan_layers=True, dropout_rate=0.5)
  module = Transformer(cfg)
  params = scan_layout.scan_params(jax.device_get(
      Transformer(train_helpers.tiny_config()).init(
          jax.random.PRNGKey(0), jnp.ones((1, 1), jnp.int32), jnp.ones((1, 1), jnp.int32),
          enable_dropout=False)['params']))
  batch = train_helpers.numpy_batch(0)
  only_mlp_dropout = lambda mdl, _: isinstance(mdl, nn.Dropout) and 'mlp' in mdl.path
  _, seen = module.apply({'params': nn.unbox(params)}, batch['encoder_input_tokens'],
                         batch['decoder_input_tokens'], enable_dropout=True,
                         rngs={'dropout': jax.random.PRNGKey(3)},
                         capture_intermediates=only_mlp_dropout, mutable=['intermediates'])
  hidden = seen['intermediates']['encoder']['layers']['mlp']['Dropout_0']['__call__'][0]
  assert hidden.shape[0] == cfg.num_encoder_layers  # stacked per layer
  dropped = np.asarray(hidden) == 0
  assert 0.4 < dropped[0].mean() < 0.6 and 0.4 < dropped[1].mean() < 0.6
  # Each layer draws its own mask (split rngs): identical masks would agree everywhere.
  assert (dropped[0] != dropped[1]).mean() > 0.3
  # And a train step with dropout on runs and moves the loss.
  model = train_helpers.tiny_model(scan_layers=True, dropout_rate=0.1)
  losses, _ = _train(model, params, steps=2)
  assert np.all(np.isfinite(losses)) and losses[0] != losses[1]


def test_layout_round_trip_is_exact_and_matches_the_scanned_init():
  plain_cfg = train_helpers.tiny_config()
  scan_cfg = train_helpers.tiny_config(scan_layers=True)
  params = jax.device_get(train_helpers.tiny_model().init_params(jax.random.PRNGKey(0)))
  scanned = scan_layout.scan_params(params)
  back = scan_layout.unscan_params(scanned)
  flat, flat_back = model_config.flatten(params), model_config.flatten(back)
  assert set(flat) == set(flat_back)
  for key in flat:
    assert flat[key].dtype == flat_back[key].dtype and flat[key].tobytes() == flat_back[key].tobytes()
  # Shapes and axes of the converted tree are those the scanned model's init produces.
  shapes = {k: v.shape for k, v in model_config.flatten(scanned).items()}
  assert shapes == model_config.param_shapes(scan_cfg)
  axes = model_config.param_axes(scan_cfg)
  assert axes['encoder/layers/attention/query/kernel'] == ('embed', 'layers', 'joined_kv')
  assert axes['decoder/layers/pre_mlp_layer_norm/scale'] == ('embed', 'layers')
  boxed = scan_layout.scan_params(model_config.abstract_variables(plain_cfg))
  assert {k: tuple(v.names) for k, v in model_config.flatten(boxed).items()} == axes
  assert model_config.count_params(scan_cfg) == model_config.count_params(plain_cfg)
  # infer_config reads either layout; the stacked one says scan_layers.
  assert model_config.infer_config(scanned, dropout_rate=0.0) == scan_cfg
  assert model_config.infer_config(params, dropout_rate=0.0) == plain_cfg
  # jax leaves convert too, keeping their type.
  as_jax = scan_layout.scan_params(jax.tree_util.tree_map(jnp.asarray, params))
  assert isinstance(as_jax['encoder']['layers']['mlp']['wo']['kernel'], jax.Array)
  assert _max_diff(as_jax, scanned) == 0.0


def test_scanned_logits_and_greedy_decode_equal_plain(tmp_path):
  plain_cfg = train_helpers.tiny_config()
  scan_cfg = train_helpers.tiny_config(scan_layers=True, remat_policy='minimal')
  params = jax.device_get(train_helpers.tiny_model().init_params(jax.random.PRNGKey(4)))
  scanned = scan_layout.scan_params(params)
  batch = train_helpers.numpy_batch(5)
  logits = lambda cfg, p: np.asarray(Transformer(cfg).apply(
      {'params': p}, batch['encoder_input_tokens'], batch['decoder_input_tokens'],
      enable_dropout=False))
  diff = float(np.abs(logits(scan_cfg, scanned) - logits(plain_cfg, params)).max())
  print(f'scanned logits max |diff| {diff:.2e}')
  assert diff <= TOL

  options = decoding.DecodeOptions(max_decode_length=8)
  enc = batch['encoder_input_tokens']
  plain_tokens = np.asarray(decoding.generate(Transformer(plain_cfg), params, enc, options)[0])
  # A scanned module decodes directly (decoding unstacks inside the compiled call) ...
  direct = np.asarray(decoding.generate(Transformer(scan_cfg), scanned, enc, options)[0])
  np.testing.assert_array_equal(direct, plain_tokens)
  # ... and a scanned MODEL_DIR loads in the plain layout for inference.
  converters.write_model_dir(str(tmp_path / 'scanned'), params, scan_cfg)
  stored = checkpoints.restore_target(checkpoints.latest(str(tmp_path / 'scanned')))
  assert scan_layout.is_scanned(stored)
  loaded = api.load(str(tmp_path / 'scanned'))
  assert not loaded.config.scan_layers and not scan_layout.is_scanned(loaded.params)
  loaded_tokens = np.asarray(decoding.generate(
      Transformer(loaded.config), loaded.params, enc, options)[0])
  np.testing.assert_array_equal(loaded_tokens, plain_tokens)
  assert len(set(plain_tokens[:, 0, :].ravel().tolist())) > 3  # a non-trivial decode


def test_initial_checkpoint_is_delivered_in_the_model_layout(tmp_path):
  from t5x import train
  params = jax.device_get(train_helpers.tiny_model().init_params(jax.random.PRNGKey(2)))
  converters.write_model_dir(str(tmp_path / 'plain'), params, train_helpers.tiny_config())
  converters.write_model_dir(str(tmp_path / 'scanned'), params,
                             train_helpers.tiny_config(scan_layers=True))
  for source in ('plain', 'scanned'):
    for scan in (False, True):
      model = train_helpers.tiny_model(scan_layers=scan)
      tr = trainer.Trainer(model, partitioning.PjitPartitioner(1))
      got = train.load_initial_params(str(tmp_path / source), tr)
      assert scan_layout.is_scanned(got) == scan, (source, scan)
      assert _max_diff(scan_layout.unscan_params(got), params) == 0.0, (source, scan)


def test_export_hf_of_a_scanned_model_dir(tmp_path):
  hf = hf_models.make('t5_1_1', 'small', seed=3)
  hf.save_pretrained(tmp_path / 'hf')
  assert cli.main(['import-hf', str(tmp_path / 'hf'), str(tmp_path / 'model'),
                   '--scan_layers']) == 0
  assert 'scan_layers = True' in (tmp_path / 'model' / 'model.gin').read_text()
  assert scan_layout.is_scanned(checkpoints.restore_target(
      checkpoints.latest(str(tmp_path / 'model'))))
  report = converters.export_hf(str(tmp_path / 'model'), str(tmp_path / 'back'))
  import transformers
  back = transformers.T5ForConditionalGeneration.from_pretrained(tmp_path / 'back').eval()
  enc, dec = hf_models.padded_batch(hf.config.vocab_size, seed=1)
  diff = float(np.abs(hf_models.hf_logits(back, enc, dec) -
                      hf_models.hf_logits(hf, enc, dec)).max())
  print(f'export-hf of scanned dir: logits max |diff| {diff:.2e}; '
        f'verify report {report["logits_max_abs_diff"]:.2e}')
  assert diff <= TOL and report['greedy_identical']


def test_bad_remat_policy_names_the_field_and_the_choices():
  with pytest.raises(ValueError, match=r"remat_policy='everything'.*'none', 'minimal', 'full'"):
    T5Config(remat_policy='everything')
  with pytest.raises(ValueError, match='param_scan_axis'):
    T5Config(param_scan_axis=2)


@pytest.mark.slow
def test_scanned_run_resumes_exactly_and_loads_for_inference(tmp_path):
  def run(model_dir, steps):
    return train_helpers.numpy_run(model_dir, train_helpers.tiny_model(
        scan_layers=True, remat_policy='full', dropout_rate=0.1), steps)

  whole = jax.device_get(run(tmp_path / 'whole', 4).params)
  run(tmp_path / 'resumed', 2)  # the per-layer optimizer state goes through a checkpoint
  resumed = jax.device_get(run(tmp_path / 'resumed', 4).params)
  assert scan_layout.is_scanned(whole)
  assert _max_diff(whole, resumed) == 0.0
  loaded = api.load(str(tmp_path / 'whole'))
  assert not loaded.config.scan_layers and loaded.config.remat_policy == 'none'
  assert _max_diff(loaded.params, scan_layout.unscan_params(whole)) == 0.0

"""Reading checkpoints that T5X itself wrote (../shared/fixtures/t5x)."""
import gzip
import os

import numpy as np
import pytest
import transformers
from flax import serialization

import hf_models
import test_model_sizes
import t5x
from t5x_cli import main as cli
from t5x.conversion import legacy_t5x
from t5x import model_config


@pytest.fixture(scope='session')
def tiny_checkpoint(shared_dir) -> str:
  return str(shared_dir / 'fixtures' / 't5x' / 'test_t5_tiny.checkpoint_0')


def _fixture_target(path):
  with open(path, 'rb') as f:
    return serialization.msgpack_restore(f.read())['optimizer']['target']


def test_our_tree_has_exactly_t5x_names_and_shapes(tiny_checkpoint):
  model = t5x.load(tiny_checkpoint)
  cfg = model.config
  assert (cfg.vocab_size, cfg.emb_dim, cfg.num_heads, cfg.head_dim, cfg.mlp_dim) == (32128, 8, 4, 3, 16)
  assert (cfg.num_encoder_layers, cfg.num_decoder_layers) == (2, 2)
  assert cfg.mlp_activations == ('gelu', 'linear') and not cfg.logits_via_embedding
  written_by_t5x = {k: np.shape(v) for k, v in
                    model_config.flatten(_fixture_target(tiny_checkpoint)).items()}
  assert model_config.param_shapes(cfg) == written_by_t5x
  # The model-size gin file describes the same architecture.
  tiny = test_model_sizes.config_from_gin('models/t5_1_1/tiny.gin')
  assert model_config.param_shapes(tiny) == written_by_t5x


def test_fixture_logits_equal_transformers_on_its_export(tiny_checkpoint, tmp_path):
  assert cli.main(['import-t5x', tiny_checkpoint, str(tmp_path / 'model')]) == 0
  assert cli.main(['export-hf', str(tmp_path / 'model'), str(tmp_path / 'hf')]) == 0
  hf, info = transformers.T5ForConditionalGeneration.from_pretrained(
      tmp_path / 'hf', output_loading_info=True)
  assert not info['missing_keys'] and not info['unexpected_keys']
  enc, dec = hf_models.padded_batch(32128, seed=11)
  ours = t5x.load(str(tmp_path / 'model')).logits(enc, dec)
  theirs = hf_models.hf_logits(hf.eval(), enc, dec)
  assert np.abs(ours - theirs).max() <= 1e-4
  # Loading the T5X file directly gives the same numbers as our converted checkpoint.
  direct = t5x.load(tiny_checkpoint).logits(enc, dec)
  np.testing.assert_array_equal(direct, ours)


def test_tensorstore_zarr_checkpoint_reads(shared_dir):
  folder = shared_dir / 'fixtures' / 't5x' / 'tiny_t5' / 'checkpoint_1'
  tree = legacy_t5x.read(str(folder))
  states = tree['optimizer']['state']['param_states']
  assert int(tree['optimizer']['state']['step']) == 1
  assert states['kernel'].shape == (10, 5) and states['kernel'].dtype == np.float64
  assert states['bias'].shape == (5,) and states['bias'].dtype == np.float32
  assert states['step'].shape == () and states['step'].dtype == np.int32
  # Decode the zarr chunk independently: gzip of little-endian C-order float64.
  raw = gzip.decompress((folder / 'state.param_states.kernel' / '0.0').read_bytes())
  np.testing.assert_array_equal(states['kernel'], np.frombuffer(raw, '<f8').reshape(10, 5))
  raw = gzip.decompress((folder / 'state.param_states.bias' / '0').read_bytes())
  np.testing.assert_array_equal(states['bias'], np.frombuffer(raw, '<f4'))
  # Same when given the `checkpoint` file rather than its folder.
  again = legacy_t5x.read(str(folder / 'checkpoint'))
  np.testing.assert_array_equal(again['optimizer']['state']['param_states']['kernel'],
                                states['kernel'])


def test_checkpoint_without_parameters_is_refused(shared_dir, tmp_path, capsys):
  folder = shared_dir / 'fixtures' / 't5x' / 'tiny_t5' / 'checkpoint_1'
  assert cli.main(['import-t5x', str(folder), str(tmp_path / 'out')]) == 2
  err = capsys.readouterr().err
  assert 'optimizer/target' in err and 'checkpoint' in err
  assert not (tmp_path / 'out').exists()


def test_early_orbax_placeholders_get_a_clear_error(shared_dir):
  with pytest.raises(legacy_t5x.LegacyCheckpointError, match='_optimizer/state/param_states'):
    legacy_t5x.read(str(shared_dir / 'fixtures' / 't5x' / 'tiny_orbax' / '1'))


def test_bucket_paths_use_the_gcs_driver():
  assert legacy_t5x.kvstore_spec('gs://bucket/run/checkpoint_5', 'target.encoder/') == {
      'driver': 'gcs', 'bucket': 'bucket', 'path': 'run/checkpoint_5/target.encoder/'}
  assert legacy_t5x.kvstore_spec('/ckpt', 'a/') == {'driver': 'file', 'path': '/ckpt/a/'}
  assert legacy_t5x.kvstore_spec('/ckpt', 'gs://b/x/') == {'driver': 'gcs', 'bucket': 'b', 'path': 'x/'}

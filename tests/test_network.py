"""The network against transformers' PyTorch T5, plus packing, decoding and axes."""
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import hf_models
from t5x.conversion import hf_convert
from t5x import model_config
from t5x.examples.t5.network import T5Config, Transformer

PARITY_ATOL = 1e-4


def _convert(hf_model):
  raw = hf_model.config.to_dict()
  cfg = hf_convert.config_from_hf(raw, 'test config')
  return cfg, hf_convert.params_from_state_dict(hf_models.state_dict(hf_model), cfg, 'test')


@pytest.mark.parametrize('size', sorted(hf_models.SIZES))
@pytest.mark.parametrize('variant', sorted(hf_models.VARIANTS))
def test_logits_match_transformers(variant, size):
  hf_model = hf_models.make(variant, size)
  cfg, params = _convert(hf_model)
  assert cfg.logits_via_embedding == (variant == 't5_1_0')
  enc, dec = hf_models.padded_batch(cfg.vocab_size)
  ours = np.asarray(Transformer(cfg).apply({'params': params}, enc, dec, enable_dropout=False))
  theirs = hf_models.hf_logits(hf_model, enc, dec)
  assert ours.dtype == np.float32 and ours.shape == theirs.shape
  err = np.abs(ours - theirs).max()
  assert err <= PARITY_ATOL, f'max |ours - transformers| = {err:.2e}'
  # The comparison is meaningful: logits are O(1) and differ across positions.
  assert np.abs(theirs).max() > 1.0


def _tiny(**kw) -> T5Config:
  base = dict(vocab_size=64, emb_dim=16, num_heads=2, head_dim=8, mlp_dim=32,
              num_encoder_layers=2, num_decoder_layers=2, mlp_activations=('gelu', 'linear'),
              logits_via_embedding=False, dropout_rate=0.0, relative_attention_max_distance=16)
  base.update(kw)
  return T5Config(**base)


def _init(cfg, seed=0):
  tokens = jnp.ones((1, 4), jnp.int32)
  variables = Transformer(cfg).init(jax.random.PRNGKey(seed), tokens, tokens, enable_dropout=False)
  return nn.unbox(variables['params'])


def test_packed_rows_equal_separate_examples():
  cfg = _tiny()
  params = _init(cfg)
  rng = np.random.RandomState(1)
  lens_in, lens_out = (5, 9), (4, 6)
  examples = [(rng.randint(2, 64, n), rng.randint(2, 64, m)) for n, m in zip(lens_in, lens_out)]
  model = Transformer(cfg)
  separate = []
  for inputs, targets in examples:
    dec_in = np.concatenate([[0], targets[:-1]])
    separate.append(np.asarray(model.apply({'params': params}, inputs[None], dec_in[None],
                                           targets[None], enable_dropout=False))[0])
  # Pack both into one row of length 16, padding at the end, positions restarting.
  L = 16

  def pack(parts):
    toks, seg, pos = np.zeros(L, np.int32), np.zeros(L, np.int32), np.zeros(L, np.int32)
    start = 0
    for i, p in enumerate(parts):
      toks[start:start + len(p)] = p
      seg[start:start + len(p)] = i + 1
      pos[start:start + len(p)] = np.arange(len(p))
      start += len(p)
    return toks[None], seg[None], pos[None]

  enc, enc_seg, enc_pos = pack([e[0] for e in examples])
  tgt, dec_seg, dec_pos = pack([e[1] for e in examples])
  dec_in, _, _ = pack([np.concatenate([[0], e[1][:-1]]) for e in examples])
  packed = np.asarray(model.apply(
      {'params': params}, enc, dec_in, tgt, enc_seg, dec_seg, enc_pos, dec_pos,
      enable_dropout=False))[0]
  start = 0
  for (inputs, targets), alone in zip(examples, separate):
    got = packed[start:start + len(targets)]
    np.testing.assert_allclose(got, alone, atol=1e-5, rtol=0)
    start += len(targets)


@pytest.mark.parametrize('gated', [False, True])
def test_incremental_decoding_matches_teacher_forcing(gated):
  cfg = _tiny(mlp_activations=('gelu', 'linear') if gated else ('relu',),
              logits_via_embedding=not gated)
  params = _init(cfg, seed=3)
  rng = np.random.RandomState(2)
  enc = rng.randint(2, 64, (2, 7)).astype(np.int32)
  enc[1, 4:] = 0
  dec = rng.randint(2, 64, (2, 20)).astype(np.int32)
  dec[:, 0] = 0
  model = Transformer(cfg)
  full = np.asarray(model.apply({'params': params}, enc, dec, enable_dropout=False))
  encoded = model.apply({'params': params}, enc, enable_dropout=False, method=Transformer.encode)
  _, cache = model.apply({'params': params}, encoded, enc, jnp.zeros_like(dec), decode=True,
                         enable_dropout=False, mutable=['cache'], method=Transformer.decode)
  cache = cache['cache']
  steps = []
  for t in range(dec.shape[1]):
    logits, cache = model.apply({'params': params, 'cache': cache}, encoded, enc, dec[:, t:t + 1],
                                decode=True, enable_dropout=False, mutable=['cache'],
                                method=Transformer.decode)
    cache = cache['cache']
    steps.append(np.asarray(logits)[:, 0])
  np.testing.assert_allclose(np.stack(steps, 1), full, atol=1e-5, rtol=0)


EXPECTED_AXES = {
    'token_embedder/embedding': ('vocab', 'embed'),
    'encoder/relpos_bias/rel_embedding': ('heads', 'relpos_buckets'),
    'encoder/layers_0/attention/query/kernel': ('embed', 'joined_kv'),
    'encoder/layers_0/attention/out/kernel': ('joined_kv', 'embed'),
    'encoder/layers_0/pre_attention_layer_norm/scale': ('embed',),
    'encoder/layers_1/mlp/wi_0/kernel': ('embed', 'mlp'),
    'encoder/layers_1/mlp/wi_1/kernel': ('embed', 'mlp'),
    'encoder/layers_1/mlp/wo/kernel': ('mlp', 'embed'),
    'encoder/encoder_norm/scale': ('embed',),
    'decoder/layers_1/encoder_decoder_attention/key/kernel': ('embed', 'joined_kv'),
    'decoder/layers_0/pre_cross_attention_layer_norm/scale': ('embed',),
    'decoder/decoder_norm/scale': ('embed',),
    'decoder/logits_dense/kernel': ('embed', 'vocab'),
}


def test_every_parameter_has_logical_axes():
  cfg = _tiny()
  axes = model_config.param_axes(cfg)
  shapes = model_config.param_shapes(cfg)
  for key, names in EXPECTED_AXES.items():
    assert axes[key] == names, key
  allowed = {'vocab', 'embed', 'mlp', 'heads', 'kv', 'joined_kv', 'relpos_buckets'}
  for key, names in axes.items():
    assert set(names) <= allowed and len(names) == len(shapes[key]), (key, names)
  # T5 1.0 has a single `wi` and no logits_dense.
  axes_10 = model_config.param_axes(_tiny(mlp_activations=('relu',), logits_via_embedding=True))
  assert 'encoder/layers_0/mlp/wi/kernel' in axes_10
  assert 'decoder/logits_dense/kernel' not in axes_10


def test_bf16_activations_keep_fp32_params_and_track_fp32_logits():
  cfg32 = _tiny()
  params = _init(cfg32)
  assert all(x.dtype == jnp.float32 for x in jax.tree_util.tree_leaves(params))
  enc, dec = hf_models.padded_batch(64, seed=4)
  f32 = np.asarray(Transformer(cfg32).apply({'params': params}, enc, dec, enable_dropout=False))
  bf16 = Transformer(_tiny(dtype='bfloat16')).apply({'params': params}, enc, dec,
                                                    enable_dropout=False)
  assert bf16.dtype == jnp.float32  # logits are always computed in float32
  rel = np.abs(np.asarray(bf16) - f32).max() / np.abs(f32).max()
  assert rel < 0.05, rel


def test_dropout_is_active_only_when_enabled():
  cfg = _tiny(dropout_rate=0.3)
  params = _init(cfg)
  enc, dec = hf_models.padded_batch(64, seed=5)
  model = Transformer(cfg)
  a, b = (model.apply({'params': params}, enc, dec, enable_dropout=True,
                      rngs={'dropout': jax.random.PRNGKey(s)}) for s in (0, 1))
  off = model.apply({'params': params}, enc, dec, enable_dropout=False)
  off2 = model.apply({'params': params}, enc, dec, enable_dropout=False)
  assert np.abs(np.asarray(a) - np.asarray(b)).max() > 1e-3
  np.testing.assert_array_equal(np.asarray(off), np.asarray(off2))

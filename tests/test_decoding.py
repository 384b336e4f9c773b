"""Decoding: against transformers' generate, the uncached reference, and hand-built logits."""
import collections
import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import hf_models
from t5x import decoding
from t5x.conversion import hf_convert
from t5x.decoding import DecodeOptions
from t5x.examples.t5.network import Transformer

LENGTH = 24
# Per variant, a random model whose EOS (chosen below) ends some rows early but not all.
SEEDS = {'t5_1_0': 1, 't5_1_1': 0}


def _convert(hf_model):
  cfg = hf_convert.config_from_hf(hf_model.config.to_dict(), 'test config')
  return cfg, hf_convert.params_from_state_dict(hf_models.state_dict(hf_model), cfg, 'test')


def _hf_generate(hf_model, enc, eos, **kwargs) -> np.ndarray:
  """transformers' generate -> int [b * num_return_sequences, LENGTH], 0 after EOS.

  Drops the decoder start token 0 that its output begins with, pads to LENGTH, and zeroes
  what follows the first EOS: beam search fills finished beams with EOS rather than the
  pad token 0 (its fill value is `pad_token_id or eos_token_id`, and 0 is falsy).
  """
  with torch.no_grad():
    out = hf_model.generate(
        input_ids=torch.tensor(enc, dtype=torch.long),
        attention_mask=torch.tensor(enc != 0, dtype=torch.long), max_new_tokens=LENGTH,
        decoder_start_token_id=0, eos_token_id=eos, pad_token_id=0, **kwargs)
  out = out.sequences if hasattr(out, 'sequences') else out
  tokens = np.zeros((out.shape[0], LENGTH), np.int64)
  tokens[:, :out.shape[1] - 1] = out[:, 1:].numpy()
  after_eos = np.cumsum(np.cumsum(tokens == eos, axis=1), axis=1) > 1
  return np.where(after_eos, 0, tokens)


@functools.lru_cache(maxsize=None)
def _model(variant):
  """(hf model, module, params, encoder tokens [3, 41], eos id).

  Random models almost never emit token 1, so the EOS id is the token their greedy
  decodes use most: rows then end at different lengths, which is what needs testing.
  """
  hf_model = hf_models.make(variant, 'small', seed=SEEDS[variant])
  cfg, params = _convert(hf_model)
  enc, _ = hf_models.padded_batch(cfg.vocab_size, seed=SEEDS[variant])
  plain = _hf_generate(hf_model, enc, eos=1, do_sample=False, num_beams=1)
  counts = collections.Counter(plain[:, 2:LENGTH - 4].ravel().tolist())
  eos = [t for t, _ in counts.most_common() if t > 1][0]
  return hf_model, Transformer(cfg), params, enc, eos


def _teacher_forced_scores(module, params, enc, tokens, eos) -> np.ndarray:
  """float [b] sums of log p(token) up to and including each row's first EOS."""
  dec_in = np.concatenate([np.zeros_like(tokens[:, :1]), tokens[:, :-1]], axis=1)
  logits = module.apply({'params': params}, enc, dec_in, enable_dropout=False)
  log_probs = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), tokens[..., None], -1)
  before_eos = np.cumsum(tokens == eos, axis=1) - (tokens == eos) == 0
  return (log_probs[..., 0] * before_eos).sum(1)


def _lengths(tokens, eos) -> np.ndarray:
  """int [...] tokens up to and including the first EOS (all if none)."""
  hit = tokens == eos
  return np.where(hit.any(-1), hit.argmax(-1) + 1, tokens.shape[-1])


@pytest.mark.parametrize('variant', sorted(SEEDS))
def test_greedy_matches_transformers(variant):
  hf_model, module, params, enc, eos = _model(variant)
  tokens, scores = decoding.generate(module, params, enc, DecodeOptions(max_decode_length=LENGTH),
                                     eos_id=eos)
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  assert tokens.shape == (3, 1, LENGTH) and tokens.dtype == np.int32
  assert scores.shape == (3, 1) and scores.dtype == np.float32
  np.testing.assert_array_equal(tokens[:, 0], _hf_generate(hf_model, enc, eos, do_sample=False,
                                                           num_beams=1))
  ended = (tokens[:, 0] == eos).any(1)
  assert ended.any() and not ended.all(), 'rows should end at EOS and at the length limit'
  np.testing.assert_allclose(scores[:, 0],
                             _teacher_forced_scores(module, params, enc, tokens[:, 0], eos),
                             atol=1e-4)


@pytest.mark.parametrize('variant', sorted(SEEDS))
def test_cached_greedy_equals_uncached(variant):
  _, module, params, enc, eos = _model(variant)
  for ngram in (0, 2):
    options = DecodeOptions(max_decode_length=LENGTH, no_repeat_ngram_size=ngram)
    cached = decoding.generate(module, params, enc, options, eos_id=eos)
    uncached = decoding.generate_uncached(module, params, enc, options, eos_id=eos)
    np.testing.assert_array_equal(np.asarray(cached[0]), np.asarray(uncached[0]))
    np.testing.assert_allclose(np.asarray(cached[1]), np.asarray(uncached[1]), atol=1e-4)


@pytest.mark.parametrize('variant', sorted(SEEDS))
def test_beam_search_matches_transformers(variant):
  hf_model, module, params, enc, eos = _model(variant)
  options = DecodeOptions(decode='beam', num_decodes=3, alpha=0.0, max_decode_length=LENGTH)
  tokens, scores = decoding.generate(module, params, enc, options, eos_id=eos)
  tokens, scores = np.asarray(tokens), np.asarray(scores)
  assert tokens.shape == (3, 3, LENGTH)
  with torch.no_grad():
    hf_scores = hf_model.generate(
        input_ids=torch.tensor(enc, dtype=torch.long),
        attention_mask=torch.tensor(enc != 0, dtype=torch.long), max_new_tokens=LENGTH,
        decoder_start_token_id=0, eos_token_id=eos, pad_token_id=0, num_beams=3,
        num_return_sequences=3, length_penalty=0.0, early_stopping='never',
        output_scores=True, return_dict_in_generate=True).sequences_scores.numpy()
  hf_tokens = _hf_generate(hf_model, enc, eos, num_beams=3, num_return_sequences=3,
                           length_penalty=0.0, early_stopping='never', do_sample=False)
  # The brief asks for the top sequence; all three beams and their scores agree too.
  np.testing.assert_array_equal(tokens[:, 0], hf_tokens.reshape(3, 3, -1)[:, 0])
  np.testing.assert_array_equal(tokens, hf_tokens.reshape(3, 3, -1))
  np.testing.assert_allclose(scores, hf_scores.reshape(3, 3), atol=1e-4)
  assert (tokens[:, 0] == eos).any(), 'some best beam should end with EOS'
  assert np.all(np.diff(scores, axis=1) <= 0), 'beams come best first'


def test_beam_brevity_penalty_against_transformers_length_penalty():
  """alpha 0.6 vs length_penalty 0.6: the penalties differ, the log-prob sums do not.

  T5X divides by ((5 + len) / 6) ** alpha, transformers by len ** length_penalty, so the
  rankings (and sequences) may differ; where both return the same top sequence, its
  un-penalised log-prob is the same on both sides.
  """
  hf_model, module, params, enc, eos = _model('t5_1_1')
  options = DecodeOptions(decode='beam', num_decodes=3, alpha=0.6, max_decode_length=LENGTH)
  tokens, scores = map(np.asarray, decoding.generate(module, params, enc, options, eos_id=eos))
  lengths = _lengths(tokens, eos)
  raw = scores * decoding.brevity_penalty(0.6, lengths)
  for beam in range(3):
    np.testing.assert_allclose(
        raw[:, beam], _teacher_forced_scores(module, params, enc, tokens[:, beam], eos),
        atol=1e-4)
  with torch.no_grad():
    out = hf_model.generate(
        input_ids=torch.tensor(enc, dtype=torch.long),
        attention_mask=torch.tensor(enc != 0, dtype=torch.long), max_new_tokens=LENGTH,
        decoder_start_token_id=0, eos_token_id=eos, pad_token_id=0, num_beams=3,
        length_penalty=0.6, early_stopping='never', output_scores=True,
        return_dict_in_generate=True)
  hf_tokens = _hf_generate(hf_model, enc, eos, num_beams=3, length_penalty=0.6,
                           early_stopping='never', do_sample=False)
  same = (hf_tokens == tokens[:, 0]).all(1)
  assert same.any()
  hf_raw = out.sequences_scores.numpy() * lengths[:, 0] ** 0.6
  np.testing.assert_allclose(hf_raw[same], raw[same, 0], atol=1e-4)


def test_no_repeat_ngram_matches_transformers():
  hf_model, module, params, enc, eos = _model('t5_1_0')
  plain = np.asarray(decoding.generate(module, params, enc, DecodeOptions(
      max_decode_length=LENGTH), eos_id=eos)[0])[:, 0]
  assert _has_repeated_ngram(plain, 2, eos), 'the unconstrained decode should repeat itself'
  for n in (1, 2, 3):
    tokens = decoding.generate(module, params, enc, DecodeOptions(
        max_decode_length=LENGTH, no_repeat_ngram_size=n), eos_id=eos)[0]
    np.testing.assert_array_equal(
        np.asarray(tokens)[:, 0],
        _hf_generate(hf_model, enc, eos, do_sample=False, num_beams=1, no_repeat_ngram_size=n))


def _has_repeated_ngram(tokens, n, eos) -> bool:
  """Any row of int [b, L] (read from the start token 0 through EOS) holding an n-gram twice."""
  for row, length in zip(tokens, _lengths(tokens, eos)):
    seq = [0] + row[:length].tolist()
    grams = [tuple(seq[i:i + n]) for i in range(len(seq) - n + 1)]
    if len(grams) != len(set(grams)):
      return True
  return False


def test_no_repeat_ngram_in_sampling_and_beam_search():
  _, module, params, enc, eos = _model('t5_1_1')
  for options in (DecodeOptions(decode='sample', num_decodes=4, no_repeat_ngram_size=2,
                                max_decode_length=LENGTH, seed=3),
                  DecodeOptions(decode='beam', num_decodes=3, no_repeat_ngram_size=2,
                                max_decode_length=LENGTH)):
    tokens = np.asarray(decoding.generate(module, params, enc, options, eos_id=eos)[0])
    assert not _has_repeated_ngram(tokens.reshape(-1, LENGTH), 2, eos), options.decode


def test_apply_no_repeat_ngram_by_hand():
  logits = jnp.zeros((1, 10))
  previous = jnp.array([[0, 5, 6, 7, 5, 9, 9, 9]])  # only indices 0..4 are filled at step 4
  banned = lambda n, step: np.flatnonzero(np.isinf(np.asarray(
      decoding.apply_no_repeat_ngram(logits, previous, n, step))[0])).tolist()
  assert banned(2, 4) == [6]  # "5 6" was seen, the row ends in 5
  assert banned(3, 4) == []  # "7 5" was never followed before
  assert banned(1, 4) == [0, 5, 6, 7]  # the start token counts, as in transformers
  assert banned(2, 1) == []  # "0 5" is the only bigram; the row ends in 5
  assert banned(2, 3) == []
  assert banned(5, 3) == []  # shorter than n
  assert banned(0, 4) == []


def test_top_k_and_top_p_filters():
  logits = jnp.log(jnp.array([[0.05, 0.4, 0.1, 0.3, 0.15]]))
  kept = lambda x: np.flatnonzero(np.isfinite(np.asarray(x)[0])).tolist()
  assert kept(decoding.top_k_filter(logits, 2)) == [1, 3]
  assert kept(decoding.top_k_filter(logits, 0)) == [0, 1, 2, 3, 4]
  assert kept(decoding.top_p_filter(logits, 0.69)) == [1, 3]  # 0.4 + 0.3 >= 0.69
  assert kept(decoding.top_p_filter(logits, 0.71)) == [1, 3, 4]
  assert kept(decoding.top_p_filter(logits, 0.01)) == [1]  # always the top token
  assert kept(decoding.top_p_filter(logits, 1.0)) == [0, 1, 2, 3, 4]
  np.testing.assert_array_equal(decoding.top_k_filter(logits, 2)[0, 1], logits[0, 1])


@pytest.mark.parametrize('shape', [(3, 32128), (2, 1000), (7,)])
def test_chunked_top_k_equals_lax_top_k(shape):
  x = jax.random.normal(jax.random.key(0), shape)
  for k in (1, 5, 6):
    values, indices = decoding.chunked_top_k(x, k)
    expected_values, expected_indices = jax.lax.top_k(x, k)
    np.testing.assert_array_equal(values, expected_values)
    np.testing.assert_array_equal(indices, expected_indices)


def _draws(logits, n=4000, **kwargs) -> np.ndarray:
  keys = jax.random.split(jax.random.key(0), n)
  draw = jax.jit(jax.vmap(lambda key: decoding.sample_token(key, logits, **kwargs)))
  return np.asarray(draw(keys))


def test_sampling_stays_inside_top_k_and_nucleus():
  logits = jax.random.normal(jax.random.key(1), (50,)) * 2.0
  probs = np.asarray(jax.nn.softmax(logits))
  order = np.argsort(-probs)
  draws = _draws(logits, top_k=5)
  assert set(draws) == set(order[:5].tolist())  # all of the top 5, and nothing else
  for p in (0.5, 0.9):
    size = int(np.searchsorted(np.cumsum(probs[order]), p) + 1)
    nucleus = set(order[:size].tolist())
    assert set(_draws(logits, top_p=p)) == nucleus
    # Top-p after top-k works on the k best, renormalised (as transformers does).
    top3 = probs[order[:3]] / probs[order[:3]].sum()
    size = int(np.searchsorted(np.cumsum(top3), p) + 1)
    assert set(_draws(logits, top_k=3, top_p=p)) == set(order[:size].tolist())
  # Temperature sharpens: at 0.3 the top token wins more often than at 1.
  top_share = lambda t: np.mean(_draws(logits, temperature=t) == order[0])
  assert top_share(0.3) > top_share(1.0) + 0.1
  assert set(_draws(logits, n=10, temperature=0.0)) == {order[0]}


def test_sampling_seeds_rows_and_padding():
  _, module, params, enc, eos = _model('t5_1_1')
  options = DecodeOptions(decode='sample', num_decodes=2, max_decode_length=LENGTH, seed=7)
  tokens, scores = map(np.asarray, decoding.generate(module, params, enc, options, eos_id=eos))
  assert tokens.shape == (3, 2, LENGTH) and scores.shape == (3, 2)
  again = np.asarray(decoding.generate(module, params, enc, options, eos_id=eos)[0])
  np.testing.assert_array_equal(tokens, again)
  other = np.asarray(decoding.generate(module, params, enc, dataclasses.replace(options, seed=8),
                                       eos_id=eos)[0])
  assert (other != tokens).any()
  assert (tokens[:, 0] != tokens[:, 1]).any(), 'two samples of one input should differ'
  # A row's draws depend on its own input only: changing row 2 leaves rows 0 and 1 alone.
  changed = enc.copy()
  changed[2, :5] = enc[0, :5]
  tokens_c = np.asarray(decoding.generate(module, params, changed, options, eos_id=eos)[0])
  np.testing.assert_array_equal(tokens_c[:2], tokens[:2])
  assert (tokens_c[2] != tokens[2]).any()
  # One compiled function serves every seed.
  assert decoding._compiled(module, dataclasses.replace(options, seed=0), eos,
                           decoding.one_device(), False)._cache_size() == 1
  # Scores are the model's log-probs of the sampled tokens.
  np.testing.assert_allclose(
      scores.reshape(-1),
      _teacher_forced_scores(module, params, np.repeat(enc, 2, 0), tokens.reshape(6, -1), eos),
      atol=1e-4)


@pytest.mark.parametrize('decode', ['greedy', 'sample', 'beam'])
def test_padding_row_leaves_other_rows_unchanged(decode):
  _, module, params, enc, eos = _model('t5_1_0')
  options = DecodeOptions(decode=decode, num_decodes=1 if decode == 'greedy' else 2,
                          max_decode_length=LENGTH, top_k=10, seed=5)
  tokens, scores = map(np.asarray, decoding.generate(module, params, enc, options, eos_id=eos))
  padded = np.concatenate([enc, np.zeros_like(enc[:1])])
  tokens_p, scores_p = map(np.asarray, decoding.generate(module, params, padded, options,
                                                          eos_id=eos))
  np.testing.assert_array_equal(tokens_p[:3], tokens)
  np.testing.assert_allclose(scores_p[:3], scores, atol=1e-5)
  assert not tokens_p[3].any() and not scores_p[3].any()  # a padding row is not decoded


def test_top_k_one_and_temperature_zero_sample_greedily():
  _, module, params, enc, eos = _model('t5_1_0')
  greedy = np.asarray(decoding.generate(module, params, enc, DecodeOptions(
      max_decode_length=LENGTH), eos_id=eos)[0])
  for kwargs in (dict(top_k=1), dict(temperature=0.0)):
    sampled = decoding.generate(module, params, enc, DecodeOptions(
        decode='sample', max_decode_length=LENGTH, **kwargs), eos_id=eos)[0]
    np.testing.assert_array_equal(np.asarray(sampled), greedy)


def test_brevity_penalty_values():
  assert decoding.brevity_penalty(0.6, 1) == 1.0
  assert decoding.brevity_penalty(0.0, 17) == 1.0
  assert decoding.brevity_penalty(1.0, 7) == 2.0
  assert decoding.brevity_penalty(0.6, 13) == 3.0 ** 0.6
  assert decoding.brevity_penalty(0.5, 31) == 6.0 ** 0.5
  np.testing.assert_allclose(decoding.brevity_penalty(0.6, jnp.array([1.0, 13.0])),
                             [1.0, 3.0 ** 0.6], rtol=1e-6)


def test_bad_options_are_named():
  _, module, params, enc, _ = _model('t5_1_0')
  with pytest.raises(ValueError, match='num_decodes=2 with greedy'):
    decoding.generate(module, params, enc, DecodeOptions(num_decodes=2))
  with pytest.raises(ValueError, match="decode='topk'"):
    decoding.generate(module, params, enc, DecodeOptions(decode='topk'))
  with pytest.raises(ValueError, match='top_p=0'):
    decoding.generate(module, params, enc, DecodeOptions(decode='sample', top_p=0.0))


# ----------------------------------------------------------------------------- traced settings

# (temperature, top_k, top_p): greedy, top-k off, top-k narrow (<= K_FAST) and wide, K_MAX.
TRACED_SETTINGS = [(0.7, 0, 1.0), (1.0, 0, 0.9), (0.0, 5, 1.0), (0.7, 5, 1.0), (0.7, 1, 1.0),
                   (2.0, 8, 0.5), (0.7, 9, 1.0), (1.3, 40, 0.9), (0.5, 100, 1.0),
                   (0.7, 100, 0.8), (0.3, 0, 0.5)]


def _traced_draws(keys, logits, settings) -> np.ndarray:
  t, k, p = (np.array(x) for x in zip(*settings))
  rows = jnp.broadcast_to(logits, (len(settings),) + logits.shape)
  return np.asarray(jax.jit(decoding.sample_tokens_traced)(keys, rows, t.astype(np.float32),
                                                           k.astype(np.int32),
                                                           p.astype(np.float32)))


@pytest.mark.parametrize('vocab', [1000, 101, 50])
def test_traced_sampler_draws_the_tokens_of_sample_token(vocab):
  logits = jax.random.normal(jax.random.key(1), (vocab,)) * 3.0
  keys = jax.random.split(jax.random.key(0), 600)
  # Each setting on 40 keys, every row with another setting in one call (as a shared
  # decode has them), against the static sampler on the same keys and logits.
  settings = [TRACED_SETTINGS[i % len(TRACED_SETTINGS)] for i in range(440)]
  traced = _traced_draws(keys[:440], logits, settings)
  static = np.asarray(jax.jit(jax.vmap(
      lambda key, i: jax.lax.switch(i, [functools.partial(
          decoding.sample_token, logits=logits, temperature=t, top_k=k, top_p=p)
          for t, k, p in TRACED_SETTINGS], key)))(
      keys[:440], jnp.arange(440) % len(TRACED_SETTINGS)))
  np.testing.assert_array_equal(traced, static)
  # Many different tokens came out where the settings allow it: the test is not vacuous.
  wide = [i for i, s in enumerate(settings) if s == (1.3, 40, 0.9)]
  assert len(set(traced[wide].tolist())) >= 5
  # A batch of one setting alone takes other branches of the sampler: same tokens.
  for t, k, p in [(0.7, 5, 1.0), (0.7, 100, 0.8), (1.0, 0, 0.9), (0.7, 0, 1.0)]:
    static = jax.jit(jax.vmap(functools.partial(decoding.sample_token, logits=logits,
                                                temperature=t, top_k=k, top_p=p)))
    np.testing.assert_array_equal(_traced_draws(keys[440:], logits, [(t, k, p)] * 160),
                                  static(keys[440:]))


@pytest.mark.parametrize('temperature', [1e-38, 1e-45, 1e-30, 1e-6])
def test_traced_sampler_is_greedy_not_nan_at_tiny_temperatures(temperature):
  logits = jax.random.normal(jax.random.key(2), (1000,)) * 3.0
  keys = jax.random.split(jax.random.key(0), 6)
  settings = [(temperature, k, p) for k in (0, 5, 100) for p in (1.0, 0.5)]
  assert _traced_draws(keys, logits, settings).tolist() == [int(jnp.argmax(logits))] * 6


def test_generate_sampled_matches_generate_with_one_program():
  _, module, params, enc, eos = _model('t5_1_0')
  fn = decoding._compiled(module, DecodeOptions(decode='sample', max_decode_length=LENGTH),
                          eos, decoding.one_device(), True)
  before = fn._cache_size()
  settings = [(0.8, 0, 1.0), (1.0, 10, 0.9), (0.0, 0, 1.0), (0.6, 100, 0.7), (1.2, 3, 1.0)]
  rows = {}
  for t, k, p in settings:
    options = DecodeOptions(decode='sample', max_decode_length=LENGTH, temperature=t, top_k=k,
                            top_p=p, seed=7)
    tokens, scores = map(np.asarray, decoding.generate(module, params, enc, options, eos_id=eos))
    traced, traced_scores = map(np.asarray, decoding.generate_sampled(
        module, params, enc, t, k, p, seed=7, max_decode_length=LENGTH, eos_id=eos))
    np.testing.assert_array_equal(traced, tokens[:, 0])
    np.testing.assert_allclose(traced_scores, scores[:, 0], atol=1e-5)
    rows[(t, k, p)] = traced
  # Per-row settings: each row decodes as it would with its settings for the whole batch.
  mixed = [settings[0], settings[1], settings[3]]
  t, k, p = (np.array(x) for x in zip(*mixed))
  traced = np.asarray(decoding.generate_sampled(module, params, enc, t, k, p, seed=7,
                                                max_decode_length=LENGTH, eos_id=eos)[0])
  for row, setting in enumerate(mixed):
    np.testing.assert_array_equal(traced[row], rows[setting][row])
  # Six distinct settings (and a mixed batch), one compiled program.
  assert fn._cache_size() - before == 1
  with pytest.raises(ValueError, match=r'top_k\[0\]=101: use 0..100'):
    decoding.generate_sampled(module, params, enc, 1.0, 101, 1.0)
  with pytest.raises(ValueError, match=r'temperature\[2\]=nan: use a finite value >= 0'):
    decoding.generate_sampled(module, params, enc, [1.0, 1.0, float('nan')], 0, 1.0)


@pytest.mark.parametrize('temperature', [1e-38, 1e-45, 1e-30, 1e-6])
def test_sample_token_is_greedy_not_nan_at_tiny_temperatures(temperature):
  """`t5x infer`'s static sampler: a tiny temperature is greedy, never a NaN draw."""
  logits = jax.random.normal(jax.random.key(2), (1000,)) * 3.0
  best = int(jnp.argmax(logits))
  for key in jax.random.split(jax.random.key(0), 3):
    for top_k, top_p in ((0, 1.0), (5, 1.0), (0, 0.5)):
      assert int(decoding.sample_token(key, logits, temperature, top_k, top_p)) == best

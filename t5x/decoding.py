"""Decoding for the T5 `Transformer`: greedy, temperature sampling and beam search.

`generate` runs the encoder once per batch, then the decoder one position at a time on
the network's key/value cache, the whole loop inside one jitted `jax.lax.while_loop`
that stops as soon as every row is done. Compiled functions are cached per (module,
options without the seed, eos id); jit itself keys them by shapes. The cross-attention
keys and values are projected once per batch, not once per step (see `_cross_kv`).

Conventions (T5X's and transformers'): the decoder starts from token 0; a row stops at
EOS and emits 0 after it; an encoder row of only padding (all 0) is not decoded at all
and gets 0 tokens and score 0, so padded batches stop as early as real ones.

Scores are sums of the model's log-probabilities (log_softmax of the raw logits, before
temperature or filters) of the generated tokens, EOS included. Beam search divides that
sum by T5X's brevity penalty.

Beam search and its length penalty, against transformers:
  T5X ranks a finished hypothesis of `len` tokens (EOS included) by
  `sum_log_probs / ((5 + len) / 6) ** alpha`; transformers by
  `sum_log_probs / len ** length_penalty`. Both divisors are 1 at len 1 and grow with
  `len`, but T5X's grows more slowly (at 0.6, from 1 to 10 tokens it goes 1 -> 1.73
  against 1 -> 3.98), so for alpha > 0 the two can rank hypotheses of different lengths
  differently; only alpha = length_penalty = 0 (both divisors 1) agrees token for token.
  At alpha = 0 this search equals `transformers.generate(num_beams=N, length_penalty=0.0,
  early_stopping='never', do_sample=False)`, because both:
  - keep 2N candidates a step and continue the best N that do not end in EOS;
  - finish a hypothesis ending in EOS only when it ranks among the best N candidates of
    its step (fairseq's and transformers' rule; T5X also finishes EOS candidates ranked
    N+1..2N, which can return a different sequence, so we follow transformers here);
  - at the last step (max_decode_length) finish the best N candidates whatever their
    last token (the finalisation rule: live beams compete with finished ones);
  - stop a row once its best live log-prob, divided by the largest penalty any longer
    hypothesis could get (((5 + max_len) / 6) ** alpha here, 1 at alpha = 0), can no
    longer beat its worst finished hypothesis. That bound is exact, so stopping never
    changes the result; `early_stopping='never'` is transformers' exact bound (False is
    the same at length_penalty 0; True stops once N hypotheses are finished, which can
    miss better longer ones).

Shapes use: b batch, n num_decodes, B = b * n rows in the loop, l encoder length,
L max_decode_length, v vocab.
"""
import dataclasses
import functools
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t5x import model_config
from t5x import partitioning
from t5x import scan_layout
from t5x.examples.t5.network import Transformer

Array = jax.Array
# Scores of impossible hypotheses: finite, so sums and comparisons never give NaN.
NEG_INF = -1.0e7
_METHODS = ('greedy', 'beam', 'sample')


@dataclasses.dataclass(frozen=True)
class DecodeOptions:
  """How to decode; see `generate`.

  decode: 'greedy' | 'beam' | 'sample'.
  num_decodes: beams for 'beam', samples per input for 'sample' (1 for 'greedy').
  alpha: T5X's brevity-penalty exponent, beam search only.
  temperature, top_k (0 = off), top_p (1.0 = off): sampling only; temperature 0 samples
    greedily.
  no_repeat_ngram_size: forbid completing an n-gram the row already holds (0 = off).
  seed: sampling randomness (any int, taken modulo 2**32); equal inputs and seed give
    equal outputs.
  """
  decode: str = 'greedy'
  max_decode_length: int = 64
  num_decodes: int = 1
  alpha: float = 0.6
  temperature: float = 1.0
  top_k: int = 0
  top_p: float = 1.0
  no_repeat_ngram_size: int = 0
  seed: int = 0

  def validate(self) -> 'DecodeOptions':
    """Returns self; raises ValueError naming the bad option and how to fix it."""
    if self.decode not in _METHODS:
      raise ValueError(f'DecodeOptions.decode={self.decode!r}: use one of {_METHODS}')
    if self.max_decode_length < 1:
      raise ValueError(f'DecodeOptions.max_decode_length={self.max_decode_length}: use >= 1')
    if self.num_decodes < 1:
      raise ValueError(f'DecodeOptions.num_decodes={self.num_decodes}: use >= 1')
    if self.decode == 'greedy' and self.num_decodes != 1:
      raise ValueError(f'DecodeOptions.num_decodes={self.num_decodes} with greedy decoding: '
                       "greedy gives one decode per input; use decode='beam' or 'sample'")
    if self.alpha < 0:
      raise ValueError(f'DecodeOptions.alpha={self.alpha}: use >= 0 (0 = no brevity penalty)')
    if self.temperature < 0:
      raise ValueError(f'DecodeOptions.temperature={self.temperature}: use >= 0')
    if self.top_k < 0:
      raise ValueError(f'DecodeOptions.top_k={self.top_k}: use >= 0 (0 = off)')
    if not 0.0 < self.top_p <= 1.0:
      raise ValueError(f'DecodeOptions.top_p={self.top_p}: use 0 < top_p <= 1 (1 = off)')
    if self.no_repeat_ngram_size < 0:
      raise ValueError(f'DecodeOptions.no_repeat_ngram_size={self.no_repeat_ngram_size}: '
                       'use >= 0 (0 = off)')
    return self


# ----------------------------------------------------------------------------- logits processors

def brevity_penalty(alpha: float, length) -> Any:
  """T5X's (GNMT's) length penalty ((5 + length) / 6) ** alpha; float or float32 array."""
  return ((5.0 + length) / 6.0) ** alpha


def chunked_top_k(x: Array, k: int, chunk: int = 128) -> tuple[Array, Array]:
  """`jax.lax.top_k` over the last axis ([..., v] -> values, int32 indices [..., k]),
  several times faster for a small k over a large vocabulary on CPU.

  The vocabulary is cut into chunks; the k best tokens lie in the k chunks with the
  largest maxima (a token outside them would have k larger chunk maxima above it), so
  one full pass for the chunk maxima and a top-k over k * chunk candidates suffice.
  Equal values may come back at other indices than `lax.top_k` gives.
  """
  v = x.shape[-1]
  chunks = -(-v // chunk)
  if k * chunk >= v or k > chunks:
    return jax.lax.top_k(x, k)
  padded = jnp.pad(x, [(0, 0)] * (x.ndim - 1) + [(0, chunks * chunk - v)],
                   constant_values=-jnp.inf)
  padded = padded.reshape(x.shape[:-1] + (chunks, chunk))
  # Candidate chunks in index order, so ties resolve towards low indices as in lax.top_k.
  best_chunks = jnp.sort(jax.lax.top_k(jnp.max(padded, axis=-1), k)[1], axis=-1)
  candidates = jnp.take_along_axis(padded, best_chunks[..., None], axis=-2)
  values, pick = jax.lax.top_k(candidates.reshape(x.shape[:-1] + (k * chunk,)), k)
  indices = best_chunks[..., None] * chunk + jnp.arange(chunk)
  return values, jnp.take_along_axis(indices.reshape(pick.shape[:-1] + (-1,)), pick, axis=-1)


def top_k_filter(logits: Array, k: int) -> Array:
  """float [..., v] -> same, with every logit below the k-th largest set to -inf.

  Ties with the k-th largest are kept (as transformers does); k = 0 or k >= v is off.
  """
  if k <= 0 or k >= logits.shape[-1]:
    return logits
  kth = chunked_top_k(logits, k)[0][..., -1:]
  return jnp.where(logits < kth, -jnp.inf, logits)


def top_p_filter(logits: Array, p: float) -> Array:
  """float [..., v] -> same, keeping the nucleus: the fewest most-likely tokens whose
  probability mass reaches p (always at least the top token); the rest get -inf.
  """
  if p >= 1.0:
    return logits
  return _nucleus(logits, -jnp.sort(-logits, axis=-1), p)


def _nucleus(logits: Array, sorted_logits: Array, p) -> Array:
  """`top_p_filter`'s work, given the logits sorted descending; p is a float or an array
  broadcasting against float [..., 1] (one p per row)."""
  probs = jax.nn.softmax(sorted_logits, axis=-1)
  # A token is in the nucleus when the tokens ranked above it hold less than p.
  mass_above = jnp.cumsum(probs, axis=-1) - probs
  kept = jnp.where(mass_above < p, sorted_logits, jnp.inf)
  threshold = jnp.min(kept, axis=-1, keepdims=True)
  return jnp.where(logits < threshold, -jnp.inf, logits)


def apply_no_repeat_ngram(logits: Array, previous_tokens: Array, n: int, step) -> Array:
  """Forbids (-inf) every token that would complete an n-gram the row already holds.

  Args:
    logits: float [B, v] for the next token.
    previous_tokens: int32 [B, T]: the decoder start token 0 at index 0, then the
      generated tokens; only indices 0..step are filled. The start token counts, as in
      transformers' NoRepeatNGramLogitsProcessor for encoder-decoder models (its
      input_ids start with decoder_start_token_id).
    n: n-gram size; 0 = off.
    step: int32 scalar, the number of tokens generated so far.
  Returns:
    float [B, v].
  """
  num_windows = previous_tokens.shape[1] - n + 1
  if n <= 0 or num_windows <= 0:
    return logits
  rows = previous_tokens.shape[0]
  starts = jnp.arange(num_windows)
  windows = previous_tokens[:, starts[:, None] + jnp.arange(n)[None, :]]  # [B, W, n]
  # The row's last n-1 tokens, indices step-n+2 .. step (clipped; unused when step < n-1).
  suffix_at = jnp.clip(step - n + 2 + jnp.arange(n - 1), 0, previous_tokens.shape[1] - 1)
  suffix = previous_tokens[:, suffix_at]  # [B, n-1]
  complete = starts + n - 1 <= step  # the window lies inside the filled part
  match = jnp.all(windows[:, :, :-1] == suffix[:, None, :], axis=-1) & complete[None, :]
  # Scatter-min: matching windows push -inf onto their last token, the rest +inf (no-op).
  update = jnp.where(match, -jnp.inf, jnp.inf).astype(logits.dtype)
  return logits.at[jnp.arange(rows)[:, None], windows[:, :, -1]].min(update)


# Below this (static) temperature `sample_token` shifts the logits before dividing; above
# it the division cannot overflow for float32 logits under 1e36, and draws stay bit for bit
# what they were.
_SHIFT_BELOW = 1e-2
_FLOAT32_TINY = float(jnp.finfo(jnp.float32).tiny)


def sample_token(key: Array, logits: Array, temperature: float = 1.0, top_k: int = 0,
                 top_p: float = 1.0) -> Array:
  """Draws one token from float [v] logits: temperature, then top-k, then top-p (the
  order transformers applies them). Returns int32 []. Temperature 0 is argmax, and so is
  one under float32's smallest normal number (1.2e-38), which XLA flushes to 0.

  With top-k on, it samples among the k best only (found by `chunked_top_k`), which is the
  same distribution as `top_k_filter` (but for ties at the k-th logit) at a fraction of
  the cost of a categorical draw over the whole vocabulary.
  """
  if temperature < _FLOAT32_TINY:  # 0, or a subnormal that XLA flushes to 0: greedy
    return jnp.argmax(logits).astype(jnp.int32)
  logits = logits.astype(jnp.float32)
  if temperature < _SHIFT_BELOW:
    # logits / 1e-38 overflows to inf and the draw to NaN; a shift by the row's largest
    # logit leaves the distribution as it is and the division finite (0 or -inf).
    logits = logits - jnp.max(logits)
  logits = logits / temperature
  if 0 < top_k < logits.shape[-1]:
    values, indices = chunked_top_k(logits, top_k)
    choice = jax.random.categorical(key, top_p_filter(values, top_p))
    return indices[choice].astype(jnp.int32)
  return jax.random.categorical(key, top_p_filter(logits, top_p)).astype(jnp.int32)


# ----------------------------------------------------------------------------- traced settings
# `sample_token` takes its settings as Python numbers, so each new value compiles a new
# program. A server cannot afford that (seconds per value, on the one decode worker), so
# `sample_tokens_traced` takes them as per-row arrays: one program per shape serves every
# temperature, top-k (up to K_MAX) and top-p, and rows with different settings can share
# a decode.

K_MAX = 100  # the largest top_k the traced sampler supports (t5x serve's limit)
K_FAST = 8   # top-k widths up to this use a cheaper candidate search (same tokens)


def _nucleus_rows(logits: Array, sorted_logits: Array, top_p: Array) -> Array:
  """`top_p_filter` with one p per row: float [B, w] logits, the same sorted descending,
  float32 [B] p -> [B, w]; rows with p >= 1 are returned unchanged."""
  p = top_p[:, None]
  return jnp.where(p >= 1.0, logits, _nucleus(logits, sorted_logits, p))


# Temperatures below this divide as if they were this: logits up to 3e8 in magnitude stay
# finite (logits / 1e-38 would be inf, and inf - inf in a softmax NaN), and the draw is
# the argmax there anyway.
_MIN_DIVISOR = 1e-30


def _scale(logits: Array, temperature: Array) -> Array:
  """logits / temperature, row by row (float [B, w], float32 [B]); finite for any
  temperature >= 0 (see _MIN_DIVISOR; greedy rows, at 0, have their draw replaced by the
  argmax). No shift by the row's maximum: on CPU that subtraction made the whole decode
  2.3x slower (100 ms against 43 ms for 64 rows of the quickstart model)."""
  return logits / jnp.maximum(temperature, _MIN_DIVISOR)[:, None]


def sample_tokens_traced(keys: Array, logits: Array, temperature: Array, top_k: Array,
                         top_p: Array) -> Array:
  """One token per row, with each row's sampling settings given as arrays.

  Args:
    keys: PRNG keys [B].
    logits: float [B, v].
    temperature: float32 [B]; 0 = greedy (argmax).
    top_k: int32 [B]; 0 (or >= v) = off; at most K_MAX.
    top_p: float32 [B]; 1 = off.
  Returns:
    int32 [B].

  The same distribution as `sample_token` with the same settings, and the same tokens
  for the same keys: for top-k it adds Gumbel noise to the K_MAX best candidates with
  ranks >= top_k masked, and jax's (default, partitionable) threefry gives the first k
  values of a K_MAX-wide draw equal to a k-wide one, so the argmax is `sample_token`'s.
  (Temperatures under _MIN_DIVISOR divide by it: see `_scale`.) The
  full-vocabulary draw (top_k off) and its sort for top-p run only when some row needs
  them (`lax.cond` on the batch), so a batch of top-k rows pays for top-k only.
  """
  logits = logits.astype(jnp.float32)
  vocab = logits.shape[-1]
  width = min(K_MAX, vocab)
  temperature = temperature.astype(jnp.float32)
  top_p = top_p.astype(jnp.float32)
  top_k = top_k.astype(jnp.int32)
  whole = (top_k <= 0) | (top_k >= vocab)  # rows that sample the whole vocabulary
  sampled = temperature > 0
  k = jnp.where(whole, width, top_k)

  def top_k_draw(candidates: int) -> Array:
    values, indices = chunked_top_k(logits, candidates)
    scaled = _scale(values, temperature)
    ranked = jnp.where(jnp.arange(candidates) < k[:, None], scaled, -jnp.inf)
    ranked = _nucleus_rows(ranked, ranked, top_p)
    # Gumbel noise as `jax.random.categorical` draws it over `candidates` values. Ranks
    # >= k are -inf, so the noise there never decides, and only as many values are drawn
    # as this branch looks at.
    noise = jax.vmap(lambda key: jax.random.gumbel(key, (candidates,), jnp.float32))(keys)
    pick = jnp.argmax(ranked + noise, axis=-1)
    return jnp.take_along_axis(indices, pick[:, None], axis=-1)[:, 0]

  if width <= K_FAST:
    token = top_k_draw(width)
  else:
    narrow = jnp.max(jnp.where(whole | ~sampled, 0, top_k)) <= K_FAST
    token = jax.lax.cond(narrow, lambda: top_k_draw(K_FAST), lambda: top_k_draw(width))

  def whole_vocabulary_draw() -> Array:
    scaled = _scale(logits, temperature)
    needs_sort = jnp.any(whole & sampled & (top_p < 1.0))
    scaled = jax.lax.cond(
        needs_sort, lambda: _nucleus_rows(scaled, -jnp.sort(-scaled, axis=-1), top_p),
        lambda: scaled)
    return jax.vmap(jax.random.categorical)(keys, scaled)

  token = jax.lax.cond(jnp.any(whole & sampled),
                       lambda: jnp.where(whole, whole_vocabulary_draw(), token), lambda: token)
  return jnp.where(sampled, token, jnp.argmax(logits, axis=-1)).astype(jnp.int32)


# ----------------------------------------------------------------------------- the model

def _encode(module: Transformer, params, encoder_input_tokens: Array) -> Array:
  """int32 [b, l] -> encoded [b, l, e] (dropout off)."""
  return module.apply({'params': params}, encoder_input_tokens, enable_dropout=False,
                      method=Transformer.encode)


def _init_cache(module: Transformer, params, encoded: Array, encoder_input_tokens: Array,
                length: int) -> Any:
  """The decoder cache for `length` positions and the batch of `encoded`.

  Made as the network makes it, by one decode=True call on full-length zero inputs.
  Inside jit only what the cache depends on is computed (today: zeros); the call's
  logits are unused, and dead-code elimination drops them.
  """
  dummy = jnp.zeros((encoded.shape[0], length), jnp.int32)
  _, variables = module.apply({'params': params}, encoded, encoder_input_tokens, dummy,
                              decode=True, enable_dropout=False, mutable=['cache'],
                              method=Transformer.decode)
  # On a mesh: rows over 'data', heads over 'model' (a no-op outside one). The decode
  # loop's carry keeps the sharding it starts with.
  return jax.tree_util.tree_map_with_path(
      lambda path, x: nn.with_logical_constraint(x, CACHE_AXES[path[-1].key]),
      variables['cache'])


# Logical axes of the decoder cache's leaves (per layer): keys and values [B, L, h, d].
CACHE_AXES = {'cached_key': ('batch', 'length', 'heads', 'kv'),
              'cached_value': ('batch', 'length', 'heads', 'kv'), 'cache_index': ()}


def _is_cross_kv(context) -> bool:
  """True for the `key`/`value` projections of a decoder layer's cross attention."""
  path = context.module.path
  return (context.method_name == '__call__' and len(path) >= 2
          and path[-2] == 'encoder_decoder_attention' and path[-1] in ('key', 'value'))


def _cross_kv(module: Transformer, params, encoded: Array, encoder_input_tokens: Array,
              ) -> dict[tuple[str, ...], Array]:
  """{module path: [b, h, l, d]}: each cross-attention key/value projection of `encoded`.

  The network projects the encoder output again at every decode step (half of a step's
  time at d_model 256, l 64 on CPU), though it depends on the encoder output only. So the
  projections are made once, by the network's own Dense layers (recorded with a flax
  method interceptor on a one-position pass whose other outputs XLA drops), and replayed
  by `_decoder_step_fn`. They are kept head-major, the layout the attention dot wants:
  the replay transposes them back and the network's einsum transposes them again, which
  XLA cancels, so no [B, l, h, d] transpose is left inside the loop.
  """
  records = {}

  def record(next_fun, args, kwargs, context):
    out = next_fun(*args, **kwargs)
    if _is_cross_kv(context):
      records[context.module.path] = out
    return out

  with nn.intercept_methods(record):
    module.apply({'params': params}, encoded, encoder_input_tokens,
                 jnp.zeros((encoded.shape[0], 1), jnp.int32), enable_dropout=False,
                 method=Transformer.decode)
  heads = module.config.num_heads
  return {path: jnp.transpose(x.reshape(x.shape[:2] + (heads, -1)), (0, 2, 1, 3))
          for path, x in records.items()}


def _decoder_step_fn(module: Transformer, params, encoded: Array, encoder_input_tokens: Array,
                     repeats: int) -> Callable:
  """(int32 [B, 1] tokens, cache) -> (float32 [B, v] logits, cache): one cached step.

  `encoded` [b, l, e] and `encoder_input_tokens` [b, l] are per input; each input has
  `repeats` rows (beams or samples) in the loop, B = b * repeats. Same logits as the
  network's own decode step; only the cross-attention key/value projections are
  replayed from `_cross_kv` instead of recomputed.
  """
  cross_kv = _cross_kv(module, params, encoded, encoder_input_tokens)
  cross_kv = {path: _expand(x, repeats) for path, x in cross_kv.items()}
  # The barrier stops XLA from sinking the transposes (and repeats) into the loop body.
  cross_kv = jax.lax.optimization_barrier(cross_kv)
  encoded, encoder_input_tokens = _expand(encoded, repeats), _expand(encoder_input_tokens, repeats)

  def replay(next_fun, args, kwargs, context):
    if not _is_cross_kv(context) or context.module.path not in cross_kv:
      return next_fun(*args, **kwargs)
    x = jnp.transpose(cross_kv[context.module.path], (0, 2, 1, 3))  # [B, l, h, d]
    return x.reshape(x.shape[:2] + (-1,))

  def step(tokens, cache):
    with nn.intercept_methods(replay):
      logits, new_vars = module.apply(
          {'params': params, 'cache': cache}, encoded, encoder_input_tokens, tokens,
          decode=True, enable_dropout=False, mutable=['cache'], method=Transformer.decode)
    return logits[:, 0], new_vars['cache']
  return step


def _gather_rows(tree: Any, rows: Array) -> Any:
  """Takes batch rows `rows` (int32 [B]) of every array leaf with a batch axis.

  Scalar leaves (the cache index, shared by all rows) stay as they are.
  """
  return jax.tree.map(lambda x: x if x.ndim == 0 else jnp.take(x, rows, axis=0), tree)


def _expand(x: Array, n: int) -> Array:
  """[b, ...] -> [b * n, ...], each row repeated n times in place (row-major b, n)."""
  return jnp.repeat(x, n, axis=0) if n > 1 else x


# ----------------------------------------------------------------------------- greedy / sampling

def _row_keys(seed: Array, b: int, n: int) -> Array:
  """Per-row PRNG keys [b * n]: fold_in(fold_in(key(seed), input row), sample index).

  Each row's randomness depends only on the seed and its own position, never on the
  other rows, so rows appended to a batch leave the earlier rows' samples unchanged.
  """
  base = jax.random.key(seed)
  per_input = jax.vmap(lambda i: jax.random.fold_in(base, i))(jnp.arange(b))
  per_sample = jax.vmap(lambda k: jax.vmap(lambda j: jax.random.fold_in(k, j))(jnp.arange(n)))
  return per_sample(per_input).reshape(b * n)


def _token_chooser(options: DecodeOptions) -> Callable:
  """(float32 [B, v] logits, keys [B], step) -> int32 [B] next tokens."""
  if options.decode == 'greedy':
    return lambda logits, keys, step: jnp.argmax(logits, axis=-1).astype(jnp.int32)

  def choose(logits, keys, step):
    step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
    draw = functools.partial(sample_token, temperature=options.temperature,
                             top_k=options.top_k, top_p=options.top_p)
    return jax.vmap(draw)(step_keys, logits)
  return choose


def _sample_loop(step_fn: Callable, cache: Any, keys: Array, done: Array, length: int,
                 eos_id: int, options: DecodeOptions, choose: Callable = None
                 ) -> tuple[Array, Array]:
  """Greedy or sampled decoding of B rows until each hits EOS or `length` tokens.

  Args:
    step_fn: (int32 [B, 1], cache) -> (float32 [B, v], cache).
    keys: PRNG keys [B] (unused by greedy).
    done: bool [B], rows that are not decoded (padding).
    choose: (logits, keys, step) -> tokens; default `_token_chooser(options)`.
  Returns:
    (int32 [B, length] tokens with 0 after EOS, float32 [B] summed log-probs).
  """
  rows = done.shape[0]
  choose = choose or _token_chooser(options)

  def cond(state):
    return (state['step'] < length) & ~jnp.all(state['done'])

  def body(state):
    step, seqs, done = state['step'], state['seqs'], state['done']
    last = jax.lax.dynamic_slice_in_dim(seqs, step, 1, axis=1)
    logits, cache = step_fn(last, state['cache'])
    # log p(token) = logit - logsumexp: cheaper than a whole [B, v] log_softmax.
    log_z = jax.nn.logsumexp(logits, axis=-1)
    token = choose(apply_no_repeat_ngram(logits, seqs, options.no_repeat_ngram_size, step),
                   keys, step)
    token = jnp.where(done, 0, token)
    token_lp = jnp.take_along_axis(logits, token[:, None], axis=-1)[:, 0] - log_z
    return {
        'step': step + 1,
        'seqs': jax.lax.dynamic_update_slice_in_dim(seqs, token[:, None], step + 1, axis=1),
        'done': done | (token == eos_id),
        'scores': state['scores'] + jnp.where(done, 0.0, token_lp),
        'cache': cache,
    }

  state = {
      'step': jnp.array(0, jnp.int32),
      # Index 0 holds the decoder start token 0; generated tokens follow.
      'seqs': jnp.zeros((rows, length + 1), jnp.int32),
      'done': done,
      'scores': jnp.zeros((rows,), jnp.float32),
      'cache': cache,
  }
  state = jax.lax.while_loop(cond, body, state)
  return state['seqs'][:, 1:], state['scores']


# ----------------------------------------------------------------------------- beam search

def _beam_loop(step_fn: Callable, cache: Any, inactive: Array, beams: int, length: int,
               eos_id: int, alpha: float, no_repeat_ngram_size: int) -> tuple[Array, Array]:
  """Beam search (see the module docstring for the exact rules).

  Args:
    step_fn: (int32 [b * beams, 1], cache) -> (float32 [b * beams, v], cache).
    cache: decoder cache for b * beams rows (row-major b, beams).
    inactive: bool [b], rows not decoded (padding).
  Returns:
    (int32 [b, beams, length] best first, float32 [b, beams] penalised scores).
  """
  b = inactive.shape[0]
  candidates = 2 * beams
  max_penalty = brevity_penalty(alpha, float(length))
  batch_rows = jnp.arange(b)[:, None]

  def terminated(state):
    """bool [b]: no live beam can still beat the worst finished one (an exact bound)."""
    best_possible = state['live_lp'][:, 0] / max_penalty
    worst_finished = jnp.where(jnp.all(state['fin_flags'], axis=1),
                               jnp.min(state['fin_scores'], axis=1), NEG_INF)
    return best_possible <= worst_finished

  def cond(state):
    return (state['step'] < length) & ~jnp.all(terminated(state) | inactive)

  def body(state):
    step, live_seqs = state['step'], state['live_seqs']
    frozen = terminated(state)
    last = jax.lax.dynamic_slice_in_dim(live_seqs, step, 1, axis=2).reshape(b * beams, 1)
    logits, cache = step_fn(last, state['cache'])
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    log_probs = apply_no_repeat_ngram(log_probs, live_seqs.reshape(b * beams, -1),
                                      no_repeat_ngram_size, step)
    vocab = log_probs.shape[-1]
    # 1. The 2N best one-token extensions over all beams.
    totals = log_probs.reshape(b, beams, vocab) + state['live_lp'][:, :, None]
    top_lp, top_index = chunked_top_k(totals.reshape(b, beams * vocab), candidates)
    source_beam, token = top_index // vocab, (top_index % vocab).astype(jnp.int32)
    top_seqs = jnp.take_along_axis(live_seqs, source_beam[:, :, None], axis=1)
    top_seqs = jax.lax.dynamic_update_slice_in_dim(top_seqs, token[:, :, None], step + 1, axis=2)
    ends = token == eos_id
    # 2. Live beams: the N best that do not end in EOS; the cache follows their source.
    live_lp, pick = jax.lax.top_k(jnp.where(ends, NEG_INF, top_lp), beams)
    source = jnp.take_along_axis(source_beam, pick, axis=1)
    cache = _gather_rows(cache, (batch_rows * beams + source).reshape(-1))
    # 3. Finished: EOS among the N best candidates, or the N best at the last step.
    in_top_n = (jnp.arange(candidates) < beams)[None, :]
    finishing = in_top_n & (ends | (step + 1 == length)) & ~frozen[:, None]
    penalised = top_lp / brevity_penalty(alpha, (step + 1).astype(jnp.float32))
    merged_scores = jnp.concatenate(
        [state['fin_scores'], jnp.where(finishing, penalised, NEG_INF)], axis=1)
    fin_scores, keep = jax.lax.top_k(merged_scores, beams)
    merged_seqs = jnp.concatenate([state['fin_seqs'], top_seqs], axis=1)
    merged_flags = jnp.concatenate([state['fin_flags'], finishing], axis=1)
    return {
        'step': step + 1,
        'live_seqs': jnp.take_along_axis(top_seqs, pick[:, :, None], axis=1),
        'live_lp': live_lp,
        'fin_seqs': jnp.take_along_axis(merged_seqs, keep[:, :, None], axis=1),
        'fin_scores': fin_scores,
        'fin_flags': jnp.take_along_axis(merged_flags, keep, axis=1),
        'cache': cache,
    }

  # Only beam 0 is live at first, so step 1 does not pick N copies of one extension.
  live_lp = jnp.where(jnp.arange(beams) == 0, 0.0, NEG_INF)
  state = {
      'step': jnp.array(0, jnp.int32),
      'live_seqs': jnp.zeros((b, beams, length + 1), jnp.int32),
      'live_lp': jnp.broadcast_to(live_lp, (b, beams)).astype(jnp.float32),
      'fin_seqs': jnp.zeros((b, beams, length + 1), jnp.int32),
      'fin_scores': jnp.full((b, beams), NEG_INF, jnp.float32),
      'fin_flags': jnp.zeros((b, beams), bool),
      'cache': cache,
  }
  state = jax.lax.while_loop(cond, body, state)
  return state['fin_seqs'][:, :, 1:], state['fin_scores']


# ----------------------------------------------------------------------------- entry points

def _unscanned(module: Transformer, params) -> tuple[Transformer, Any]:
  """The layer-per-module twin of a scanned or rematted model, with its parameters.

  The decode cache and the cross-attention replay (`_cross_kv`) address one module per
  layer, so a model trained with `scan_layers` decodes as its unscanned twin: same
  numbers, layers unstacked. Called inside the jitted decode, so callers (training's
  infer_eval with the live parameters) keep only the stacked tree; the unstacked slices
  exist only while a decode runs. Remat only matters for gradients, so decoding drops it.
  """
  cfg = module.config
  if not cfg.scan_layers and cfg.remat_policy == 'none':
    return module, params
  if cfg.scan_layers:
    params = scan_layout.unscan_params(params, cfg.param_scan_axis)
  return Transformer(scan_layout.unscanned_config(cfg)), params


def _generate_impl(module: Transformer, options: DecodeOptions, eos_id: int, params,
                   encoder_input_tokens: Array, seed: Array, settings: tuple = None
                   ) -> tuple[Array, Array]:
  """The traced body of `generate` (everything but the seed is static or shaped), and of
  `generate_sampled` when `settings` holds its per-row (temperature, top_k, top_p)."""
  module, params = _unscanned(module, params)
  b = encoder_input_tokens.shape[0]
  n, length = options.num_decodes, options.max_decode_length
  inactive = ~jnp.any(encoder_input_tokens != 0, axis=1)
  encoded = _encode(module, params, encoder_input_tokens)
  cache = _init_cache(module, params, _expand(encoded, n), _expand(encoder_input_tokens, n),
                      length)
  step_fn = _decoder_step_fn(module, params, encoded, encoder_input_tokens, n)
  if options.decode == 'beam':
    tokens, scores = _beam_loop(step_fn, cache, inactive, n, length, eos_id, options.alpha,
                                options.no_repeat_ngram_size)
  else:
    choose = None
    if settings is not None:
      settings = [_expand(x, n) for x in settings]

      def choose(logits, keys, step):
        step_keys = jax.vmap(lambda k: jax.random.fold_in(k, step))(keys)
        return sample_tokens_traced(step_keys, logits, *settings)
    tokens, scores = _sample_loop(step_fn, cache, _row_keys(seed, b, n), _expand(inactive, n),
                                  length, eos_id, options, choose)
    tokens, scores = tokens.reshape(b, n, length), scores.reshape(b, n)
  tokens = jnp.where(inactive[:, None, None], 0, tokens)
  return tokens, jnp.where(inactive[:, None], 0.0, scores)


@functools.lru_cache(maxsize=64)
def _compiled(module: Transformer, options: DecodeOptions, eos_id: int, partitioner: Any,
              per_row_settings: bool) -> Callable:
  """One decode program per (module config, options without seed, eos id, mesh): the
  parameters sharded by the training rules (their logical axes), rows over 'data'; the
  network's logical constraints shard the activations and the key/value cache (batch
  over 'data', heads over 'model'). Tokens and scores come back replicated, gathered once
  at the end. One device is the 1x1 mesh of the same program (`one_device`)."""
  check_mesh(module, partitioner)
  rows = partitioner.batch_sharding(1)
  in_shardings = (model_config.unflatten(param_shardings(module, partitioner)),
                  partitioner.batch_sharding(2), partitioner.replicated)
  if per_row_settings:  # generate_sampled's (temperature, top_k, top_p), one per row
    in_shardings += ((rows, rows, rows),)
  return partitioner.partition(
      functools.partial(_generate_impl, module, options, eos_id), in_shardings=in_shardings,
      out_shardings=(partitioner.replicated, partitioner.replicated))


@functools.lru_cache(maxsize=None)
def one_device() -> Any:
  """The 1x1 mesh of this process's first device: where `partitioner=None` decodes."""
  return partitioning.PjitPartitioner(1, devices=jax.local_devices()[:1])


def decode_cache(module: Transformer, params, encoder_input_tokens,
                 options: DecodeOptions = DecodeOptions(), partitioner: Any = None) -> Any:
  """The key/value cache a decode of `encoder_input_tokens` starts from, as global arrays
  on `partitioner`'s mesh (None: one device), sharded as the decode program shards it:
  {'decoder': {'layers_<i>': {'self_attention': {'cached_key', 'cached_value':
  [B, L, h, d] (B = rows padded to the data axis, times num_decodes; the activation
  dtype), 'cache_index': int32 []}}}}. For measuring its bytes per device (`t5x plan`, tests)."""
  partitioner = partitioner or one_device()
  options = options.validate()
  tokens = np.asarray(encoder_input_tokens, np.int32)
  tokens = np.pad(tokens, ((0, -len(tokens) % partitioner.data_size), (0, 0)))

  def build(params, tokens):
    plain, params = _unscanned(module, params)
    n = options.num_decodes
    return _init_cache(plain, params, _expand(_encode(plain, params, tokens), n),
                       _expand(tokens, n), options.max_decode_length)

  shape = jax.eval_shape(build, nn.unbox(params), tokens)  # the tree, for out_shardings
  out = jax.tree_util.tree_map_with_path(
      lambda path, _: partitioner.sharding(CACHE_AXES[path[-1].key]), shape)
  fn = partitioner.partition(build, in_shardings=(model_config.unflatten(
      param_shardings(module, partitioner)), partitioner.batch_sharding(2)), out_shardings=out)
  return fn(nn.unbox(params), to_mesh(tokens, partitioner.batch_sharding(2)))


def check_mesh(module: Transformer, partitioner: Any, batch_size: int = None,
               where: str = 'the decode') -> None:
  """Raises, before anything compiles, if `partitioner`'s mesh cannot hold `module` for
  decoding (its 'model' axis must divide the heads, which the key/value cache is split
  by, and every dimension the rules shard) or if `batch_size` (when given) does not
  divide over its 'data' axis."""
  spec = partitioner.mesh_axes(('heads',))  # the mesh axes the rules split heads over
  axes = spec[0] if len(spec) else None
  axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
  ways = int(np.prod([partitioner.mesh.shape[a] for a in axes]))
  heads = module.config.num_heads
  if heads % ways:
    raise ValueError(
        f'{where}: the {"x".join(axes)} axis of size {ways} (partitioning.PjitPartitioner.'
        f'num_partitions) does not divide num_heads={heads}; the key/value cache is split '
        f'by heads over that axis. Use num_partitions dividing {heads}.')
  partitioner.check_divisible(model_config.param_shapes(module.config),
                              model_config.param_axes(module.config))
  if batch_size is not None and batch_size % partitioner.data_size:
    raise ValueError(
        f'{where}: batch_size={batch_size} is not divisible by the data axis of size '
        f'{partitioner.data_size} ({partitioner.mesh.size} devices / num_partitions='
        f'{partitioner.num_partitions}). Use a batch size that is a multiple of '
        f'{partitioner.data_size} (a final partial batch is padded, never dropped).')


def place_params(module: Transformer, params, partitioner: Any) -> Any:
  """`params` (numpy or jax, any layout `module` has) on `partitioner`'s mesh, sharded by
  their logical axes as in training: placed once, then every decode reads them there.
  Across hosts every process passes the same values and keeps only its own shards."""
  shardings = param_shardings(module, partitioner)
  return model_config.unflatten({k: to_mesh(v, shardings[k])
                                 for k, v in model_config.flatten(nn.unbox(params)).items()})


def param_shardings(module: Transformer, partitioner: Any) -> dict:
  """{'a/b/kernel': NamedSharding} of `module`'s parameters under the training rules."""
  return {k: partitioner.sharding(v)
          for k, v in model_config.param_axes(module.config).items()}


def to_mesh(x, sharding) -> Array:
  """`x` (numpy, or a jax array) as one global array with `sharding`. Host values must be
  the same on every process (each keeps only its devices' slices); jax arrays already
  spread over several hosts are resharded on their devices."""
  if isinstance(x, jax.Array) and not x.is_fully_addressable:
    return x if x.sharding == sharding else jax.device_put(x, sharding)
  if isinstance(x, jax.Array) and x.sharding == sharding:
    return x
  if jax.process_count() == 1:
    return jax.device_put(x, sharding)
  host = np.asarray(x)
  return jax.make_array_from_callback(host.shape, sharding, lambda index: host[index])


def to_host(x: Array) -> np.ndarray:
  """A replicated result as numpy on every process (each reads its own copy)."""
  return np.asarray(x if x.is_fully_addressable else x.addressable_data(0))


def _run(module: Transformer, options: DecodeOptions, eos_id: int, partitioner: Any, params,
         encoder_input_tokens, seed: int, settings: tuple = None) -> tuple[Array, Array]:
  """Pads the rows to the data axis, decodes on the mesh, returns the real rows (numpy).

  Padding rows (all 0) decode to nothing and are cut off again; the row keys of the real
  rows do not depend on the batch size, so results equal an unpadded decode.
  """
  partitioner = partitioner or one_device()
  tokens = np.asarray(encoder_input_tokens, np.int32)
  if tokens.ndim != 2:
    raise ValueError(f'encoder_input_tokens has shape {tokens.shape}; expected [batch, length]')
  rows = tokens.shape[0]
  pad = -rows % partitioner.data_size
  args = [nn.unbox(params), to_mesh(np.pad(tokens, ((0, pad), (0, 0))),
                                    partitioner.batch_sharding(2)),
          # Any Python int seeds; PRNG keys take 32 bits.
          to_mesh(np.uint32(seed % 2 ** 32), partitioner.replicated)]
  if settings is not None:
    args.append(tuple(to_mesh(np.pad(x, (0, pad)), partitioner.batch_sharding(1))
                      for x in settings))
  fn = _compiled(module, dataclasses.replace(options, seed=0), int(eos_id), partitioner,
                 settings is not None)
  out_tokens, scores = fn(*args)
  return to_host(out_tokens)[:rows], to_host(scores)[:rows]


def generate(module: Transformer, params, encoder_input_tokens,
             options: DecodeOptions = DecodeOptions(), eos_id: int = 1,
             partitioner: Any = None) -> tuple[np.ndarray, np.ndarray]:
  """Decodes a batch.

  Args:
    module: the network (its config is part of the compile-cache key).
    params: its parameters (boxed or not; numpy, or jax arrays, best already placed by
      `place_params`).
    encoder_input_tokens: int32 [b, l], 0 = padding; the same on every process.
    options: see `DecodeOptions`.
    eos_id: the end-of-sequence token.
    partitioner: a `partitioning.PjitPartitioner` to decode on its mesh (parameters and
      cache sharded as in training; rows padded to a multiple of its 'data' size), or
      None for this process's first device (the 1x1 mesh of the same program).
  Returns:
    tokens: int32 [b, num_decodes, max_decode_length], 0 after EOS; beams best first.
    scores: float32 [b, num_decodes], summed log-probs of the generated tokens (EOS
      included); for beam search divided by `brevity_penalty(alpha, length)`.
    Both numpy, on every process.
  """
  options = options.validate()
  return _run(module, options, eos_id, partitioner, params, encoder_input_tokens,
              options.seed)


def generate_sampled(module: Transformer, params, encoder_input_tokens, temperature, top_k,
                     top_p, *, seed: int = 0, max_decode_length: int = 64,
                     no_repeat_ngram_size: int = 0, eos_id: int = 1,
                     partitioner: Any = None) -> tuple[np.ndarray, np.ndarray]:
  """Samples one decode per input row, each row with its own settings, from one compiled
  program per shape: new settings never compile (for servers; see
  `sample_tokens_traced`).

  Args:
    encoder_input_tokens: int32 [b, l], 0 = padding (a row of padding is not decoded).
    temperature, top_k, top_p: per row, [b] (or scalars, for every row): as in
      `DecodeOptions`, with top_k at most K_MAX.
    seed, max_decode_length, no_repeat_ngram_size, eos_id, partitioner: as in `generate`;
      the length, n-gram rule and eos id are static (one program each).
  Returns:
    tokens: int32 [b, max_decode_length], 0 after EOS.
    scores: float32 [b], summed log-probs of the generated tokens (EOS included).
  """
  b = np.shape(encoder_input_tokens)[0]
  settings = tuple(np.broadcast_to(np.asarray(x, dtype), (b,)) for x, dtype in
                   ((temperature, np.float32), (top_k, np.int32), (top_p, np.float32)))
  temperature, top_k, top_p = settings
  for name, values, ok, allowed in (
      ('temperature', temperature, np.isfinite(temperature) & (temperature >= 0),
       'a finite value >= 0 (0 = greedy)'),
      ('top_k', top_k, (top_k >= 0) & (top_k <= K_MAX), f'0..{K_MAX} (0 = off)'),
      ('top_p', top_p, (top_p > 0) & (top_p <= 1), '0 < top_p <= 1 (1 = off)')):
    if not ok.all():
      row = int(np.argmin(ok))
      raise ValueError(f'generate_sampled: {name}[{row}]={values[row]}: use {allowed}')
  options = DecodeOptions(decode='sample', max_decode_length=max_decode_length,
                          no_repeat_ngram_size=no_repeat_ngram_size).validate()
  tokens, scores = _run(module, options, eos_id, partitioner, params, encoder_input_tokens,
                        seed, settings)
  return tokens[:, 0], scores[:, 0]  # one decode per row


@functools.lru_cache(maxsize=16)
def _teacher_forced_logits(module: Transformer) -> Callable:
  """Jitted (params, int32 [b, l], int32 [b, L]) -> float32 [b, L, v], dropout off."""
  return jax.jit(lambda params, enc, dec: module.apply({'params': params}, enc, dec,
                                                       enable_dropout=False))


def generate_uncached(module: Transformer, params, encoder_input_tokens,
                      options: DecodeOptions = DecodeOptions(), eos_id: int = 1
                      ) -> tuple[Array, Array]:
  """Greedy decoding that reruns the whole network at every step: a plain reference.

  No cache and no while_loop: each step feeds the tokens so far (the rest of the
  length-L buffer is zeros, which the causal mask hides) through the teacher-forced
  network and reads the logits at the current position. Same inputs, options (greedy
  only, with no_repeat_ngram_size) and outputs as `generate`.
  """
  options = options.validate()
  if options.decode != 'greedy':
    raise ValueError(f"generate_uncached supports decode='greedy' only, got {options.decode!r}")
  forward = _teacher_forced_logits(module)
  params = nn.unbox(params)
  enc = jnp.asarray(encoder_input_tokens, jnp.int32)
  length = options.max_decode_length
  seqs = jnp.zeros((enc.shape[0], length + 1), jnp.int32)
  done = ~jnp.any(enc != 0, axis=1)
  scores = jnp.zeros((enc.shape[0],), jnp.float32)
  for step in range(length):
    logits = forward(params, enc, seqs[:, :length])[:, step]
    log_probs = jax.nn.log_softmax(logits, axis=-1)
    logits = apply_no_repeat_ngram(logits, seqs, options.no_repeat_ngram_size, step)
    token = jnp.where(done, 0, jnp.argmax(logits, axis=-1).astype(jnp.int32))
    scores = scores + jnp.where(done, 0.0, jnp.take_along_axis(log_probs, token[:, None], 1)[:, 0])
    seqs = seqs.at[:, step + 1].set(token)
    done = done | (token == eos_id)
  return seqs[:, None, 1:], scores[:, None]

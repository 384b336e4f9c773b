"""The T5 encoder-decoder in flax.linen, with T5X's parameter names and logical axes.

One file a reader can hold in their head: embeddings, RMS norm, relative position
biases, attention (with a decode cache), the MLP, and the encoder/decoder stacks.
Every parameter carries logical axis names; no mesh axis is named here (the trainer's
partitioning rules map logical names to mesh axes).

Shapes use: b batch, l/q/k lengths, e emb_dim, h heads, d head_dim, m mlp_dim, v vocab.
"""
import dataclasses
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t5x import cpu_random

# Dropout draws random bits at every layer: lower their hash loop-free on CPUs.
cpu_random.use_straight_line_threefry()

Array = jax.Array
# Masked attention logits get this bias; softmax then gives them exactly zero weight.
_NEG_INF = -1e10
# Values of T5Config.remat_policy.
REMAT_POLICIES = ('none', 'minimal', 'full')
# Values of T5Config.lora_targets: attention projections by T5X name, or 'mlp' for the
# MLP kernels (wi / wi_0 / wi_1 / wo). The logits head and embeddings are never adapted.
LORA_TARGETS = ('query', 'key', 'value', 'out', 'mlp')


@dataclasses.dataclass(frozen=True)
class T5Config:
  """Architecture of a T5 model; field names follow T5X's `network.T5Config`.

  `mlp_activations=('relu',)` with `logits_via_embedding=True` is T5 1.0;
  `('gelu', 'linear')` with `logits_via_embedding=False` is T5 1.1 / mT5 / Flan-T5.
  `dtype` is the activation dtype, `param_dtype` the dtype parameters are kept in.
  """
  vocab_size: int = 32128
  dtype: Any = 'float32'
  param_dtype: Any = 'float32'
  emb_dim: int = 512
  num_heads: int = 8
  num_encoder_layers: int = 6
  num_decoder_layers: int = 6
  head_dim: int = 64
  mlp_dim: int = 2048
  mlp_activations: Sequence[str] = ('relu',)
  dropout_rate: float = 0.1
  logits_via_embedding: bool = True
  float32_attention_logits: bool = True
  relative_attention_num_buckets: int = 32
  relative_attention_max_distance: int = 128
  layer_norm_epsilon: float = 1e-6
  # Memory levers for large models (T5X's names). `scan_layers` runs each stack's layers
  # under `nn.scan`: one traced layer, parameters stacked as `encoder/layers/...` along
  # `param_scan_axis` (logical axis 'layers'). `remat_policy` recomputes activations
  # inside each layer on the backward pass: 'full' keeps none, 'minimal' keeps the
  # matmul outputs without batch dimensions.
  scan_layers: bool = False
  param_scan_axis: int = 1
  remat_policy: str = 'none'
  # LoRA (low-rank adapters; off at rank 0): each targeted projection x@W gains
  # (lora_alpha / lora_rank) * (x@A)@B with trainable A [in, r], B [r, out] while W stays
  # frozen (see t5x/lora/adapters.py). Targets: LORA_TARGETS ('mlp' is every MLP kernel).
  lora_rank: int = 0
  lora_alpha: float = 16.0
  lora_targets: Sequence[str] = ('query', 'value')

  def __post_init__(self):
    # gin hands lists where users write lists; keep the config hashable.
    object.__setattr__(self, 'mlp_activations', tuple(self.mlp_activations))
    self._check_lora()
    if self.remat_policy not in REMAT_POLICIES:
      raise ValueError(f'T5Config.remat_policy={self.remat_policy!r}: use one of {REMAT_POLICIES}')
    # Every layer parameter has at least one axis, so the stacked axis goes first or second.
    if self.param_scan_axis not in (0, 1):
      raise ValueError(f'T5Config.param_scan_axis={self.param_scan_axis!r}: use 0 or 1 '
                       '(T5X uses 1)')

  def _check_lora(self):
    targets = self.lora_targets
    # A bare string would otherwise become a tuple of its letters.
    targets = (targets,) if isinstance(targets, str) else tuple(targets)
    object.__setattr__(self, 'lora_targets', targets)
    if not isinstance(self.lora_rank, int) or self.lora_rank < 0:
      raise ValueError(f'T5Config.lora_rank={self.lora_rank!r}: use 0 (LoRA off) or a positive '
                       'integer rank such as 8')
    unknown = [t for t in targets if t not in LORA_TARGETS]
    if unknown:
      raise ValueError(f'T5Config.lora_targets has unknown name(s) {unknown}; allowed values: '
                       f'{LORA_TARGETS}')
    if self.lora_rank and (not targets or not self.lora_alpha > 0):
      raise ValueError(f'T5Config: lora_rank={self.lora_rank} needs a non-empty lora_targets '
                       f'(allowed values: {LORA_TARGETS}) and lora_alpha > 0, got '
                       f'{targets} and {self.lora_alpha!r}')

  def lora_applies_to(self, target: Optional[str]) -> bool:
    """True when projections of kind `target` (one of LORA_TARGETS) carry adapters."""
    return self.lora_rank > 0 and target in self.lora_targets


def _param(module, name, init, shape, axes, dtype):
  """Declares a parameter boxed with its logical axis names."""
  return module.param(name, nn.with_logical_partitioning(init, axes), shape, dtype)


_kernel_init = nn.initializers.variance_scaling(1.0, 'fan_in', 'truncated_normal')


class Dense(nn.Module):
  """A bias-free projection whose kernel is stored 2-D, as T5X stores it.

  With `config.lora_applies_to(lora_target)` it also holds LoRA factors `lora_a` [in, r]
  (random) and `lora_b` [r, out] (zeros, so a fresh adapter changes nothing) and returns
  x@W + (alpha/r) * (x@A)@B; W + AB is never formed, so training costs O(r) extra.
  """
  features: int
  kernel_axes: tuple[str, str]
  config: T5Config
  kernel_init: Any = _kernel_init
  dtype: Any = None  # overrides config.dtype (the logits are computed in float32)
  lora_target: Optional[str] = None  # which of LORA_TARGETS this projection is

  @nn.compact
  def __call__(self, x: Array) -> Array:
    """[..., in] -> [..., features]."""
    cfg = self.config
    dtype = jnp.dtype(self.dtype or cfg.dtype)
    param_dtype = jnp.dtype(cfg.param_dtype)
    kernel = _param(self, 'kernel', self.kernel_init, (x.shape[-1], self.features),
                    self.kernel_axes, param_dtype)
    x = x.astype(dtype)
    y = jnp.dot(x, kernel.astype(dtype))
    if not cfg.lora_applies_to(self.lora_target):
      return y
    # The rank axis is tiny and replicated; the others shard as the kernel's do.
    a = _param(self, 'lora_a', _kernel_init, (x.shape[-1], cfg.lora_rank),
               (self.kernel_axes[0], 'lora_rank'), param_dtype)
    b = _param(self, 'lora_b', nn.initializers.zeros, (cfg.lora_rank, self.features),
               ('lora_rank', self.kernel_axes[1]), param_dtype)
    low = jnp.dot(x, a.astype(dtype)) * jnp.asarray(cfg.lora_alpha / cfg.lora_rank, dtype)
    return y + jnp.dot(low, b.astype(dtype))


class Embed(nn.Module):
  """The token embedding table [v, e], shared by encoder, decoder and (T5 1.0) the logits."""
  config: T5Config

  def setup(self):
    cfg = self.config
    self.embedding = _param(self, 'embedding', nn.initializers.normal(1.0),
                            (cfg.vocab_size, cfg.emb_dim), ('vocab', 'embed'),
                            jnp.dtype(cfg.param_dtype))

  def __call__(self, tokens: Array) -> Array:
    """int32 [b, l] -> [b, l, e] in the activation dtype."""
    return jnp.take(self.embedding, tokens, axis=0).astype(jnp.dtype(self.config.dtype))

  def attend(self, x: Array) -> Array:
    """[b, l, e] -> float32 [b, l, v]: dot products with every embedding."""
    wide = wide_dtype(self.config)
    return jnp.dot(x.astype(wide), self.embedding.astype(wide).T)


def wide_dtype(cfg: T5Config) -> jnp.dtype:
  """Where statistics, attention logits and output logits are computed: float32, or
  float64 for a float64 network (JAX's x64 mode; the Hugging Face export checks its
  conversion that way, where round-off cannot hide a wrong tensor)."""
  return jnp.promote_types(jnp.float32, jnp.dtype(cfg.dtype))


class RMSNorm(nn.Module):
  """T5's layer norm: scale only, no mean subtraction, statistics in float32."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array) -> Array:
    cfg = self.config
    scale = _param(self, 'scale', nn.initializers.ones, (x.shape[-1],), ('embed',),
                   jnp.dtype(cfg.param_dtype))
    wide = wide_dtype(cfg)
    x32 = x.astype(wide)
    x32 = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + cfg.layer_norm_epsilon)
    return (x32 * scale.astype(wide)).astype(jnp.dtype(cfg.dtype))


def relative_position_bucket(relative_position: Array, bidirectional: bool, num_buckets: int,
                             max_distance: int) -> Array:
  """Maps key_position - query_position (int32, any shape) to T5's bucket ids.

  Half the buckets hold exact small distances, the rest log-spaced distances up to
  `max_distance`; bidirectional stacks spend half the buckets on each direction.
  """
  buckets = jnp.zeros_like(relative_position)
  if bidirectional:
    num_buckets //= 2
    buckets = buckets + (relative_position > 0).astype(jnp.int32) * num_buckets
    distance = jnp.abs(relative_position)
  else:
    distance = -jnp.minimum(relative_position, 0)
  max_exact = num_buckets // 2
  # log of at least 1 keeps the unused branch finite for small distances.
  scaled = jnp.log(jnp.maximum(distance, max_exact).astype(jnp.float32) / max_exact)
  scaled = scaled / np.log(max_distance / max_exact) * (num_buckets - max_exact)
  large = jnp.minimum(max_exact + scaled.astype(jnp.int32), num_buckets - 1)
  return buckets + jnp.where(distance < max_exact, distance, large)


class RelativePositionBiases(nn.Module):
  """One table of per-head biases [h, relpos_buckets] for a whole stack."""
  config: T5Config
  bidirectional: bool

  @nn.compact
  def __call__(self, query_positions: Array, key_positions: Array) -> Array:
    """int32 [b|1, q], [b|1, k] -> float32 [b|1, h, q, k]."""
    cfg = self.config
    table = _param(self, 'rel_embedding',
                   nn.initializers.variance_scaling(1.0, 'fan_avg', 'uniform'),
                   (cfg.num_heads, cfg.relative_attention_num_buckets),
                   ('heads', 'relpos_buckets'), jnp.dtype(cfg.param_dtype))
    relative = key_positions[:, None, :] - query_positions[:, :, None]
    bucket = relative_position_bucket(relative, self.bidirectional,
                                      cfg.relative_attention_num_buckets,
                                      cfg.relative_attention_max_distance)
    return jnp.transpose(table.astype(wide_dtype(cfg))[:, bucket], (1, 0, 2, 3))


def attention_bias(mask: Array) -> Array:
  """bool [b, 1|h, q, k] -> float32 additive bias (0 where allowed, -1e10 elsewhere)."""
  return jnp.where(mask, 0.0, _NEG_INF).astype(jnp.float32)


def segment_mask(query_segments: Array, key_segments: Array) -> Array:
  """int32 [b, q], [b, k] -> bool [b, 1, q, k]: true where both are in one segment."""
  return (query_segments[:, :, None] == key_segments[:, None, :])[:, None]


class MultiHeadAttention(nn.Module):
  """Multi-head dot-product attention with T5X's `query/key/value/out` kernels.

  There is no 1/sqrt(d) factor at run time: as in T5X and HF, it is folded into the
  query kernel's initialisation.
  """
  config: T5Config

  @nn.compact
  def __call__(self, inputs_q: Array, inputs_kv: Array, bias: Array, *, enable_dropout: bool,
               decode: bool = False) -> Array:
    """[b, q, e], [b, k, e], float32 bias [b|1, h|1, q, k] -> [b, q, e].

    With `decode=True` after the cache is initialised, `inputs_q` is one new position
    [b, 1, e]; keys and values accumulate in the `cache` collection, and `bias` must
    already cover the whole cache ([b|1, h|1, 1, max_length]).
    """
    cfg = self.config
    h, d = cfg.num_heads, cfg.head_dim
    query_init = lambda *a: _kernel_init(*a) / np.sqrt(d).astype(np.float32)
    proj = lambda name, init: Dense(h * d, ('embed', 'joined_kv'), cfg, kernel_init=init,
                                    lora_target=name, name=name)
    split = lambda x: x.reshape(x.shape[:2] + (h, d))
    query = split(proj('query', query_init)(inputs_q))
    key = split(proj('key', _kernel_init)(inputs_kv))
    value = split(proj('value', _kernel_init)(inputs_kv))
    query = nn.with_logical_constraint(query, ('batch', 'length', 'heads', 'kv'))
    key = nn.with_logical_constraint(key, ('batch', 'length', 'heads', 'kv'))
    value = nn.with_logical_constraint(value, ('batch', 'length', 'heads', 'kv'))

    if decode:
      key, value = self._update_cache(key, value)

    if cfg.float32_attention_logits:
      query, key = query.astype(wide_dtype(cfg)), key.astype(wide_dtype(cfg))
    logits = jnp.einsum('bqhd,bkhd->bhqk', query, key) + bias.astype(query.dtype)
    weights = jax.nn.softmax(logits.astype(wide_dtype(cfg))).astype(jnp.dtype(cfg.dtype))
    weights = nn.Dropout(cfg.dropout_rate)(weights, deterministic=not enable_dropout)
    out = jnp.einsum('bhqk,bkhd->bqhd', weights, value.astype(weights.dtype))
    out = out.reshape(out.shape[:2] + (h * d,))
    return Dense(cfg.emb_dim, ('joined_kv', 'embed'), cfg, lora_target='out', name='out')(out)

  def _update_cache(self, key: Array, value: Array) -> tuple[Array, Array]:
    """Writes one new key/value at `cache_index`; returns the whole cache [b, L, h, d].

    The first call (cache not yet created) sees the full-length input and only
    creates the zero-filled cache, as in T5X.
    """
    initialized = self.has_variable('cache', 'cached_key')
    cached_key = self.variable('cache', 'cached_key', jnp.zeros, key.shape, key.dtype)
    cached_value = self.variable('cache', 'cached_value', jnp.zeros, value.shape, value.dtype)
    cache_index = self.variable('cache', 'cache_index', lambda: jnp.array(0, jnp.int32))
    if not initialized:
      return key, value
    if key.shape[1] != 1:
      raise ValueError(f'decode=True takes one position at a time, got length {key.shape[1]}')
    index = cache_index.value
    cached_key.value = jax.lax.dynamic_update_slice(cached_key.value, key, (0, index, 0, 0))
    cached_value.value = jax.lax.dynamic_update_slice(cached_value.value, value, (0, index, 0, 0))
    cache_index.value = index + 1
    return cached_key.value, cached_value.value


class MlpBlock(nn.Module):
  """T5's feed-forward block: `wi` (one activation) or gated `wi_0`, `wi_1`, then `wo`."""
  config: T5Config

  @nn.compact
  def __call__(self, x: Array, *, enable_dropout: bool) -> Array:
    """[b, l, e] -> [b, l, e]."""
    cfg = self.config
    acts = cfg.mlp_activations
    hidden = None
    for i, act in enumerate(acts):
      name = 'wi' if len(acts) == 1 else f'wi_{i}'
      y = Dense(cfg.mlp_dim, ('embed', 'mlp'), cfg, lora_target='mlp', name=name)(x)
      y = _ACTIVATIONS[act](y)
      hidden = y if hidden is None else hidden * y
    hidden = nn.with_logical_constraint(hidden, ('batch', 'length', 'mlp'))
    hidden = nn.Dropout(cfg.dropout_rate)(hidden, deterministic=not enable_dropout)
    return Dense(cfg.emb_dim, ('mlp', 'embed'), cfg, lora_target='mlp', name='wo')(hidden)


# 'gelu' is the tanh approximation, as in T5X and in HF's gated-gelu ("gelu_new").
_ACTIVATIONS = {
    'relu': nn.relu,
    'gelu': lambda x: nn.gelu(x, approximate=True),
    'silu': nn.silu,
    'linear': lambda x: x,
}


def _residual(module, x, sublayer_out, enable_dropout):
  out = nn.Dropout(module.config.dropout_rate)(sublayer_out, deterministic=not enable_dropout)
  return nn.with_logical_constraint(x + out, ('batch', 'length', 'embed'))


class EncoderLayer(nn.Module):
  config: T5Config

  # The flags are positional (not keyword-only) so that `nn.remat` can mark them static.
  @nn.compact
  def __call__(self, x: Array, bias: Array, enable_dropout: bool) -> Array:
    cfg = self.config
    y = RMSNorm(cfg, name='pre_attention_layer_norm')(x)
    y = MultiHeadAttention(cfg, name='attention')(y, y, bias, enable_dropout=enable_dropout)
    x = _residual(self, x, y, enable_dropout)
    y = RMSNorm(cfg, name='pre_mlp_layer_norm')(x)
    y = MlpBlock(cfg, name='mlp')(y, enable_dropout=enable_dropout)
    return _residual(self, x, y, enable_dropout)


class DecoderLayer(nn.Module):
  config: T5Config

  # The flags are positional (not keyword-only) so that `nn.remat` can mark them static.
  @nn.compact
  def __call__(self, y: Array, encoded: Array, self_bias: Array, cross_bias: Array,
               enable_dropout: bool, decode: bool) -> Array:
    cfg = self.config
    z = RMSNorm(cfg, name='pre_self_attention_layer_norm')(y)
    z = MultiHeadAttention(cfg, name='self_attention')(
        z, z, self_bias, enable_dropout=enable_dropout, decode=decode)
    y = _residual(self, y, z, enable_dropout)
    z = RMSNorm(cfg, name='pre_cross_attention_layer_norm')(y)
    z = MultiHeadAttention(cfg, name='encoder_decoder_attention')(
        z, encoded, cross_bias, enable_dropout=enable_dropout)
    y = _residual(self, y, z, enable_dropout)
    z = RMSNorm(cfg, name='pre_mlp_layer_norm')(y)
    z = MlpBlock(cfg, name='mlp')(z, enable_dropout=enable_dropout)
    return _residual(self, y, z, enable_dropout)


def _remat(layer_cls: type, cfg: T5Config, static_argnums: tuple[int, ...]) -> type:
  """`layer_cls` wrapped in `nn.remat` as `cfg.remat_policy` asks ('none': unchanged).

  `static_argnums` count the module as argument 0 and name the Python-bool flags, which
  must stay static for the layer to branch on them.
  """
  if cfg.remat_policy == 'none':
    return layer_cls
  # 'full' saves nothing inside a layer; 'minimal' keeps weight matmuls (no batch dims).
  policy = (jax.checkpoint_policies.dots_with_no_batch_dims_saveable
            if cfg.remat_policy == 'minimal' else None)
  # Under scan the rematted body cannot be merged with its neighbours, so CSE prevention
  # only costs speed there.
  return nn.remat(layer_cls, policy=policy, static_argnums=static_argnums,
                  prevent_cse=not cfg.scan_layers)


def _run_layers(layer_cls: type, cfg: T5Config, num_layers: int, x: Array,
                arrays: tuple, flags: tuple) -> Array:
  """Applies `num_layers` layers: `x = layer(x, *arrays, *flags)`, where `arrays` and the
  Python-bool `flags` are the same for every layer. Called inside a compact `__call__`,
  so the layers are its children.

  Unscanned: children `layers_0`, `layers_1`, ... Scanned: one child `layers` whose
  parameters carry a stacked axis of size `num_layers` at `cfg.param_scan_axis`
  (logical name 'layers'), each layer with its own parameter-init and dropout rngs.
  """
  args = tuple(arrays) + tuple(flags)
  # Positions of the flags, counted with the module as 0 and x as 1.
  layer_cls = _remat(layer_cls, cfg, tuple(range(2 + len(arrays), 2 + len(args))))
  if not cfg.scan_layers:
    for i in range(num_layers):
      x = layer_cls(cfg, name=f'layers_{i}')(x, *args)
    return x

  def body(layer, carry, *broadcast):
    return layer(carry, *broadcast), None

  # 'intermediates' is stacked too, so sow / capture_intermediates see every layer.
  scanned = nn.scan(body, variable_axes={'params': cfg.param_scan_axis, 'cache': 0,
                                         'intermediates': 0},
                    split_rngs={'params': True, 'dropout': True},
                    in_axes=(nn.broadcast,) * len(args), length=num_layers,
                    metadata_params={nn.PARTITION_NAME: 'layers'})
  return scanned(layer_cls(cfg, name='layers'), x, *args)[0]


def _positions(tokens: Array, positions: Optional[Array]) -> Array:
  return positions if positions is not None else jnp.arange(tokens.shape[1])[None, :]


class Encoder(nn.Module):
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, tokens: Array, segment_ids: Optional[Array], positions: Optional[Array], *,
               enable_dropout: bool) -> Array:
    """int32 [b, l] (0 = padding) -> encoded [b, l, e]."""
    cfg = self.config
    dropout = nn.Dropout(cfg.dropout_rate)
    x = dropout(self.shared_embedding(tokens), deterministic=not enable_dropout)
    x = nn.with_logical_constraint(x, ('batch', 'length', 'embed'))
    valid = tokens > 0
    mask = valid[:, None, :, None] & valid[:, None, None, :]
    if segment_ids is not None:
      mask &= segment_mask(segment_ids, segment_ids)
    pos = _positions(tokens, positions)
    bias = RelativePositionBiases(cfg, bidirectional=True, name='relpos_bias')(pos, pos)
    bias = bias + attention_bias(mask)
    x = _run_layers(EncoderLayer, cfg, cfg.num_encoder_layers, x, (bias,), (enable_dropout,))
    x = RMSNorm(cfg, name='encoder_norm')(x)
    return dropout(x, deterministic=not enable_dropout)


class Decoder(nn.Module):
  config: T5Config
  shared_embedding: nn.Module

  @nn.compact
  def __call__(self, encoded: Array, encoder_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Optional[Array], encoder_segment_ids: Optional[Array],
               decoder_segment_ids: Optional[Array], decoder_positions: Optional[Array], *,
               enable_dropout: bool, decode: bool) -> Array:
    """Teacher-forced [b, l] or one decode step [b, 1] -> float32 logits [b, l, v]."""
    cfg = self.config
    if decode and cfg.scan_layers:
      # decoding.generate converts a scanned model to the layer-per-module layout first.
      raise ValueError('decode=True needs T5Config.scan_layers=False; convert the parameters '
                       'with scan_layout.unscan_params (decoding.generate does it for you)')
    dropout = nn.Dropout(cfg.dropout_rate)
    y = dropout(self.shared_embedding(decoder_input_tokens), deterministic=not enable_dropout)
    y = nn.with_logical_constraint(y, ('batch', 'length', 'embed'))
    relpos = RelativePositionBiases(cfg, bidirectional=False, name='relpos_bias')
    cross_mask = (encoder_tokens > 0)[:, None, None, :]

    if decode and self.has_variable('cache', 'layers_0'):
      # One new position: its bias row against every cache slot, later slots masked.
      cache = self.variables['cache']['layers_0']['self_attention']
      index = cache['cache_index']
      keys = jnp.arange(cache['cached_key'].shape[1])[None, :]
      self_bias = relpos(jnp.full((1, 1), index), keys)
      self_bias = self_bias + attention_bias((keys <= index)[:, None, None, :])
    else:
      pos = _positions(decoder_input_tokens, decoder_positions)
      length = decoder_input_tokens.shape[1]
      self_mask = jnp.tril(jnp.ones((length, length), bool))[None, None]
      if decoder_target_tokens is not None:
        valid = decoder_target_tokens > 0
        self_mask = self_mask & valid[:, None, :, None] & valid[:, None, None, :]
        cross_mask = cross_mask & valid[:, None, :, None]
      if decoder_segment_ids is not None:
        self_mask &= segment_mask(decoder_segment_ids, decoder_segment_ids)
      self_bias = relpos(pos, pos) + attention_bias(self_mask)
    if encoder_segment_ids is not None and decoder_segment_ids is not None:
      cross_mask = cross_mask & segment_mask(decoder_segment_ids, encoder_segment_ids)
    cross_bias = attention_bias(cross_mask)

    y = _run_layers(DecoderLayer, cfg, cfg.num_decoder_layers, y,
                    (encoded, self_bias, cross_bias), (enable_dropout, decode))
    y = RMSNorm(cfg, name='decoder_norm')(y)
    y = dropout(y, deterministic=not enable_dropout)
    if cfg.logits_via_embedding:
      # T5 1.0 reuses the embedding and rescales, since it was trained that way.
      logits = self.shared_embedding.attend(y) / np.sqrt(cfg.emb_dim).astype(np.float32)
    else:
      logits = Dense(cfg.vocab_size, ('embed', 'vocab'), cfg, dtype=wide_dtype(cfg),
                     name='logits_dense')(y)
    return nn.with_logical_constraint(logits, ('batch', 'length', 'vocab'))


class Transformer(nn.Module):
  """The T5 encoder-decoder. Parameter tree: token_embedder, encoder, decoder."""
  config: T5Config

  def setup(self):
    self.token_embedder = Embed(self.config)
    self.encoder = Encoder(self.config, shared_embedding=self.token_embedder)
    self.decoder = Decoder(self.config, shared_embedding=self.token_embedder)

  def encode(self, encoder_input_tokens: Array, encoder_segment_ids: Optional[Array] = None,
             encoder_positions: Optional[Array] = None, *, enable_dropout: bool = True) -> Array:
    """int32 [b, l] -> [b, l, e] in the activation dtype."""
    return self.encoder(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                        enable_dropout=enable_dropout)

  def decode(self, encoded: Array, encoder_input_tokens: Array, decoder_input_tokens: Array,
             decoder_target_tokens: Optional[Array] = None,
             encoder_segment_ids: Optional[Array] = None,
             decoder_segment_ids: Optional[Array] = None,
             decoder_positions: Optional[Array] = None, *, enable_dropout: bool = True,
             decode: bool = False) -> Array:
    """Decoder logits, float32 [b, l, v]; see `Decoder` for the decode-cache protocol."""
    return self.decoder(encoded, encoder_input_tokens, decoder_input_tokens,
                        decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                        decoder_positions, enable_dropout=enable_dropout, decode=decode)

  def __call__(self, encoder_input_tokens: Array, decoder_input_tokens: Array,
               decoder_target_tokens: Optional[Array] = None,
               encoder_segment_ids: Optional[Array] = None,
               decoder_segment_ids: Optional[Array] = None,
               encoder_positions: Optional[Array] = None,
               decoder_positions: Optional[Array] = None, *, enable_dropout: bool = True,
               decode: bool = False) -> Array:
    """Teacher-forced logits: int32 [b, l_enc], [b, l_dec] -> float32 [b, l_dec, v].

    0 is padding everywhere. Packed examples pass segment ids (1, 2, ... per example,
    0 for padding) and positions that restart at 0 in each segment.
    """
    encoded = self.encode(encoder_input_tokens, encoder_segment_ids, encoder_positions,
                          enable_dropout=enable_dropout)
    return self.decode(encoded, encoder_input_tokens, decoder_input_tokens,
                       decoder_target_tokens, encoder_segment_ids, decoder_segment_ids,
                       decoder_positions, enable_dropout=enable_dropout, decode=decode)

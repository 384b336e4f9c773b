"""The encoder-decoder model: the network plus its loss, as T5X's `EncoderDecoderModel`.

Batches are dicts of numpy/jax arrays as `seqio.EncDecFeatureConverter` makes them:
int32 [b, l] `encoder_input_tokens`, `decoder_input_tokens`, `decoder_target_tokens`,
`decoder_loss_weights`, and when packed `*_segment_ids` and `*_positions`.
"""
import functools
from typing import Any, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t5x import decoding
from t5x import losses
from t5x import model_config
from t5x.examples.t5.network import Transformer

_NORMALIZERS = ('NUM_REAL_TARGET_TOKENS', 'NUM_TOTAL_TARGET_TOKENS')


class EncoderDecoderModel:
  """Loss and metrics of a T5 `Transformer` module.

  Args:
    module: the network.
    input_vocabulary, output_vocabulary: seqio vocabularies (kept for decoding; unused
      by the train step, so training on numpy batches needs no TensorFlow).
    optimizer_def: `learning_rate_fn -> optax.GradientTransformation` (see optimizers).
    z_loss: weight of the log(Z)^2 auxiliary loss (T5X: 1e-4).
    label_smoothing: mass moved off the label (0 = none).
    loss_normalizing_factor: None sums the token losses (T5X's fine-tuning default); a
      number divides the sum by it; 'NUM_REAL_TARGET_TOKENS' divides by the number of
      non-padding target tokens of the whole batch.
  """

  def __init__(self, module: Transformer, input_vocabulary: Any = None,
               output_vocabulary: Any = None, optimizer_def: Any = None, z_loss: float = 1e-4,
               label_smoothing: float = 0.0,
               loss_normalizing_factor: Optional[Union[float, str]] = None):
    if isinstance(loss_normalizing_factor, str) and loss_normalizing_factor not in _NORMALIZERS:
      raise ValueError(f'loss_normalizing_factor={loss_normalizing_factor!r}: use None, a number '
                       f'or one of {_NORMALIZERS}')
    self.module = module
    self.input_vocabulary = input_vocabulary
    self.output_vocabulary = output_vocabulary
    self.optimizer_def = optimizer_def
    self.z_loss = z_loss
    self.label_smoothing = label_smoothing
    self.loss_normalizing_factor = loss_normalizing_factor

  @property
  def config(self):
    return self.module.config

  def init_boxed_params(self, rng: jax.Array) -> Any:
    """Parameters boxed with their logical axes (`nn.LogicallyPartitioned`)."""
    tokens = jnp.ones((1, 1), jnp.int32)
    return self.module.init(rng, tokens, tokens, enable_dropout=False)['params']

  def init_params(self, rng: jax.Array) -> Any:
    return nn.unbox(self.init_boxed_params(rng))

  def loss_normalizer(self, batch: dict) -> jax.Array:
    """The divisor of the summed token loss, computed on the whole (global) batch."""
    factor = self.loss_normalizing_factor
    if factor is None:
      return jnp.float32(1.0)
    if factor == 'NUM_REAL_TARGET_TOKENS':
      return jnp.maximum(jnp.sum(batch['decoder_loss_weights']).astype(jnp.float32), 1.0)
    if factor == 'NUM_TOTAL_TARGET_TOKENS':
      return jnp.float32(batch['decoder_target_tokens'].size)
    return jnp.float32(factor)

  def logits(self, params: Any, batch: dict, dropout_rng: Optional[jax.Array] = None) -> jax.Array:
    """float32 [b, l, v] teacher-forced logits; dropout on when `dropout_rng` is given."""
    return self.module.apply(
        {'params': params}, batch['encoder_input_tokens'], batch['decoder_input_tokens'],
        batch['decoder_target_tokens'], batch.get('encoder_segment_ids'),
        batch.get('decoder_segment_ids'), batch.get('encoder_positions'),
        batch.get('decoder_positions'), enable_dropout=dropout_rng is not None,
        rngs={'dropout': dropout_rng} if dropout_rng is not None else None)

  def loss_fn(self, params: Any, batch: dict, dropout_rng: Optional[jax.Array],
              normalizer: jax.Array) -> tuple[jax.Array, dict]:
    """(summed token loss / normalizer, metric sums) for one (micro)batch."""
    logits = self.logits(params, batch, dropout_rng)
    return self._loss_and_metrics(logits, batch, normalizer)

  def eval_metrics(self, params: Any, batch: dict) -> dict:
    """Teacher-forced metric sums with dropout off (loss, tokens, correct tokens)."""
    logits = self.logits(params, batch)
    return self._loss_and_metrics(logits, batch, jnp.float32(1.0))[1]

  def score_batch(self, params: Any, batch: dict) -> jax.Array:
    """float32 [b]: the log-likelihood of each example's targets (sum over its target
    tokens, padding excluded), teacher-forced with dropout off."""
    logits = self.logits(params, batch)
    targets = batch['decoder_target_tokens']
    log_probs = jax.nn.log_softmax(logits.astype(jnp.float32))
    token = jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
    return jnp.sum(token * (targets > 0), axis=-1)

  def predict_batch_with_aux(self, params: Any, batch: dict, options=None):
    """(int32 [b, num_decodes, max_decode_length] tokens, {'scores': float32 [b,
    num_decodes]}) decoded from `batch['encoder_input_tokens']`; see decoding.DecodeOptions."""
    tokens, scores = decoding.generate(self.module, params, batch['encoder_input_tokens'],
                                       options or decoding.DecodeOptions())
    return tokens, {'scores': scores}

  def predict_batch(self, params: Any, batch: dict, options=None) -> jax.Array:
    """int32 [b, max_decode_length]: the best decode of each input."""
    return self.predict_batch_with_aux(params, batch, options)[0][:, 0]

  def _loss_and_metrics(self, logits, batch, normalizer):
    targets = batch['decoder_target_tokens']
    weights = batch.get('decoder_loss_weights')
    weights = (targets > 0) if weights is None else weights
    weights = weights.astype(jnp.float32)
    token_loss, token_z = losses.cross_entropy_with_logits(
        logits, targets, self.z_loss, self.label_smoothing)
    total = jnp.sum(token_loss * weights)
    # The label's logit reaching the maximum, rather than argmax == label: the same
    # except on exact ties, and argmax over the vocabulary is a slow reduction on CPUs.
    label_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    correct = (label_logit >= jnp.max(logits, axis=-1)).astype(jnp.float32) * weights
    metrics = {
        'loss_sum': total,
        'z_loss_sum': jnp.sum(token_z * weights),
        'weight_sum': jnp.sum(weights),
        'correct_sum': jnp.sum(correct),
        'num_examples': jnp.sum(batch['decoder_target_tokens'][:, 0] > 0).astype(jnp.float32)
        if 'decoder_segment_ids' not in batch else
        jnp.sum(jnp.max(batch['decoder_segment_ids'], axis=-1)).astype(jnp.float32),
    }
    return total / normalizer, metrics


def summarize(sums: dict) -> dict:
  """Metric sums -> the numbers people read: per-token loss and token accuracy."""
  tokens = max(float(sums['weight_sum']), 1.0)
  return {
      'cross_ent_loss_per_token': (float(sums['loss_sum']) - float(sums['z_loss_sum'])) / tokens,
      'loss_per_token': float(sums['loss_sum']) / tokens,
      'z_loss_per_token': float(sums['z_loss_sum']) / tokens,
      'accuracy': float(sums['correct_sum']) / tokens,
      'target_tokens': float(sums['weight_sum']),
  }


@functools.lru_cache(maxsize=16)
def _scorer_program(module: Transformer, partitioner: Any):
  shardings = model_config.unflatten(decoding.param_shardings(module, partitioner))
  return partitioner.partition(EncoderDecoderModel(module).score_batch,
                               in_shardings=(shardings, partitioner.batch_sharding(2)),
                               out_shardings=partitioner.replicated)


def score(module: Transformer, params: Any, batch: dict, partitioner: Any = None) -> np.ndarray:
  """float32 [b] numpy: `EncoderDecoderModel.score_batch` of a numpy batch (the same on
  every process), as one program on `partitioner`'s mesh (parameters sharded by the
  training rules, rows over 'data' and padded to it; None: this process's first device,
  the 1x1 mesh). Used by `t5x infer`/`t5x eval` (mode score) and the notebook API."""
  partitioner = partitioner or decoding.one_device()
  rows = len(batch['encoder_input_tokens'])
  pad = -rows % partitioner.data_size
  batch = {k: decoding.to_mesh(np.pad(np.asarray(v, np.int32), ((0, pad), (0, 0))),
                               partitioner.batch_sharding(2)) for k, v in batch.items()}
  return decoding.to_host(_scorer_program(module, partitioner)(nn.unbox(params), batch))[:rows]

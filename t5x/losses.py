"""Token-level cross entropy with T5X's z-loss and label smoothing."""
import functools

import jax
import jax.numpy as jnp


def cross_entropy_with_logits(logits: jax.Array, targets: jax.Array, z_loss: float = 0.0,
                              label_smoothing: float = 0.0) -> tuple[jax.Array, jax.Array]:
  """float [b, l, v] logits, int [b, l] targets -> (loss [b, l], z_loss part [b, l]).

  The loss includes `z_loss * logsumexp(logits)**2`, which keeps the softmax normaliser
  near 1 (T5X uses 1e-4). With label smoothing the targets put `1 - label_smoothing` on
  the label and spread the rest; the constant entropy of that target is subtracted so a
  perfect prediction scores 0.
  """
  vocab = logits.shape[-1]
  logits = logits.astype(jnp.float32)
  if not label_smoothing:
    return _hard_target_loss(logits, targets, z_loss)
  log_z = jax.nn.logsumexp(logits, axis=-1)
  log_probs = logits - log_z[..., None]
  confidence = 1.0 - label_smoothing
  low = label_smoothing / (vocab - 1)
  soft = jax.nn.one_hot(targets, vocab) * (confidence - low) + low
  constant = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
  loss = -jnp.sum(soft * log_probs, axis=-1) - constant
  z = z_loss * jnp.square(log_z)
  return loss + z, z


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _hard_target_loss(logits, targets, z_loss):
  return _hard_target_forward(logits, targets, z_loss)[0]


def _hard_target_forward(logits, targets, z_loss):
  # Autodiff of the plain formula scatters the label's gradient into a zero array the
  # size of the logits and reads them in several passes; the gradient written out,
  # softmax * (1 + 2 z log Z) - one_hot, is one fused pass (on a CPU a few % of a T5
  # small step, the logits being [tokens, 32128]).
  log_z = jax.nn.logsumexp(logits, axis=-1)
  label_logit = jnp.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
  z = z_loss * jnp.square(log_z)
  return (log_z - label_logit + z, z), (logits, targets, log_z)


def _hard_target_backward(z_loss, residuals, cotangents):
  logits, targets, log_z = residuals
  g_loss, g_z = cotangents
  probs = jnp.exp(logits - log_z[..., None])
  # d loss / d logits = softmax (1 + 2 z log Z) - one_hot; d z / d logits = softmax 2 z log Z.
  scale = g_loss * (1.0 + 2.0 * z_loss * log_z) + g_z * 2.0 * z_loss * log_z
  one_hot = targets[..., None] == jax.lax.broadcasted_iota(targets.dtype, logits.shape,
                                                           logits.ndim - 1)
  grad = probs * scale[..., None] - jnp.where(one_hot, g_loss[..., None], 0.0)
  return grad, None


_hard_target_loss.defvjp(_hard_target_forward, _hard_target_backward)

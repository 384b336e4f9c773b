"""Token-level cross entropy with T5X's z-loss and label smoothing."""
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
  log_z = jax.nn.logsumexp(logits, axis=-1)
  log_probs = logits - log_z[..., None]
  if label_smoothing:
    confidence = 1.0 - label_smoothing
    low = label_smoothing / (vocab - 1)
    soft = jax.nn.one_hot(targets, vocab) * (confidence - low) + low
    constant = -(confidence * jnp.log(confidence) + (vocab - 1) * low * jnp.log(low + 1e-20))
    loss = -jnp.sum(soft * log_probs, axis=-1) - constant
  else:
    loss = -jnp.take_along_axis(log_probs, targets[..., None], axis=-1)[..., 0]
  z = z_loss * jnp.square(log_z)
  return loss + z, z

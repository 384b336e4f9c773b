"""Adafactor, T5X's optimizer, at T5X's module path (`from t5x import adafactor`).

Like every optimizer of `t5x.optimizers`, `adafactor(...)` returns a factory
`learning_rate_fn -> optax.GradientTransformation`: gin binds the hyper-parameters, the
trainer supplies the schedule. Gin files name it `optimizers.adafactor` (re-exported
there) or `adafactor.adafactor`; both are this one configurable.
"""
import functools
from typing import Callable

import jax.numpy as jnp
import optax


def adafactor(decay_rate: float = 0.8, clipping_threshold: float | None = 1.0,
              multiply_by_parameter_scale: bool = True, factored: bool = True,
              momentum: float | None = None, min_dim_size_to_factor: int = 128,
              weight_decay_rate: float | None = None, epsilon1: float = 1e-30
              ) -> Callable[[Callable[[jnp.ndarray], jnp.ndarray]], optax.GradientTransformation]:
  """T5X's fine-tuning Adafactor: decay 0.8, factored second moments, no momentum,
  update clipping 1.0, updates scaled by each parameter's RMS.

  Kernels of a scanned model go through `optimizers.per_layer` (the trainer does it), so
  each stacked layer is factored and clipped on its own, as T5X does.
  """
  return functools.partial(
      optax.adafactor, decay_rate=decay_rate, clipping_threshold=clipping_threshold,
      multiply_by_parameter_scale=multiply_by_parameter_scale, factored=factored,
      momentum=momentum, min_dim_size_to_factor=min_dim_size_to_factor,
      weight_decay_rate=weight_decay_rate, eps=epsilon1)

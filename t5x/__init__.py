"""T5X's surface on current JAX: the T5 network, partitioned training, orbax checkpoints,
decoding, and conversion to and from Hugging Face and legacy T5X checkpoints.

This is `t5x-instruct`, a T5X-compatible reimplementation, not Google's `t5x` package;
the two cannot share one environment.

Notebook use:
    import t5x
    model = t5x.load('/path/to/model_dir')
    logits = model.logits(encoder_input_tokens, decoder_input_tokens)

`import t5x` is light: JAX loads when the first model does, so the `t5x` command's
help and its scoring and prep subcommands start without it.
"""
import importlib

__all__ = ['Model', 'T5Config', 'load']

_LAZY = {'Model': 't5x.api', 'load': 't5x.api', 'T5Config': 't5x.examples.t5.network'}


def __getattr__(name: str):
  if name in _LAZY:
    return getattr(importlib.import_module(_LAZY[name]), name)
  raise AttributeError(f"module 't5x' has no attribute {name!r}")

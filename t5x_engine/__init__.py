"""A compact T5X-compatible trainer: T5 network, partitioned training, orbax checkpoints,
and conversion to and from Hugging Face and legacy T5X checkpoints.

Notebook use:
    import t5x_engine
    model = t5x_engine.load('/path/to/model_dir')
    logits = model.logits(encoder_input_tokens, decoder_input_tokens)
"""
from t5x_engine import cpu_random
from t5x_engine.api import Model, load
from t5x_engine.network import T5Config

__all__ = ['Model', 'T5Config', 'load']

cpu_random.use_straight_line_threefry()

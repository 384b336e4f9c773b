"""The notebook API: `t5x_engine.load(path)` and a model object that takes numpy.

    model = t5x_engine.load('/path/to/model_dir')   # ours, an HF folder, or a T5X checkpoint
    logits = model.logits(encoder_input_tokens, decoder_input_tokens)
"""
import dataclasses
import functools
import os
from typing import Optional

import jax
import numpy as np

from t5x_engine import checkpoints, converters, hf_convert, legacy_t5x, model_config
from t5x_engine.network import T5Config, Transformer

# Fields a parameter tree's shapes cannot tell; these come from the gin file when present.
_NON_SHAPE_FIELDS = ('dtype', 'param_dtype', 'dropout_rate', 'float32_attention_logits',
                     'relative_attention_max_distance', 'layer_norm_epsilon', 'mlp_activations')


@dataclasses.dataclass
class Model:
  """A T5 model loaded for inference: its config, parameters and vocabulary file."""
  config: T5Config
  params: dict
  vocabulary_path: Optional[str] = None
  source: str = ''

  @functools.cached_property
  def _apply(self):
    return jax.jit(functools.partial(Transformer(self.config).apply, enable_dropout=False))

  def logits(self, encoder_input_tokens, decoder_input_tokens) -> np.ndarray:
    """int [b, l_enc], int [b, l_dec] (0 = padding; decoder inputs start with 0)
    -> float32 [b, l_dec, vocab], teacher-forced, dropout off."""
    enc = np.asarray(encoder_input_tokens, np.int32)
    dec = np.asarray(decoder_input_tokens, np.int32)
    if enc.ndim != 2 or dec.ndim != 2 or enc.shape[0] != dec.shape[0]:
      raise ValueError(f'expected token arrays [batch, length] with one batch size, got '
                       f'{enc.shape} and {dec.shape}')
    return np.asarray(self._apply({'params': self.params}, enc, dec))


def load(path: str) -> Model:
  """Loads a MODEL_DIR (latest checkpoint), one `checkpoint_<step>` folder, a Hugging Face
  T5 folder, or a legacy T5X checkpoint (file or folder)."""
  path = os.fspath(path)
  if checkpoints.is_checkpoint(path):
    return _load_ours(path, os.path.dirname(os.path.abspath(path)))
  latest = checkpoints.latest(path)
  if latest:
    return _load_ours(latest, path)
  if os.path.isfile(os.path.join(path, 'config.json')):
    cfg, _ = hf_convert.read_hf_config(path)
    params = hf_convert.params_from_state_dict(hf_convert.read_hf_weights(path), cfg, path)
    vocab = os.path.join(path, converters.VOCAB_FILE)
    return Model(cfg, converters.cast_params(params, np.dtype(cfg.param_dtype)),
                 vocab if os.path.isfile(vocab) else None, path)
  if legacy_t5x.is_legacy_checkpoint(path):
    params = legacy_t5x.read_params(path)
    cfg = model_config.infer_config(params)
    converters.check_shapes(params, cfg, legacy_t5x.checkpoint_file(path))
    return Model(cfg, params, None, path)
  raise FileNotFoundError(
      f'{path}: found no model. Expected a MODEL_DIR with checkpoint_<step>/ folders, a '
      'checkpoint_<step>/ folder, a Hugging Face folder with config.json, or a T5X '
      '`checkpoint` file.')


def _load_ours(checkpoint: str, model_dir: str) -> Model:
  params = checkpoints.restore_target(checkpoint)
  overrides = {}
  for name in (converters.MODEL_GIN, 'config.gin'):
    gin_path = os.path.join(model_dir, name)
    if os.path.isfile(gin_path):
      fields = model_config.config_from_gin(gin_path)
      overrides = {k: v for k, v in fields.items() if k in _NON_SHAPE_FIELDS}
      break
  cfg = model_config.infer_config(params, **overrides)
  vocab = os.path.join(model_dir, converters.VOCAB_FILE)
  return Model(cfg, params, vocab if os.path.isfile(vocab) else None, checkpoint)

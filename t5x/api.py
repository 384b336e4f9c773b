"""The notebook API: `t5x.load(path)` and a model object that takes numpy or text.

    model = t5x.load('/path/to/model_dir')   # ours, an HF folder, or a T5X checkpoint
    logits = model.logits(encoder_input_tokens, decoder_input_tokens)
    model.generate(["Write a poetic sentence about 'sea'"], decode='sample', top_k=5)
    model.score(["Write a haiku about 'snow'"], ["snow falls / on the roof / quiet"])
"""
import dataclasses
import functools
import os
from typing import Optional, Sequence

import jax
import numpy as np

from t5x import checkpoints
from t5x.conversion import converters
from t5x.conversion import hf_convert
from t5x.conversion import legacy_t5x
from t5x.lora import adapters as lora
from t5x import model_config
from t5x.examples.t5.network import T5Config, Transformer

EOS_ID = 1

# Fields a parameter tree's shapes cannot tell; these come from the gin file when present.
_NON_SHAPE_FIELDS = ('dtype', 'param_dtype', 'dropout_rate', 'float32_attention_logits',
                     'relative_attention_max_distance', 'layer_norm_epsilon', 'mlp_activations',
                     'lora_alpha')


@dataclasses.dataclass
class Model:
  """A T5 model loaded for inference: its config, parameters and vocabulary file."""
  config: T5Config
  params: dict
  vocabulary_path: Optional[str] = None
  source: str = ''
  merged_lora_rank: int = 0  # rank of the LoRA adapters folded into `params` at load (0: none)

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

  @functools.cached_property
  def tokenizer(self):
    """The SentencePiece processor of `vocabulary_path` (T5's ids: pad 0, eos 1)."""
    if not self.vocabulary_path:
      raise ValueError(f'{self.source}: no vocabulary (spiece.model) came with this model; '
                       'text in and out needs one.')
    import sentencepiece as spm
    return spm.SentencePieceProcessor(model_file=self.vocabulary_path)

  def encode_texts(self, texts: Sequence[str], length: Optional[int] = None) -> np.ndarray:
    """int32 [n, length]: each text's pieces plus EOS, right-padded with 0 (and truncated
    to `length` when given; the default is the longest text, rounded up to 8)."""
    ids = [self.tokenizer.encode(t) + [EOS_ID] for t in texts]
    if length is None:
      length = max(8, -(-max(len(x) for x in ids) // 8) * 8)
    out = np.zeros((len(ids), length), np.int32)
    for row, x in enumerate(ids):
      x = x[:length]
      out[row, :len(x)] = x
    return out

  def decode_tokens(self, tokens) -> str:
    """Token ids up to the first EOS (or padding) -> text; sentinel ids are dropped."""
    pieces = self.tokenizer.get_piece_size()
    return self.tokenizer.decode([t for t in until_eos(tokens) if t < pieces])

  def generate(self, prompts: Sequence[str], *, batch_size: int = 32, **decode_options):
    """Texts -> generated texts (a list of lists when `num_decodes` > 1 for sampling).

    Options (decoding.DecodeOptions): max_decode_length, decode ('greedy' | 'beam' |
    'sample'), num_decodes, alpha, temperature, top_k, top_p, no_repeat_ngram_size, seed.
    Greedy by default. Beam search returns the best beam.
    """
    from t5x import decoding
    options = decoding.DecodeOptions(**decode_options)
    outputs = []
    for start in range(0, len(prompts), batch_size):
      enc = self.encode_texts(prompts[start:start + batch_size])
      tokens, _ = decoding.generate(Transformer(self.config), self.params, enc, options)
      for row in np.asarray(tokens):
        texts = [self.decode_tokens(t) for t in row]
        many = options.decode == 'sample' and options.num_decodes > 1
        outputs.append(texts if many else texts[0])
    return outputs

  def score(self, inputs: Sequence[str], targets: Sequence[str]) -> np.ndarray:
    """float32 [n]: log-likelihood of each target (with its EOS) given its input."""
    if len(inputs) != len(targets):
      raise ValueError(f'{len(inputs)} inputs but {len(targets)} targets')
    enc, tgt = self.encode_texts(inputs), self.encode_texts(targets)
    dec = np.concatenate([np.zeros_like(tgt[:, :1]), tgt[:, :-1]], axis=1)
    batch = {'encoder_input_tokens': enc, 'decoder_input_tokens': dec,
             'decoder_target_tokens': tgt}
    return np.asarray(self._score(self.params, batch))

  @functools.cached_property
  def _score(self):
    from t5x import models
    return jax.jit(models.EncoderDecoderModel(Transformer(self.config)).score_batch)


def until_eos(tokens) -> list[int]:
  """int token ids -> the ids before the first EOS (or padding 0)."""
  kept = []
  for t in np.asarray(tokens).tolist():
    if t in (0, EOS_ID):
      break
    kept.append(t)
  return kept


def load(path: str, param_dtype: Optional[str] = None) -> Model:
  """Loads a MODEL_DIR (latest checkpoint), one `checkpoint_<step>` folder, a Hugging Face
  T5 folder, or a legacy T5X checkpoint (file or folder).

  `param_dtype='bfloat16'` keeps the parameters in bfloat16 (half the memory of float32)
  for inference; activations keep the checkpoint's `dtype`. None keeps the stored dtype.

  Parameters always come in the layer-per-module layout (`layers_0`, ...) with a config
  of `scan_layers=False`, `remat_policy='none'`: a checkpoint trained with scanned layers
  is unstacked once here, since decoding runs the unscanned network (see decoding).
  """
  model = _load(os.fspath(path))
  dtype = jax.numpy.dtype(param_dtype or model.config.param_dtype)
  if dtype == jax.numpy.dtype(model.config.param_dtype):
    return model
  return dataclasses.replace(
      model, config=dataclasses.replace(model.config, param_dtype=dtype.name),
      params=jax.tree_util.tree_map(lambda x: jax.numpy.asarray(x, dtype), model.params))


def _load(path: str) -> Model:
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
    # T5X's scalable_t5 checkpoints stack their layers along axis 1, our default too.
    params = model_config.unscan_params(legacy_t5x.read_params(path))
    cfg = model_config.infer_config(params)
    converters.check_shapes(params, cfg, legacy_t5x.checkpoint_file(path))
    return Model(cfg, params, None, path)
  raise FileNotFoundError(
      f'{path}: found no model. Expected a MODEL_DIR with checkpoint_<step>/ folders, a '
      'checkpoint_<step>/ folder, a Hugging Face folder with config.json, or a T5X '
      '`checkpoint` file.')


def _load_ours(checkpoint: str, model_dir: str) -> Model:
  params = checkpoints.restore_target(checkpoint)
  overrides, scan_axis = {}, T5Config.param_scan_axis
  for name in (converters.MODEL_GIN, 'config.gin'):
    gin_path = os.path.join(model_dir, name)
    if os.path.isfile(gin_path):
      fields = model_config.config_from_gin(gin_path)
      overrides = {k: v for k, v in fields.items() if k in _NON_SHAPE_FIELDS}
      scan_axis = fields.get('param_scan_axis', scan_axis)
      break
  params = model_config.unscan_params(params, scan_axis)  # see `load`: plain layout
  cfg = model_config.infer_config(params, **overrides)
  rank = cfg.lora_rank
  if rank:
    # Inference needs no separate factors: fold them in once, here.
    params, cfg = lora.merge(params, cfg), lora.base_config(cfg)
  vocab = os.path.join(model_dir, converters.VOCAB_FILE)
  return Model(cfg, params, vocab if os.path.isfile(vocab) else None, checkpoint, rank)

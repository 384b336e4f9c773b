"""The notebook API: `t5x.load(path)` and a model object that takes numpy or text.

    model = t5x.load('/path/to/model_dir')   # ours, an HF folder, or a T5X checkpoint
    logits = model.logits(encoder_input_tokens, decoder_input_tokens)
    model.generate(["Write a poetic sentence about 'sea'"], decode='sample', top_k=5)
    model.score(["Write a haiku about 'snow'"], ["snow falls / on the roof / quiet"])

Reading the model is the loader's (t5x.loader); this module adds the calls a notebook
makes on it. Commands (train, infer, eval, export, serve) use the loader directly.
"""
import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import numpy as np

from t5x import decoding
from t5x import loader
from t5x import models
from t5x.examples.t5.network import Transformer


@dataclasses.dataclass
class Model(loader.Loaded):
  """A T5 model loaded for inference: its config, parameters and vocabulary file, with
  teacher-forced logits, generation and scoring. With a `partitioner` the parameters live
  on its mesh, sharded as in training, and every call runs there."""

  partitioner: Any = None

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

  def generate(self, prompts: Sequence[str], *, batch_size: int = 32, **decode_options):
    """Texts -> generated texts (a list of lists when `num_decodes` > 1 for sampling).

    Options (decoding.DecodeOptions): max_decode_length, decode ('greedy' | 'beam' |
    'sample'), num_decodes, alpha, temperature, top_k, top_p, no_repeat_ngram_size, seed.
    Greedy by default. Beam search returns the best beam.
    """
    options = decoding.DecodeOptions(**decode_options)
    outputs = []
    for start in range(0, len(prompts), batch_size):
      enc = self.encode_texts(prompts[start:start + batch_size])
      tokens, _ = decoding.generate(Transformer(self.config), self.params, enc, options,
                                    partitioner=self.partitioner)
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
    return models.score(Transformer(self.config), self.params, batch, self.partitioner)


def load(path: str, param_dtype: Optional[str] = None, partitioner: Any = None) -> Model:
  """A Model of a MODEL_DIR (latest checkpoint), one `checkpoint_<step>` folder, a Hugging
  Face T5 folder, or a legacy T5X checkpoint (file or folder); see `loader.load` for
  `param_dtype` and the parameters' layout. `partitioner` (a
  `partitioning.PjitPartitioner`, e.g. `PjitPartitioner(num_partitions=8)` for a model
  larger than one device) restores the parameters onto its mesh, shard by shard (see
  `loader.load_on_mesh`), and decodes there."""
  loaded = loader.load(path, param_dtype, partitioner)
  fields = {f.name: getattr(loaded, f.name) for f in dataclasses.fields(loader.Loaded)}
  return Model(**fields, partitioner=partitioner)

"""Reading a model from disk: (config, parameters, vocabulary) from any source accepted.

Sources: a MODEL_DIR (its latest checkpoint), one `checkpoint_<step>/` folder, a Hugging
Face T5 folder (config.json and weights), or a legacy T5X checkpoint (its msgpack file or
folder). Training's INITIAL_CHECKPOINT_PATH, `t5x infer`, `t5x eval`, the exports and
`t5x serve` read models here; the notebook API (`t5x.load`, see api) builds on it.
"""
import dataclasses
import functools
import os
from typing import Optional, Sequence

import jax
import numpy as np

from t5x import checkpoints
from t5x import decoding
from t5x import gin_utils
from t5x import model_config
from t5x import scan_layout
from t5x.conversion import hf_convert
from t5x.conversion import legacy_t5x
from t5x.examples.t5.network import T5Config, Transformer
from t5x.lora import adapters as lora

EOS_ID = 1
VOCAB_FILE = 'spiece.model'  # beside the checkpoints of a MODEL_DIR, in an HF folder
MODEL_GIN = 'model.gin'  # the architecture of a MODEL_DIR written by the converters

# Fields a parameter tree's shapes cannot tell; these come from the gin file when present.
_NON_SHAPE_FIELDS = ('dtype', 'param_dtype', 'dropout_rate', 'float32_attention_logits',
                     'relative_attention_max_distance', 'layer_norm_epsilon', 'mlp_activations',
                     'lora_alpha')


@dataclasses.dataclass
class Loaded:
  """A model read from disk: its config, parameters and vocabulary file.

  `params` are numpy or jax arrays in the layer-per-module layout; `source` is the
  checkpoint folder or path read; `merged_lora_rank` the rank of LoRA adapters folded
  into `params` when read (0: none).
  """
  config: T5Config
  params: dict
  vocabulary_path: Optional[str] = None
  source: str = ''
  merged_lora_rank: int = 0

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


def until_eos(tokens) -> list[int]:
  """int token ids -> the ids before the first EOS (or padding 0)."""
  kept = []
  for t in np.asarray(tokens).tolist():
    if t in (0, EOS_ID):
      break
    kept.append(t)
  return kept


def load(path: str, param_dtype: Optional[str] = None, partitioner=None) -> Loaded:
  """Reads a MODEL_DIR (latest checkpoint), one `checkpoint_<step>` folder, a Hugging Face
  T5 folder, or a legacy T5X checkpoint (file or folder). With a `partitioner`, see
  `load_on_mesh`; what follows is the host read.

  `param_dtype='bfloat16'` keeps the parameters in bfloat16 (half the memory of float32)
  for inference; activations keep the checkpoint's `dtype`. None keeps the stored dtype.

  Parameters always come in the layer-per-module layout (`layers_0`, ...) with a config
  of `scan_layers=False`, `remat_policy='none'`: a checkpoint trained with scanned layers
  is unstacked once here, since decoding runs the unscanned network (see decoding). LoRA
  adapters are merged into their kernels (`merged_lora_rank` says so).
  """
  if partitioner is not None:
    return load_on_mesh(path, partitioner, param_dtype)
  model = _read(os.fspath(path))
  dtype = jax.numpy.dtype(param_dtype or model.config.param_dtype)
  if dtype == jax.numpy.dtype(model.config.param_dtype):
    return model
  return dataclasses.replace(
      model, config=dataclasses.replace(model.config, param_dtype=dtype.name),
      params=jax.tree_util.tree_map(lambda x: jax.numpy.asarray(x, dtype), model.params))


def _read(path: str) -> Loaded:
  if checkpoints.is_checkpoint(path):
    return _read_ours(path, os.path.dirname(os.path.abspath(path)))
  latest = checkpoints.latest(path)
  if latest:
    return _read_ours(latest, path)
  if os.path.isfile(os.path.join(path, 'config.json')):
    cfg, _ = hf_convert.read_hf_config(path)
    params = hf_convert.params_from_state_dict(hf_convert.read_hf_weights(path), cfg, path)
    vocab = os.path.join(path, VOCAB_FILE)
    return Loaded(cfg, cast_params(params, np.dtype(cfg.param_dtype)),
                  vocab if os.path.isfile(vocab) else None, path)
  if legacy_t5x.is_legacy_checkpoint(path):
    # T5X's scalable_t5 checkpoints stack their layers along axis 1, our default too.
    params = scan_layout.unscan_params(legacy_t5x.read_params(path))
    cfg = model_config.infer_config(params)
    check_shapes(params, cfg, legacy_t5x.checkpoint_file(path))
    return Loaded(cfg, params, None, path)
  raise FileNotFoundError(
      f'{path}: found no model. Expected a MODEL_DIR with checkpoint_<step>/ folders, a '
      'checkpoint_<step>/ folder, a Hugging Face folder with config.json, or a T5X '
      '`checkpoint` file.')


def _read_ours(checkpoint: str, model_dir: str) -> Loaded:
  params = checkpoints.restore_target(checkpoint)
  overrides, scan_axis = _gin_fields(model_dir)
  params = scan_layout.unscan_params(params, scan_axis)  # see `load`: plain layout
  cfg = model_config.infer_config(params, **overrides)
  rank = cfg.lora_rank
  if rank:
    # Inference needs no separate factors: fold them in once, here.
    params, cfg = lora.merge(params, cfg), lora.base_config(cfg)
  return Loaded(cfg, params, _vocabulary(model_dir), checkpoint, rank)


def _gin_fields(model_dir: str) -> tuple[dict, int]:
  """(the non-shape config fields, the scanned axis) that the MODEL_DIR's gin file names."""
  for name in (MODEL_GIN, 'config.gin'):
    gin_path = os.path.join(model_dir, name)
    if os.path.isfile(gin_path):
      fields = gin_utils.config_from_gin(gin_path)
      return ({k: v for k, v in fields.items() if k in _NON_SHAPE_FIELDS},
              fields.get('param_scan_axis', T5Config.param_scan_axis))
  return {}, T5Config.param_scan_axis


def _vocabulary(model_dir: str) -> Optional[str]:
  vocab = os.path.join(model_dir, VOCAB_FILE)
  return vocab if os.path.isfile(vocab) else None


def load_on_mesh(path: str, partitioner, param_dtype: Optional[str] = None) -> Loaded:
  """`load`, with the parameters as global jax arrays on `partitioner`'s mesh, sharded by
  the training rules (see decoding.place_params).

  A checkpoint of this project or T5X's Orbax layout is restored shard by shard straight
  into those shardings, cast to `param_dtype` while reading: each host reads only the
  slices its devices hold, and no host ever holds the whole model. It keeps its stored
  layout (a scanned checkpoint gives `scan_layers=True`; decoding unstacks the layers
  inside its program). Other sources (Hugging Face folders, legacy T5X files, LoRA runs,
  whose adapters are merged first) are read on the host, then placed.
  """
  path = os.fspath(path)
  checkpoint = checkpoints.checkpoint_folder(path)
  if checkpoint is not None:
    model_dir = os.path.dirname(os.path.abspath(checkpoint))
    stored = checkpoints.target_structs(checkpoint)
    overrides, scan_axis = _gin_fields(model_dir)
    cfg = model_config.infer_config(model_config.unflatten(stored), param_scan_axis=scan_axis,
                                    **overrides)
    if not cfg.lora_rank:
      dtype = jax.numpy.dtype(param_dtype or cfg.param_dtype)
      cfg = dataclasses.replace(cfg, param_dtype=dtype.name, remat_policy='none')
      decoding.check_mesh(Transformer(cfg), partitioner, where=checkpoint)  # before reading
      axes = model_config.param_axes(cfg)
      abstract = {k: jax.ShapeDtypeStruct(v.shape, dtype, sharding=partitioner.sharding(axes[k]))
                  for k, v in stored.items()}
      params = checkpoints.restore_target_sharded(checkpoint, model_config.unflatten(abstract))
      return Loaded(cfg, params, _vocabulary(model_dir), checkpoint)
  loaded = load(path, param_dtype)
  return dataclasses.replace(loaded, params=decoding.place_params(
      Transformer(loaded.config), loaded.params, partitioner))


def check_shapes(params: dict, cfg: T5Config, where: str) -> None:
  """Every parameter `cfg` needs is present with its shape, and nothing else is."""
  want = model_config.param_shapes(cfg)
  have = {k: tuple(np.shape(v)) for k, v in model_config.flatten(params).items()}
  for key, shape in want.items():
    if key not in have:
      raise ValueError(f'{where}: parameter {key!r} is missing (expected shape {shape}).')
    if have[key] != shape:
      raise ValueError(f'{where}: parameter {key!r} has shape {have[key]}, expected {shape}.')
  extra = sorted(set(have) - set(want))
  if extra:
    raise ValueError(f'{where}: unexpected parameters {extra[:5]}; not a T5 encoder-decoder.')


def cast_params(params: dict, dtype: np.dtype) -> dict:
  """Parameters as numpy in `dtype`; bf16 -> fp32 is exact, so round trips stay exact."""
  return jax.tree_util.tree_map(lambda x: np.asarray(x).astype(dtype), params)

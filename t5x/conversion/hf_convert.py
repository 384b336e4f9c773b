"""Hugging Face T5 <-> T5X parameter trees, and reading/writing HF model folders.

HF keeps torch `Linear` weights as [out, in]; T5X keeps kernels as [in, out], and its
relative-position table as [heads, buckets] where HF has [buckets, heads]. Every other
tensor is the same array under another name. Nothing here touches the network.
"""
import json
import os
import pickle
import re
from typing import Any, Iterator

import ml_dtypes
import numpy as np

from t5x import fs_utils
from t5x import model_config
from t5x.examples.t5.network import T5Config

_HF_MODEL_TYPES = ('t5', 'mt5')
_WEIGHT_FILES = ('model.safetensors', 'model.safetensors.index.json', 'pytorch_model.bin',
                 'pytorch_model.bin.index.json')
_ATTENTION = (('q', 'query'), ('k', 'key'), ('v', 'value'), ('o', 'out'))
# Sizes of config.json that shape the parameters: each must be a positive int.
_SIZE_KEYS = ('vocab_size', 'd_model', 'num_heads', 'num_layers', 'num_decoder_layers', 'd_kv',
              'd_ff')


class ConversionError(ValueError):
  """Input that cannot be converted; the message names the file or key at fault."""


def name_map(cfg: T5Config) -> Iterator[tuple[str, tuple[str, ...], bool]]:
  """Yields (hf_key, t5x_path, transposed) for every parameter of `cfg`'s model."""
  yield 'shared.weight', ('token_embedder', 'embedding'), False
  if not cfg.logits_via_embedding:
    yield 'lm_head.weight', ('decoder', 'logits_dense', 'kernel'), True
  mlp = ['wi'] if len(cfg.mlp_activations) == 1 else [
      f'wi_{i}' for i in range(len(cfg.mlp_activations))]

  def attention(hf, ours):
    for h, t in _ATTENTION:
      yield f'{hf}.{h}.weight', ours + (t, 'kernel'), True

  def feed_forward(hf, ours):
    for w in mlp + ['wo']:
      yield f'{hf}.DenseReluDense.{w}.weight', ours + ('mlp', w, 'kernel'), True
    yield f'{hf}.layer_norm.weight', ours + ('pre_mlp_layer_norm', 'scale'), False

  for stack, n in (('encoder', cfg.num_encoder_layers), ('decoder', cfg.num_decoder_layers)):
    yield (f'{stack}.block.0.layer.0.SelfAttention.relative_attention_bias.weight',
           (stack, 'relpos_bias', 'rel_embedding'), True)
    yield f'{stack}.final_layer_norm.weight', (stack, f'{stack}_norm', 'scale'), False
    for i in range(n):
      hf, ours = f'{stack}.block.{i}.layer', (stack, f'layers_{i}')
      if stack == 'encoder':
        yield from attention(f'{hf}.0.SelfAttention', ours + ('attention',))
        yield f'{hf}.0.layer_norm.weight', ours + ('pre_attention_layer_norm', 'scale'), False
        yield from feed_forward(f'{hf}.1', ours)
      else:
        yield from attention(f'{hf}.0.SelfAttention', ours + ('self_attention',))
        yield f'{hf}.0.layer_norm.weight', ours + ('pre_self_attention_layer_norm', 'scale'), False
        yield from attention(f'{hf}.1.EncDecAttention', ours + ('encoder_decoder_attention',))
        yield f'{hf}.1.layer_norm.weight', ours + ('pre_cross_attention_layer_norm', 'scale'), False
        yield from feed_forward(f'{hf}.2', ours)


# ----------------------------------------------------------------------------- configs

def config_from_hf(hf: dict[str, Any], where: str) -> T5Config:
  """T5Config from a parsed HF config.json; `where` names the file in errors."""
  model_type = hf.get('model_type')
  if model_type not in _HF_MODEL_TYPES:
    raise ConversionError(
        f'{where}: model_type is {model_type!r}, but only T5 models ({", ".join(_HF_MODEL_TYPES)})'
        ' can be imported. Point at a T5ForConditionalGeneration folder.')
  proj = hf.get('feed_forward_proj', 'relu')
  parts = proj.split('-') if isinstance(proj, str) else ['']
  act = parts[-1].replace('gelu_new', 'gelu')
  if act not in ('relu', 'gelu', 'silu') or len(parts) > 2 or (len(parts) == 2 and parts[0] != 'gated') \
      or (proj == 'gelu'):
    raise ConversionError(
        f'{where}: feed_forward_proj {proj!r} is not supported; use relu, gated-gelu, '
        'gated-relu or gated-silu.')
  for key in _SIZE_KEYS:
    value = hf.get(key)
    if key == 'num_decoder_layers' and value is None:
      continue  # optional: the encoder's num_layers then
    if key not in hf:
      raise ConversionError(f'{where}: missing key {key!r} that a T5 config needs.')
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
      raise ConversionError(f'{where}: {key!r} is {value!r}; it must be a positive integer. '
                            'Fix config.json (as transformers writes it for this model).')
  try:
    return T5Config(
        vocab_size=int(hf['vocab_size']),
        emb_dim=int(hf['d_model']),
        num_heads=int(hf['num_heads']),
        num_encoder_layers=int(hf['num_layers']),
        num_decoder_layers=int(hf.get('num_decoder_layers') or hf['num_layers']),
        head_dim=int(hf['d_kv']),
        mlp_dim=int(hf['d_ff']),
        mlp_activations=(act, 'linear') if len(parts) == 2 else (act,),
        dropout_rate=float(hf.get('dropout_rate', 0.1)),
        logits_via_embedding=_rescaled_tied_head(hf),
        relative_attention_num_buckets=int(hf.get('relative_attention_num_buckets', 32)),
        relative_attention_max_distance=int(hf.get('relative_attention_max_distance', 128)),
        layer_norm_epsilon=float(hf.get('layer_norm_epsilon', 1e-6)),
    )
  except KeyError as e:
    raise ConversionError(f'{where}: missing key {e.args[0]!r} that a T5 config needs.') from None
  except (TypeError, ValueError) as e:  # e.g. "dropout_rate": "high"
    raise ConversionError(f'{where}: a value that is not a number ({e}).') from None


def _rescaled_tied_head(hf: dict[str, Any]) -> bool:
  """T5 1.0 (tied head, rescaled decoder output) or not, as transformers decides it.

  transformers 5 writes `scale_decoder_outputs`; older configs say `tie_word_embeddings`.
  """
  if 'scale_decoder_outputs' in hf:
    return bool(hf['scale_decoder_outputs'])
  return bool(hf.get('tie_word_embeddings', True))


def config_to_hf(cfg: T5Config) -> dict[str, Any]:
  """The config.json that transformers' T5ForConditionalGeneration reads for `cfg`."""
  gated = len(cfg.mlp_activations) == 2
  return {
      'architectures': ['T5ForConditionalGeneration'],
      'model_type': 't5',
      'vocab_size': cfg.vocab_size,
      'd_model': cfg.emb_dim,
      'd_kv': cfg.head_dim,
      'd_ff': cfg.mlp_dim,
      'num_layers': cfg.num_encoder_layers,
      'num_decoder_layers': cfg.num_decoder_layers,
      'num_heads': cfg.num_heads,
      'relative_attention_num_buckets': cfg.relative_attention_num_buckets,
      'relative_attention_max_distance': cfg.relative_attention_max_distance,
      'dropout_rate': cfg.dropout_rate,
      'layer_norm_epsilon': cfg.layer_norm_epsilon,
      'feed_forward_proj': ('gated-' if gated else '') + cfg.mlp_activations[0],
      # transformers reads these flags to decide whether to rescale the decoder output.
      'tie_word_embeddings': cfg.logits_via_embedding,
      'scale_decoder_outputs': cfg.logits_via_embedding,
      'is_encoder_decoder': True,
      'decoder_start_token_id': 0,
      'pad_token_id': 0,
      'eos_token_id': 1,
      'dtype': 'float32',
  }


# ----------------------------------------------------------------------------- params

def params_from_state_dict(tensors: dict[str, np.ndarray], cfg: T5Config, where: str) -> dict:
  """HF state dict (numpy) -> T5X nested params, checked against `cfg`'s shapes."""
  expected = model_config.param_shapes(cfg)
  params: dict = {}
  for hf_key, path, transposed in name_map(cfg):
    want = expected['/'.join(path)]
    if hf_key == 'lm_head.weight' and hf_key not in tensors and 'shared.weight' in tensors:
      # transformers saves an untied head equal to the embedding only once, as `shared`.
      hf_key = 'shared.weight'
    if hf_key not in tensors:
      raise ConversionError(f'{where}: tensor {hf_key!r} is missing (expected shape '
                            f'{_hf_shape(want, transposed)}).')
    array = tensors[hf_key]
    found = tuple(array.shape)
    if found != _hf_shape(want, transposed):
      raise ConversionError(f'{where}: tensor {hf_key!r} has shape {found}, expected '
                            f'{_hf_shape(want, transposed)} for this config.json.')
    node = params
    for name in path[:-1]:
      node = node.setdefault(name, {})
    node[path[-1]] = np.ascontiguousarray(array.T) if transposed else array
  return params


def state_dict_from_params(params: dict, cfg: T5Config) -> dict[str, np.ndarray]:
  """T5X nested params -> HF state dict (numpy). Untied heads get `lm_head` beside `shared`."""
  out = {}
  for hf_key, path, transposed in name_map(cfg):
    node = params
    for name in path:
      node = node[name]
    array = np.asarray(node)
    out[hf_key] = np.ascontiguousarray(array.T) if transposed else array
  return out


def _hf_shape(shape: tuple[int, ...], transposed: bool) -> tuple[int, ...]:
  return tuple(reversed(shape)) if transposed else tuple(shape)


# ----------------------------------------------------------------------------- folders

def read_hf_config(hf_dir: str) -> tuple[T5Config, dict]:
  """Parses HF_DIR/config.json -> (T5Config, the raw dict)."""
  path = os.path.join(hf_dir, 'config.json')
  if not os.path.isfile(path):
    raise ConversionError(f'{hf_dir}: no config.json; this is not a Hugging Face model folder.')
  raw = _load_json(path)
  if not isinstance(raw, dict):
    raise ConversionError(f'{path}: expected a JSON object, got {type(raw).__name__}.')
  return config_from_hf(raw, path), raw


def _load_json(path: str) -> Any:
  """One JSON document (a leading UTF-8 byte-order mark allowed); ConversionError naming
  `path:line` for bytes that are not UTF-8 or text that is not JSON."""
  with open(path, 'rb') as f:
    blob = f.read().removeprefix(b'\xef\xbb\xbf')
  try:
    text = blob.decode('utf-8')
  except UnicodeDecodeError as e:
    line = blob.count(b'\n', 0, e.start) + 1
    column = e.start - (blob.rfind(b'\n', 0, e.start) + 1) + 1
    raise ConversionError(f'{path}:{line}: not valid UTF-8 (byte {column} of the line: '
                          f'{e.reason}); re-save the file as UTF-8.') from None
  try:
    return json.loads(text)
  except json.JSONDecodeError as e:
    raise ConversionError(f'{path}:{e.lineno}: not valid JSON ({e.msg}, column {e.colno}).'
                          ) from None


def read_hf_weights(hf_dir: str) -> dict[str, np.ndarray]:
  """Reads every tensor of HF_DIR as numpy, keeping the stored dtype (bf16 stays bf16).

  Takes model.safetensors, pytorch_model.bin (loaded with weights_only, never a full
  pickle), or the sharded `*.index.json` variant of either.
  """
  present = [f for f in _WEIGHT_FILES if os.path.isfile(os.path.join(hf_dir, f))]
  if not present:
    raise ConversionError(f'{hf_dir}: no weights found; expected one of {", ".join(_WEIGHT_FILES)}.')
  name = present[0]
  if name.endswith('.index.json'):
    shards = _index_shards(os.path.join(hf_dir, name))
  else:
    shards = [name]
  tensors = {}
  for shard in shards:
    tensors.update(_read_shard(os.path.join(hf_dir, shard)))
  return tensors


def _index_shards(path: str) -> list[str]:
  """The shard files an `*.index.json` names, each checked to lie inside its folder (an
  index must not make us read `../../etc/passwd` or an absolute path)."""
  index = _load_json(path)
  weight_map = index.get('weight_map') if isinstance(index, dict) else None
  if not isinstance(weight_map, dict) or not weight_map:
    raise ConversionError(f'{path}: no "weight_map" object of tensor name -> shard file.')
  for key, shard in weight_map.items():
    if not isinstance(shard, str) or not shard:
      raise ConversionError(f'{path}: weight_map[{key!r}] is {shard!r}, not a file name.')
    # Checked by name, not by realpath: a hub cache's shards are symlinks into blobs/.
    if os.path.isabs(shard) or os.path.normpath(shard).split(os.sep)[0] == os.pardir:
      raise ConversionError(f'{path}: weight_map[{key!r}] is {shard!r}, a path outside the '
                            'model folder; shards must be files beside the index.')
  return sorted(set(weight_map.values()))


def _read_shard(path: str) -> dict[str, np.ndarray]:
  """The tensors of one weights file as numpy; errors name the file and say why."""
  import torch  # The hf extra; only conversion needs it.
  if not os.path.isfile(path):
    raise ConversionError(f'{path}: no such weights file (named by the index).')
  if path.endswith('.safetensors'):
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    try:
      state = load_file(path)
    except SafetensorError as e:
      raise ConversionError(f'{path}: not a readable safetensors file ({e}).') from None
  else:
    try:
      state = torch.load(path, map_location='cpu', weights_only=True)
    except pickle.UnpicklingError as e:
      # torch's own message advises weights_only=False, which would run the file's code.
      found = re.search(r'GLOBAL ([\w.]+)', str(e))
      detail = f' (it refers to {found[1]})' if found else ''
      raise ConversionError(
          f'{path}: refusing to unpickle arbitrary objects: this file holds more than plain '
          f'tensors{detail}. Use a model.safetensors, or re-save the state dict of tensors '
          'only from a copy you trust.') from None
    except (RuntimeError, EOFError, KeyError, ValueError) as e:
      first = ' '.join(str(e).split('. ')[0].split())
      raise ConversionError(f'{path}: not a readable PyTorch weights file ({first}); it may be '
                            'truncated or not a pytorch_model.bin.') from None
  if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
    raise ConversionError(f'{path}: expected a state dict of tensor name -> tensor, got '
                          f'{type(state).__name__}.')
  return {k: _to_numpy(v) for k, v in state.items()}


def _to_numpy(t) -> np.ndarray:
  import torch
  if t.dtype == torch.bfloat16:
    return t.contiguous().view(torch.int16).numpy().view(ml_dtypes.bfloat16)
  return t.contiguous().numpy()


def write_hf_files(folder: str, params: dict, cfg: T5Config,
                   vocab_path: str | None = None) -> None:
  """Writes config.json, model.safetensors (and spiece.model + tokenizer files) into an
  existing folder; hf_export.export wraps this in a folder renamed into place when whole."""
  from safetensors.numpy import save_file
  tensors = state_dict_from_params(params, cfg)
  # safetensors' numpy writer has no bfloat16; those parameters are widened exactly.
  tensors = {k: v if v.dtype in (np.float32, np.float16) else v.astype(np.float32)
             for k, v in tensors.items()}
  fs_utils.write_atomic(os.path.join(folder, 'config.json'),
                        json.dumps(config_to_hf(cfg), indent=2))
  with fs_utils.atomic_path(os.path.join(folder, 'model.safetensors')) as temp:
    save_file(tensors, temp, metadata={'format': 'pt'})
  if vocab_path:
    _write_tokenizer(folder, vocab_path)


def _write_tokenizer(out_dir: str, vocab_path: str) -> None:
  """Copies the SentencePiece model and writes a T5Tokenizer config around it."""
  import sentencepiece as spm
  with open(vocab_path, 'rb') as f:
    blob = f.read()
  fs_utils.write_atomic(os.path.join(out_dir, 'spiece.model'), blob)
  sp = spm.SentencePieceProcessor(model_proto=blob)
  fs_utils.write_atomic(os.path.join(out_dir, 'tokenizer_config.json'), json.dumps({
      'tokenizer_class': 'T5Tokenizer',
      'eos_token': sp.id_to_piece(1) if sp.get_piece_size() > 1 else '</s>',
      'unk_token': sp.id_to_piece(sp.unk_id()),
      'pad_token': sp.id_to_piece(0),
      'extra_ids': 100,
      'model_max_length': 512,
  }, indent=2))

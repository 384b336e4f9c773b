"""What a T5Config implies: parameter shapes, logical axes, counts, and its gin text.

Also the reverse: a T5Config inferred from a parameter tree's shapes (T5X checkpoints
carry no architecture file), refined by the `network.T5Config` bindings of a gin file.
"""
import dataclasses
import functools
from collections.abc import Mapping
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from gin import config_parser

from t5x.lora import adapters as lora
from t5x.examples.t5.network import T5Config, Transformer


@functools.lru_cache(maxsize=32)
def abstract_variables(cfg: T5Config) -> Any:
  """The boxed parameter tree of `cfg`'s model as ShapeDtypeStructs; allocates nothing."""
  tokens = jnp.ones((1, 1), jnp.int32)
  init = functools.partial(Transformer(cfg).init, enable_dropout=False)
  return jax.eval_shape(init, jax.random.PRNGKey(0), tokens, tokens)['params']


def flatten(tree: Any) -> dict[str, Any]:
  """Nested dict -> {'encoder/layers_0/attention/query/kernel': leaf, ...}."""
  flat = {}
  for path, leaf in jax.tree_util.tree_flatten_with_path(
      tree, is_leaf=lambda x: isinstance(x, nn.Partitioned))[0]:
    flat['/'.join(str(getattr(k, 'key', k)) for k in path)] = leaf
  return flat


def unflatten(flat: dict[str, Any]) -> dict:
  """Inverse of `flatten`."""
  tree: dict = {}
  for key, leaf in flat.items():
    node = tree
    *parents, last = key.split('/')
    for name in parents:
      node = node.setdefault(name, {})
    node[last] = leaf
  return tree


def param_shapes(cfg: T5Config) -> dict[str, tuple[int, ...]]:
  """{'a/b/kernel': shape} for every parameter of `cfg`'s model."""
  return {k: tuple(v.value.shape) for k, v in flatten(abstract_variables(cfg)).items()}


def param_axes(cfg: T5Config) -> dict[str, tuple[str, ...]]:
  """{'a/b/kernel': logical axis names} for every parameter of `cfg`'s model."""
  return {k: tuple(v.names) for k, v in flatten(abstract_variables(cfg)).items()}


def count_params(cfg: T5Config) -> int:
  return sum(int(np.prod(s)) for s in param_shapes(cfg).values())


def infer_config(params: dict, **overrides) -> T5Config:
  """A T5Config whose parameter shapes are those of `params` (a T5X-named tree, either
  layout; a scanned tree gives `scan_layers=True`).

  Fields that shapes cannot tell (dropout, max distance, epsilon, dtypes, and the stacked
  axis of a scanned tree) come from `overrides`, else T5Config's defaults.
  """
  scanned = is_scanned(params)
  if scanned:
    params = unscan_params(params, overrides.get('param_scan_axis', T5Config.param_scan_axis))
  flat = {k: _shape(v) for k, v in flatten(params).items()}
  try:
    vocab, emb = flat['token_embedder/embedding']
    heads, buckets = flat['encoder/relpos_bias/rel_embedding']
    joined = flat['encoder/layers_0/attention/query/kernel'][1]
    gated = 'encoder/layers_0/mlp/wi_0/kernel' in flat
    mlp = flat['encoder/layers_0/mlp/' + ('wi_0' if gated else 'wi') + '/kernel'][1]
  except KeyError as e:
    raise KeyError(f'parameter {e.args[0]!r} is missing: this is not a T5 parameter tree') from None
  count = lambda stack: len({k.split('/')[1] for k in flat if k.startswith(f'{stack}/layers_')})
  fields = dict(
      vocab_size=vocab, emb_dim=emb, num_heads=heads, head_dim=joined // heads, mlp_dim=mlp,
      num_encoder_layers=count('encoder'), num_decoder_layers=count('decoder'),
      relative_attention_num_buckets=buckets,
      logits_via_embedding='decoder/logits_dense/kernel' not in flat,
      mlp_activations=('gelu', 'linear') if gated else ('relu',), scan_layers=scanned)
  fields.update(lora.infer_fields(flat))  # LoRA rank and targets, if adapters are present
  fields.update(overrides)
  return T5Config(**fields)


# ----------------------------------------------------------------------------- scanned layout
# A plain tree holds one subtree per layer (`encoder/layers_0/...`, `layers_1`, ...); a
# scanned one (T5Config.scan_layers) holds one subtree `encoder/layers/...` whose leaves
# stack the layers' leaves along `param_scan_axis`. Same numbers, so the conversions are
# exact. They take any leaf type: numpy, jax arrays, ShapeDtypeStructs, or boxed
# `nn.Partitioned` leaves (whose axis names gain or lose 'layers').

_STACKS = ('encoder', 'decoder')
_SCANNED = 'layers'


def is_scanned(params: dict) -> bool:
  """Whether `params` (a nested T5X-named tree) is in the scanned layout."""
  return any(isinstance(params.get(stack), Mapping) and _SCANNED in params[stack]
             for stack in _STACKS)


def scan_params(params: dict, param_scan_axis: int = 1) -> dict:
  """Plain tree -> scanned tree: `layers_<i>` subtrees stacked into one `layers` subtree.

  A leaf of shape [a, b] becomes [a, n, b] for param_scan_axis=1 ([n, a, b] for 0).
  Trees already scanned come back unchanged.
  """
  if is_scanned(params):
    return params
  out = dict(params)
  for stack in _STACKS:
    if not isinstance(params.get(stack), Mapping):
      continue
    layers = _layer_names(params[stack])
    if not layers:
      continue
    rest = {k: v for k, v in params[stack].items() if k not in layers}
    per_layer = [params[stack][name] for name in layers]
    rest[_SCANNED] = jax.tree_util.tree_map(
        lambda *leaves: _stack(leaves, param_scan_axis), *per_layer, is_leaf=_is_box)
    out[stack] = rest
  return out


def unscan_params(params: dict, param_scan_axis: int = 1) -> dict:
  """Scanned tree -> plain tree (`layers_0`, `layers_1`, ...); inverse of `scan_params`.

  Trees already plain come back unchanged.
  """
  out = dict(params)
  for stack in _STACKS:
    node = params.get(stack)
    if not isinstance(node, Mapping) or _SCANNED not in node:
      continue
    stacked = node[_SCANNED]
    leaves = jax.tree_util.tree_leaves(stacked, is_leaf=_is_box)
    num_layers = _shape(leaves[0])[param_scan_axis] if leaves else 0
    rest = {k: v for k, v in node.items() if k != _SCANNED}
    for i in range(num_layers):
      rest[f'layers_{i}'] = jax.tree_util.tree_map(
          lambda leaf: _index(leaf, i, param_scan_axis), stacked, is_leaf=_is_box)
    out[stack] = rest
  return out


def params_for_config(params: dict, cfg: T5Config, source_scan_axis: int | None = None) -> dict:
  """`params` (either layout) in the layout `cfg` runs: scanned when `cfg.scan_layers`.

  A scanned source is read with `source_scan_axis` (default: `cfg.param_scan_axis`).
  """
  axis = cfg.param_scan_axis if source_scan_axis is None else source_scan_axis
  if is_scanned(params) and (not cfg.scan_layers or axis != cfg.param_scan_axis):
    params = unscan_params(params, axis)
  return scan_params(params, cfg.param_scan_axis) if cfg.scan_layers else params


def split_scanned(tree: dict) -> tuple[dict, dict]:
  """(stacked part, rest) of a parameter-shaped tree: the stacked part holds only the
  `encoder/layers` and `decoder/layers` subtrees; `join_scanned` undoes the split."""
  stacked, rest = {}, {}
  for name, node in tree.items():
    if name in _STACKS and isinstance(node, Mapping) and _SCANNED in node:
      stacked[name] = {_SCANNED: node[_SCANNED]}
      rest[name] = {k: v for k, v in node.items() if k != _SCANNED}
    else:
      rest[name] = node
  return stacked, rest


def join_scanned(stacked: dict, rest: dict) -> dict:
  """Inverse of `split_scanned`."""
  out = dict(rest)
  for name, node in stacked.items():
    out[name] = {**rest.get(name, {}), **node}
  return out


def unscanned_config(cfg: T5Config) -> T5Config:
  """The layer-per-module config decoding runs (no scan, no remat; same parameters)."""
  return dataclasses.replace(cfg, scan_layers=False, remat_policy='none')


def _layer_names(stack: dict) -> list[str]:
  """['layers_0', 'layers_1', ...] of a plain stack, in layer order; checks there are no gaps."""
  indices = sorted(int(k[len('layers_'):]) for k in stack
                   if k.startswith('layers_') and k[len('layers_'):].isdigit())
  if indices != list(range(len(indices))):
    raise ValueError(f'layer subtrees {indices} are not numbered 0..{len(indices) - 1}')
  return [f'layers_{i}' for i in indices]


def _is_box(x) -> bool:
  return isinstance(x, nn.Partitioned)


def _shape(leaf) -> tuple[int, ...]:
  leaf = leaf.value if _is_box(leaf) else leaf
  return tuple(leaf.shape) if hasattr(leaf, 'shape') else np.shape(leaf)


def _stack(leaves: tuple, axis: int):
  """Stacks same-shaped leaves along a new `axis`, keeping their type."""
  first = leaves[0]
  if _is_box(first):
    names = list(first.names)
    names.insert(axis, _SCANNED)
    return first.replace(value=_stack(tuple(l.value for l in leaves), axis), names=tuple(names))
  if isinstance(first, jax.ShapeDtypeStruct):
    shape = list(first.shape)
    shape.insert(axis, len(leaves))
    return jax.ShapeDtypeStruct(tuple(shape), first.dtype)
  if isinstance(first, jax.Array):
    return jnp.stack(leaves, axis=axis)
  return np.stack([np.asarray(l) for l in leaves], axis=axis)


def _index(leaf, i: int, axis: int):
  """Layer `i` of a stacked leaf (the stacked `axis` removed), keeping its type."""
  if _is_box(leaf):
    names = list(leaf.names)
    del names[axis]
    return leaf.replace(value=_index(leaf.value, i, axis), names=tuple(names))
  if isinstance(leaf, jax.ShapeDtypeStruct):
    shape = list(leaf.shape)
    del shape[axis]
    return jax.ShapeDtypeStruct(tuple(shape), leaf.dtype)
  if isinstance(leaf, jax.Array):
    return jax.lax.index_in_dim(leaf, i, axis, keepdims=False)
  return np.take(np.asarray(leaf), i, axis=axis)


# ----------------------------------------------------------------------------- gin

def config_to_gin(cfg: T5Config, vocabulary_path: str | None = None) -> str:
  """gin text binding `network.T5Config` (T5X's names) for `cfg`'s architecture."""
  lines = ['# The architecture of this checkpoint; include it with --gin_file.',
           'from __gin__ import dynamic_registration',
           'from t5x.examples.t5 import network', '', 'network.Transformer.config = @network.T5Config()',
           'network.T5Config:']
  for field in dataclasses.fields(cfg):
    lines.append(f'  {field.name} = {getattr(cfg, field.name)!r}')
  if vocabulary_path:
    lines += ['', f'VOCABULARY_PATH = {vocabulary_path!r}']
  return '\n'.join(lines) + '\n'


class _Literal(config_parser.ParserDelegate):
  """Keeps references and macros as markers; nothing is imported or evaluated."""

  def configurable_reference(self, name, evaluate):
    return ('@', name)

  def macro(self, name):
    return ('%', name)


def read_gin_literals(path: str) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
  """(macros, {selector: {argument: value}}) of a gin file's literal bindings.

  Reads the file as text through gin's parser, so it needs none of the file's imports;
  macros defined in the file are resolved, references (@...) are left out.
  """
  macros, bindings = {}, {}
  with open(path) as f:
    for stmt in config_parser.ConfigParser(f, _Literal()):
      if not isinstance(stmt, config_parser.BindingStatement):
        continue
      if stmt.arg_name:
        bindings.setdefault(stmt.selector, {})[stmt.arg_name] = stmt.value
      else:
        macros[stmt.selector] = stmt.value

  def resolve(value):
    seen = 0
    while isinstance(value, tuple) and len(value) == 2 and value[0] == '%' and seen < 20:
      value, seen = macros.get(value[1]), seen + 1
    return None if isinstance(value, tuple) and value[:1] == ('@',) else value

  macros = {k: resolve(v) for k, v in macros.items()}
  bindings = {sel: {k: v for k, v in ((a, resolve(v)) for a, v in args.items()) if v is not None}
              for sel, args in bindings.items()}
  return macros, bindings


def gin_macros(path: str) -> dict[str, Any]:
  return read_gin_literals(path)[0]


def gin_bindings(path: str, configurable: str) -> dict[str, Any]:
  """Literal bindings of the configurable whose name ends with `configurable`."""
  out = {}
  for selector, args in read_gin_literals(path)[1].items():
    if selector.split('.')[-1] == configurable:
      out.update(args)
  return out


def config_from_gin(path: str) -> dict[str, Any]:
  """The literal `T5Config` bindings in a gin file (macros defined there resolved)."""
  return gin_bindings(path, 'T5Config')

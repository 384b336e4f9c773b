"""The two layouts of a T5 parameter tree: one subtree per layer, or layers stacked.

A plain tree holds one subtree per layer (`encoder/layers_0/...`, `layers_1`, ...); a
scanned one (T5Config.scan_layers) holds one subtree `encoder/layers/...` whose leaves
stack the layers' leaves along `param_scan_axis`. Same numbers, so the conversions are
exact. They take any leaf type: numpy, jax arrays, ShapeDtypeStructs, or boxed
`nn.Partitioned` leaves (whose axis names gain or lose 'layers').

Configs are read only for their `scan_layers`, `param_scan_axis` and `remat_policy`
fields, so this module needs no network (the optimizers import it).
"""
import dataclasses
from collections.abc import Mapping

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

_STACKS = ('encoder', 'decoder')
_SCANNED = 'layers'  # the stacked subtree's name, and the stacked axis' logical name


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
    num_layers = leaf_shape(leaves[0])[param_scan_axis] if leaves else 0
    rest = {k: v for k, v in node.items() if k != _SCANNED}
    for i in range(num_layers):
      rest[f'layers_{i}'] = jax.tree_util.tree_map(
          lambda leaf: _index(leaf, i, param_scan_axis), stacked, is_leaf=_is_box)
    out[stack] = rest
  return out


def params_for_config(params: dict, cfg, source_scan_axis: int | None = None) -> dict:
  """`params` (either layout) in the layout `cfg` (a network.T5Config) runs: scanned when
  `cfg.scan_layers`.

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


def unscanned_config(cfg):
  """The layer-per-module config decoding runs (no scan, no remat; same parameters) of a
  network.T5Config."""
  return dataclasses.replace(cfg, scan_layers=False, remat_policy='none')


def leaf_shape(leaf) -> tuple[int, ...]:
  """The shape of a leaf of any type above (a boxed leaf: its value's)."""
  leaf = leaf.value if _is_box(leaf) else leaf
  return tuple(leaf.shape) if hasattr(leaf, 'shape') else np.shape(leaf)


def _layer_names(stack: dict) -> list[str]:
  """['layers_0', 'layers_1', ...] of a plain stack, in layer order; checks there are no gaps."""
  indices = sorted(int(k[len('layers_'):]) for k in stack
                   if k.startswith('layers_') and k[len('layers_'):].isdigit())
  if indices != list(range(len(indices))):
    raise ValueError(f'layer subtrees {indices} are not numbered 0..{len(indices) - 1}')
  return [f'layers_{i}' for i in indices]


def _is_box(x) -> bool:
  return isinstance(x, nn.Partitioned)


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

"""LoRA bookkeeping: which parameters train, and folding adapters back into the weights.

The network (`network.Dense`) gives each targeted kernel W two factors beside it,
`.../lora_a` [in, r] and `.../lora_b` [r, out]. Training a LoRA model updates those
only: the trainer splits the parameter tree into adapters (differentiated, optimized)
and base (held fixed), while `TrainState.params` and checkpoints keep the whole tree.
Inference and export fold the factors in: W' = W + (alpha / r) * A @ B.

Trees here are nested dicts (parameters, or anything shaped like them: shardings,
logical axes, ShapeDtypeStructs), so the same `split` serves all of them.
"""
import dataclasses
from collections.abc import Mapping
from typing import Any, Optional

import jax
import numpy as np

from t5x.examples.t5.network import LORA_TARGETS, T5Config

ADAPTER_NAMES = ('lora_a', 'lora_b')


def enabled(cfg: T5Config) -> bool:
  return cfg.lora_rank > 0


def is_adapter(path) -> bool:
  """True for a LoRA factor. `path`: 'a/b/lora_a', or a key tuple (str or jax path keys)."""
  if isinstance(path, str):
    path = path.split('/')
  if not path:
    return False
  last = path[-1]
  return str(getattr(last, 'key', last)) in ADAPTER_NAMES


def split(tree: dict) -> tuple[dict, dict]:
  """(adapters, base): the LoRA factors and everything else, each a pruned copy of `tree`."""
  adapters, base = {}, {}
  for name, node in tree.items():
    if isinstance(node, Mapping):
      a, b = split(node)
      if a:
        adapters[name] = a
      if b:
        base[name] = b
    elif name in ADAPTER_NAMES:
      adapters[name] = node
    else:
      base[name] = node
  return adapters, base


def combine(adapters: dict, base: dict) -> dict:
  """Inverse of `split`: one tree holding the leaves of both."""
  out = dict(base)
  for name, node in adapters.items():
    out[name] = combine(node, out.get(name, {})) if isinstance(node, Mapping) else node
  return out


def has_adapters(tree: dict) -> bool:
  return bool(split(tree)[0])


def split_trainable(params: dict, cfg: T5Config) -> tuple[dict, dict]:
  """(trained, frozen) parts of a parameter tree: with LoRA on the adapters and the base;
  otherwise every parameter trains and nothing is frozen."""
  return split(params) if enabled(cfg) else (params, {})


# ----------------------------------------------------------------------------- checkpoints

def infer_fields(flat_shapes: dict[str, tuple[int, ...]]) -> dict[str, Any]:
  """T5Config's `lora_rank` and `lora_targets` implied by a flat {'a/b/lora_a': shape}
  parameter listing; {} when it holds no adapters. (`lora_alpha` is not in the shapes.)"""
  ranks, targets = set(), set()
  for key, shape in flat_shapes.items():
    if key.endswith('/lora_a'):
      ranks.add(int(shape[-1]))
      targets.add(_target_of(key.split('/')[-2]))
  if not ranks:
    return {}
  if len(ranks) > 1 or not targets <= set(LORA_TARGETS):
    raise ValueError(f'LoRA adapters of ranks {sorted(ranks)} on {sorted(targets)}: one rank '
                     f'over modules among {LORA_TARGETS} is supported.')
  return {'lora_rank': ranks.pop(), 'lora_targets': tuple(t for t in LORA_TARGETS if t in targets)}


def _target_of(module: str) -> str:
  """The LORA_TARGETS name of a Dense module ('wi', 'wi_0', 'wi_1', 'wo' -> 'mlp')."""
  return 'mlp' if module in ('wi', 'wo') or module.startswith('wi_') else module


def scale_of(cfg: T5Config) -> Optional[float]:
  """alpha / r, the factor on (x@A)@B; None with LoRA off."""
  return cfg.lora_alpha / cfg.lora_rank if enabled(cfg) else None


def base_config(cfg: T5Config) -> T5Config:
  """`cfg` without adapters: the architecture a merged checkpoint has."""
  return dataclasses.replace(cfg, lora_rank=0)


def merge(params: dict, cfg: T5Config) -> dict:
  """A plain parameter tree (numpy): each adapted kernel becomes W + (alpha/r) * A @ B,
  computed in float32 and stored in the kernel's dtype; the factors are dropped.

  Kernels are [in, out], or [in, L, out] / [L, in, out] for scanned stacks
  (`cfg.param_scan_axis`), with the factors stacked the same way.
  """
  scale = scale_of(cfg)

  def fold(node: dict) -> dict:
    out = {k: fold(v) if isinstance(v, Mapping) else v for k, v in node.items()
           if k not in ADAPTER_NAMES}
    if 'lora_a' in node:
      if scale is None:
        raise ValueError('these parameters hold LoRA adapters but the config has lora_rank=0; '
                         'pass the config they were trained with.')
      out['kernel'] = _merged_kernel(node['kernel'], node['lora_a'], node['lora_b'],
                                     np.float32(scale), getattr(cfg, 'param_scan_axis', 1))
    return out

  return fold(params)


def _merged_kernel(kernel, a, b, scale: np.float32, scan_axis: int) -> np.ndarray:
  kernel = np.asarray(kernel)
  w, a, b = (np.asarray(x, np.float32) for x in (kernel, a, b))
  if w.ndim == 3:  # scanned: move the layer axis first and multiply per layer
    w, a, b = (np.moveaxis(x, scan_axis, 0) for x in (w, a, b))
  merged = w + scale * np.matmul(a, b)
  if merged.ndim == 3:
    merged = np.moveaxis(merged, 0, scan_axis)
  return merged.astype(kernel.dtype)


# ----------------------------------------------------------------------------- starting points

def fresh_adapters(model, seed: int = 0) -> dict:
  """New adapters for `model` (an EncoderDecoderModel with LoRA on), as numpy arrays:
  `lora_a` from the network's own initializer, `lora_b` zeros.

  The whole model's init runs under jit with only the adapters as outputs, so XLA drops
  the base parameters' initialisation: an 11B model costs only its adapters' memory.
  """
  init = jax.jit(lambda rng: split(model.init_params(rng))[0])
  return jax.tree_util.tree_map(np.asarray, init(jax.random.PRNGKey(seed)))


def add_fresh_adapters(params: dict, model, where: str, seed: int = 0) -> dict:
  """A plain parameter tree -> the tree `model` trains: unchanged with LoRA off, plus
  fresh adapters (B = 0, so the function is the plain model's) with LoRA on.

  A tree that already holds adapters is refused: its `lora_alpha` is unknown here, and
  a starting point is a plain model.
  """
  adapters, _ = split(params)
  if adapters:
    first = '/'.join(_first_path(adapters))
    raise ValueError(
        f'{where} holds LoRA adapters (e.g. {first}); a starting point must be a plain model. '
        'Fold them into the weights with `t5x merge-lora MODEL_DIR OUT_DIR` and start from '
        'OUT_DIR (to continue that run instead, train with it as MODEL_DIR).')
  if not enabled(model.config):
    return params
  return combine(fresh_adapters(model, seed), params)


def _first_path(tree: dict) -> list[str]:
  name, node = next(iter(tree.items()))
  return [name] + (_first_path(node) if isinstance(node, Mapping) else [])


"""What a T5Config implies: parameter shapes, logical axes and counts.

Also the reverse: a T5Config inferred from a parameter tree's shapes (T5X checkpoints
carry no architecture file). The two layouts of a tree are `scan_layout`'s; a config's
gin text is `gin_utils`'.
"""
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from t5x import scan_layout
from t5x.examples.t5.network import T5Config, Transformer
from t5x.lora import adapters as lora


@functools.lru_cache(maxsize=32)
def abstract_variables(cfg: T5Config) -> Any:
  """The boxed parameter tree of `cfg`'s model as ShapeDtypeStructs; allocates nothing."""
  # Abstract inputs too: nothing runs eagerly (no small programs compiled on first use).
  tokens = jax.ShapeDtypeStruct((1, 1), jnp.int32)
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32)  # a raw PRNG key
  init = functools.partial(Transformer(cfg).init, enable_dropout=False)
  return jax.eval_shape(init, rng, tokens, tokens)['params']


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
  """Number of parameters of `cfg`'s model (LoRA factors included), from shapes only."""
  return sum(int(np.prod(s)) for s in param_shapes(cfg).values())


def parameter_counts(cfg: T5Config) -> dict[str, int]:
  """{'trainable', 'frozen', 'total'} parameter counts of `cfg`'s model, from shapes only
  (nothing is allocated). With LoRA off every parameter is trainable; with it on only the
  adapters are.

  For memory planning: gradients and optimizer state scale with 'trainable', the
  parameters themselves with 'total'.
  """
  shapes = param_shapes(cfg)
  adapters = sum(int(np.prod(s)) for k, s in shapes.items() if lora.is_adapter(k))
  total = sum(int(np.prod(s)) for s in shapes.values())
  trainable = adapters if lora.enabled(cfg) else total
  return {'trainable': trainable, 'frozen': total - trainable, 'total': total}


def adapter_count(cfg: T5Config) -> int:
  """Number of LoRA parameters (the trainable ones) of `cfg`'s model; 0 with LoRA off."""
  return parameter_counts(cfg)['trainable'] if lora.enabled(cfg) else 0


def infer_config(params: dict, **overrides) -> T5Config:
  """A T5Config whose parameter shapes are those of `params` (a T5X-named tree, either
  layout; a scanned tree gives `scan_layers=True`).

  Fields that shapes cannot tell (dropout, max distance, epsilon, dtypes, and the stacked
  axis of a scanned tree) come from `overrides`, else T5Config's defaults.
  """
  scanned = scan_layout.is_scanned(params)
  if scanned:
    params = scan_layout.unscan_params(
        params, overrides.get('param_scan_axis', T5Config.param_scan_axis))
  flat = {k: scan_layout.leaf_shape(v) for k, v in flatten(params).items()}
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

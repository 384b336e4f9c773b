"""What a T5Config implies: parameter shapes, logical axes, counts, and its gin text.

Also the reverse: a T5Config inferred from a parameter tree's shapes (T5X checkpoints
carry no architecture file), refined by the `network.T5Config` bindings of a gin file.
"""
import dataclasses
import functools
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
from gin import config_parser

from t5x_engine.network import T5Config, Transformer


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
  """A T5Config whose parameter shapes are those of `params` (a T5X-named tree).

  Fields that shapes cannot tell (dropout, max distance, epsilon, dtypes) come from
  `overrides`, else T5Config's defaults.
  """
  flat = {k: np.shape(v) for k, v in flatten(params).items()}
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
      mlp_activations=('gelu', 'linear') if gated else ('relu',))
  fields.update(overrides)
  return T5Config(**fields)


# ----------------------------------------------------------------------------- gin

def config_to_gin(cfg: T5Config, vocabulary_path: str | None = None) -> str:
  """gin text binding `network.T5Config` (T5X's names) for `cfg`'s architecture."""
  lines = ['# The architecture of this checkpoint; include it with --gin_file.',
           'from __gin__ import dynamic_registration',
           'from t5x_engine import network', '', 'network.Transformer.config = @network.T5Config()',
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

"""Reads checkpoints written by T5X itself before its Orbax era.

Such a checkpoint is a flax msgpack file named `checkpoint` holding
`{'version', 'optimizer': {'target': params, 'state': {...}}}`. Small arrays sit inline;
large ones are TensorStore zarr specs whose kvstore path is relative to the checkpoint
folder (metadata inline, no `.zarray` files). `gs://` checkpoints are read through
tf.io.gfile (the msgpack file) and tensorstore's gcs driver (the arrays).
"""
import os
import posixpath
from typing import Any

import numpy as np
import tensorstore as ts
from flax import serialization

from t5x import fs_utils


class LegacyCheckpointError(ValueError):
  """A T5X checkpoint that cannot be read; the message names the file and key."""


def checkpoint_file(path: str) -> str:
  """The msgpack file of a checkpoint given as that file or as its folder."""
  join = posixpath.join if fs_utils.is_remote(path) else os.path.join
  if _isdir(path):
    return join(path, 'checkpoint')
  return path


def is_legacy_checkpoint(path: str) -> bool:
  f = checkpoint_file(path)
  if not _exists(f):
    return False
  with _open(f) as fh:
    head = fh.read(64)
  # T5X's msgpack maps start with one of these keys.
  return any(key in head for key in (b'version', b'optimizer'))


def read(path: str) -> dict:
  """The whole checkpoint tree with every array as numpy (TensorStore leaves read)."""
  f = checkpoint_file(path)
  if not _exists(f):
    raise LegacyCheckpointError(f'{f}: no such file; pass a T5X checkpoint file or its folder.')
  with _open(f) as fh:
    raw = fh.read()
  try:
    tree = serialization.msgpack_restore(raw)
  except Exception as e:  # msgpack raises several unrelated types on corrupt input.
    raise LegacyCheckpointError(f'{f}: not a T5X msgpack checkpoint ({e}).') from None
  folder = f.rsplit('/', 1)[0] if fs_utils.is_remote(f) else os.path.dirname(os.path.abspath(f))
  return _resolve(tree, folder, f, ())


def read_params(path: str) -> dict:
  """The model parameters (`optimizer/target`) of a T5X checkpoint."""
  tree = read(path)
  optimizer = tree.get('optimizer') if isinstance(tree, dict) else None
  target = optimizer.get('target') if isinstance(optimizer, dict) else None
  if not isinstance(target, dict) or not target:
    raise LegacyCheckpointError(
        f'{checkpoint_file(path)}: key optimizer/target holds no parameters '
        f'(top-level keys: {sorted(tree) if isinstance(tree, dict) else type(tree).__name__}); '
        'this checkpoint has no model to import.')
  return target


def _resolve(node: Any, folder: str, where: str, path: tuple) -> Any:
  if isinstance(node, dict):
    if 'driver' in node and 'kvstore' in node:
      return _read_tensorstore(node, folder, where, path)
    return {k: _resolve(v, folder, where, path + (k,)) for k, v in node.items()}
  if isinstance(node, str) and node.startswith('PLACEHOLDER://'):
    raise LegacyCheckpointError(
        f'{where}: key {"/".join(path)} is an early-Orbax placeholder; that layout is not '
        'supported. Re-save the checkpoint with T5X or convert it through Hugging Face.')
  return node


def _read_tensorstore(spec: dict, folder: str, where: str, path: tuple) -> np.ndarray:
  spec = dict(spec)
  kvstore = spec['kvstore']
  rel = kvstore.get('path', '') if isinstance(kvstore, dict) else kvstore
  spec['kvstore'] = kvstore_spec(folder, rel)
  try:
    # T5X wrote no .zarray files: the spec's inline metadata is all there is.
    return ts.open(spec, open=True, read=True, assume_metadata=True).result().read().result()
  except Exception as e:  # tensorstore reports every failure as ValueError/RuntimeError.
    raise LegacyCheckpointError(
        f'{where}: array {"/".join(path)} at {spec["kvstore"]} is unreadable: {e}') from None


def kvstore_spec(folder: str, rel: str) -> dict:
  """TensorStore kvstore for an array path written relative to the checkpoint folder.

  T5X wrote its own `gfile` driver name; local folders map to `file`, buckets to `gcs`.
  """
  if fs_utils.is_remote(rel) or rel.startswith('/'):
    full = rel
  elif fs_utils.is_remote(folder):
    full = posixpath.join(folder, rel)
  else:
    full = os.path.join(folder, rel)
  if full.startswith('gs://'):
    bucket, _, obj = full[len('gs://'):].partition('/')
    return {'driver': 'gcs', 'bucket': bucket, 'path': obj}
  return {'driver': 'file', 'path': full}


def _isdir(path: str) -> bool:
  if fs_utils.is_remote(path):
    import tensorflow as tf
    return tf.io.gfile.isdir(path)
  return os.path.isdir(path)


def _exists(path: str) -> bool:
  if fs_utils.is_remote(path):
    import tensorflow as tf
    return tf.io.gfile.exists(path)
  return os.path.isfile(path)


def _open(path: str):
  if fs_utils.is_remote(path):
    import tensorflow as tf
    return tf.io.gfile.GFile(path, 'rb')
  return open(path, 'rb')

"""`t5x import-hf`, `t5x export-hf`, `t5x import-t5x`: read one format, write another.

A MODEL_DIR written here holds `checkpoint_0/` (orbax, T5X names), `model.gin` (the
architecture as `network.T5Config` bindings) and `spiece.model` when a vocabulary came
with the source. Inputs are validated completely before anything is written, and the
folder appears only once it is whole.
"""
import dataclasses
import os
from typing import Optional

import numpy as np

from t5x import checkpoints
from t5x import fs_utils
from t5x import gin_utils
from t5x import loader
from t5x import model_config
from t5x import scan_layout
from t5x.conversion import hf_convert
from t5x.conversion import hf_export
from t5x.conversion import legacy_t5x
from t5x.examples.t5.network import T5Config


def write_model_dir(model_dir: str, params: dict, cfg: T5Config,
                    vocab_path: Optional[str] = None) -> str:
  """Writes a MODEL_DIR that training and inference can start from; returns its path.

  `params` may come in either layout; they are written in `cfg`'s (scanned when
  `cfg.scan_layers`), so that the checkpoint matches its model.gin.
  """
  params = scan_layout.params_for_config(params, cfg)
  params = loader.cast_params(params, np.dtype(cfg.param_dtype))
  with fs_utils.staging_dir(model_dir) as tmp:
    checkpoints.save(tmp, 0, params)
    if vocab_path:
      fs_utils.copy_file(vocab_path, os.path.join(tmp, loader.VOCAB_FILE))
    final_vocab = (os.path.join(os.path.abspath(model_dir), loader.VOCAB_FILE) if vocab_path
                   else None)
    fs_utils.write_atomic(os.path.join(tmp, loader.MODEL_GIN),
                          gin_utils.config_to_gin(cfg, final_vocab))
  return model_dir


def import_hf(hf_dir: str, model_dir: str, scan_layers: bool = False) -> str:
  """Hugging Face T5 folder -> MODEL_DIR (layers stacked when `scan_layers`)."""
  cfg, _ = hf_convert.read_hf_config(hf_dir)
  params = hf_convert.params_from_state_dict(
      hf_convert.read_hf_weights(hf_dir), cfg, hf_dir)
  vocab = os.path.join(hf_dir, loader.VOCAB_FILE)
  cfg = dataclasses.replace(cfg, scan_layers=scan_layers)
  return write_model_dir(model_dir, params, cfg, vocab if os.path.isfile(vocab) else None)


def import_t5x(checkpoint: str, model_dir: str, scan_layers: Optional[bool] = None) -> str:
  """Legacy T5X checkpoint -> MODEL_DIR (architecture inferred from the shapes).

  A scanned T5X checkpoint (scalable_t5: `encoder/layers/...` stacked on axis 1) is
  recognised; `scan_layers` chooses the layout written (None: the checkpoint's own).
  """
  params = legacy_t5x.read_params(checkpoint)
  cfg = model_config.infer_config(params)
  loader.check_shapes(params, cfg, legacy_t5x.checkpoint_file(checkpoint))
  if scan_layers is not None:
    cfg = dataclasses.replace(cfg, scan_layers=scan_layers)
  return write_model_dir(model_dir, params, cfg)


def merge_lora(model_dir: str, out_dir: str) -> str:
  """LoRA MODEL_DIR (or one checkpoint of it) -> plain MODEL_DIR with W + (alpha/r) * A @ B.

  `loader.load` does the folding (rank and targets from the shapes, `lora_alpha` from the
  folder's model.gin or config.gin); the result has lora_rank = 0 in its model.gin.
  """
  if not (checkpoints.is_checkpoint(model_dir) or checkpoints.latest(model_dir)):
    raise FileNotFoundError(f'{model_dir}: no checkpoint_<step>/ folder; merge-lora takes a '
                            'MODEL_DIR written by `t5x train` or one checkpoint of it.')
  model = loader.load(model_dir)
  if not model.merged_lora_rank:
    raise ValueError(f'{model.source} holds no LoRA adapters (no lora_a/lora_b parameters); '
                     'it is a plain model already.')
  return write_model_dir(out_dir, model.params, model.config, model.vocabulary_path)


def export_hf(model_dir: str, out_dir: str, verify: bool = True, force: bool = False) -> dict:
  """MODEL_DIR (or one checkpoint of it) -> a verified folder transformers loads."""
  return hf_export.export(model_dir, out_dir, verify=verify, force=force)

"""`t5x export-hf`: a Hugging Face folder that proves itself before it appears.

The folder is written to a temporary sibling and checked there with the installed
transformers: teacher-forced logits on sample inputs, both sides in float64, within
LOGITS_RTOL64 of the largest logit (see there why float64), and greedy decodes of sample
prompts in float32 (token-identical to this project's decoder). Only then is it renamed
into place, with generation_config.json (the recipe's decoding settings), the tokenizer
files and a README.md model card.
"""
import contextlib
import dataclasses
import functools
import json
import os
import shutil
from typing import Any, Optional

import jax
import numpy as np

from t5x import checkpoints
from t5x import decoding
from t5x import fs_utils
from t5x import gin_utils
from t5x import loader
from t5x import model_config
from t5x.conversion import hf_convert
from t5x.examples.t5.network import Transformer

# The logits check runs both sides in float64 (JAX's x64 mode, torch's double) and
# allows LOGITS_RTOL64 times the largest |logit| (at least 1). In float32 no fixed bound
# separates a conversion bug from round-off: a T5 1.1 with N(0, 0.5) weights (logits near
# 7) differs from transformers' float32 by 1.2e-3, and each float32 side differs from
# float64 by 5e-4 to 1.2e-3; real XXL models carry activations in the thousands. In
# float64 a correct conversion agrees to round-off (about 1e-13 of the logits here),
# while one tensor scaled by 1.01 moves the logits by about 1e-3 of their size: 1e-8
# leaves five orders of magnitude on each side.
LOGITS_RTOL64 = 1e-8
# Greedy decodes of these must match transformers'; plain text any vocabulary covers
# (the first is also the model card's usage example).
SAMPLE_PROMPTS = ('Write a sentence about the sea.', 'Answer: what falls from clouds?',
                  'Translate to German: the house is small.', 'summarize: a b c')


class VerificationError(RuntimeError):
  """The export does not reproduce the checkpoint; the message says how it differs."""


def export(model_dir: str, out_dir: str, *, verify: bool = True, force: bool = False) -> dict:
  """Writes and (by default) verifies the export; returns the verification figures."""
  if force and os.path.isdir(out_dir):
    shutil.rmtree(out_dir)
  model = loader.load(model_dir)
  run = _run_info(model)
  report = {}
  with fs_utils.staging_dir(out_dir) as tmp:
    hf_convert.write_hf_files(tmp, model.params, model.config, model.vocabulary_path)
    _write_generation_config(tmp, run.get('decode_options'))
    if verify:
      report = verify_export(model, tmp)
    _write_model_card(tmp, os.path.basename(os.path.normpath(out_dir)), model, run, report)
  return report


def verify_export(model: loader.Loaded, folder: str, seed: int = 0) -> dict:
  """Loads `folder` with transformers and compares logits (both sides in float64) and
  greedy decodes (float32, as users run them); see LOGITS_RTOL64."""
  import transformers
  hf = transformers.T5ForConditionalGeneration.from_pretrained(folder).eval()
  rng = np.random.RandomState(seed)
  vocab = model.config.vocab_size
  enc = rng.randint(2, vocab, (4, 24)).astype(np.int32)
  enc[1, 15:] = 0
  dec = np.concatenate([np.zeros((4, 1), np.int32), rng.randint(2, vocab, (4, 11))], 1)
  diff, scale, diff32 = _logits_differences(model, hf, enc, dec)
  if not diff <= LOGITS_RTOL64 * scale:
    raise VerificationError(
        f'logits of the export differ by {diff:.2e} in float64, more than {LOGITS_RTOL64:g} x '
        f'{scale:.3g} (the largest logit): a tensor was converted wrongly')
  prompts = _sample_prompts(model, enc)
  _check_greedy_decodes(model, hf, prompts)
  return {'logits_max_abs_diff': diff, 'logits_tolerance': LOGITS_RTOL64 * scale,
          'logits_float32_max_abs_diff': diff32, 'greedy_prompts': int(len(prompts)),
          'greedy_identical': True}


def _logits_differences(model: loader.Loaded, hf, enc: np.ndarray, dec: np.ndarray):
  """(max |ours - theirs| in float64, max(1, max |logit|), max |ours in float32 - theirs
  in float32|) of the teacher-forced logits of the export `hf` (left in float32)."""
  import torch
  inputs = dict(input_ids=torch.tensor(enc, dtype=torch.long),
                attention_mask=torch.tensor(enc != 0, dtype=torch.long),
                decoder_input_ids=torch.tensor(dec, dtype=torch.long))
  with torch.no_grad():
    theirs32 = hf(**inputs).logits.numpy()
    with _norms_in_input_dtype():
      theirs = hf.double()(**inputs).logits.numpy()
    hf.float()
  cfg64 = dataclasses.replace(model.config, dtype='float64', param_dtype='float64')
  with jax.enable_x64(True):
    params64 = jax.tree_util.tree_map(lambda x: np.asarray(x, np.float64), model.params)
    ours = np.asarray(Transformer(cfg64).apply({'params': params64}, enc, dec,
                                               enable_dropout=False))
  ours32 = np.asarray(_logits32(Transformer(model.config))({'params': model.params}, enc, dec))
  return (float(np.abs(ours - theirs).max()), max(1.0, float(np.abs(theirs).max())),
          float(np.abs(ours32 - theirs32).max()))


@contextlib.contextmanager
def _norms_in_input_dtype():
  """transformers' T5LayerNorm computes its variance in float32 whatever the model's
  dtype, a float32 step inside a double model (its doubles then differ from float64 by
  ~1e-3 on the N(0, 0.5) model). While this is active it computes the same function in
  the input's dtype, so the double model is double throughout."""
  import torch
  from transformers.models.t5 import modeling_t5
  original = modeling_t5.T5LayerNorm.forward

  def forward(self, hidden_states):
    variance = hidden_states.pow(2).mean(-1, keepdim=True)
    return self.weight * (hidden_states * torch.rsqrt(variance + self.variance_epsilon))

  modeling_t5.T5LayerNorm.forward = forward
  try:
    yield
  finally:
    modeling_t5.T5LayerNorm.forward = original


@functools.lru_cache(maxsize=8)
def _logits32(module: Transformer):
  return jax.jit(functools.partial(module.apply, enable_dropout=False))


def _check_greedy_decodes(model: loader.Loaded, hf, prompts: np.ndarray) -> None:
  """Greedy decodes of `prompts` (16 tokens, float32 on both sides) must be identical."""
  import torch
  length = 16
  ours, _ = decoding.generate(Transformer(model.config), model.params, prompts,
                              decoding.DecodeOptions(max_decode_length=length))
  ours = ours[:, 0]
  with torch.no_grad():
    generated = hf.generate(input_ids=torch.tensor(prompts, dtype=torch.long),
                            attention_mask=torch.tensor(prompts != 0, dtype=torch.long),
                            do_sample=False, num_beams=1, max_new_tokens=length,
                            min_new_tokens=0).numpy()[:, 1:]  # drop the start token 0
  generated = np.pad(generated, ((0, 0), (0, length - generated.shape[1])))
  if not np.array_equal(_after_eos_zeroed(generated), _after_eos_zeroed(ours)):
    row = int(np.argmax(np.any(_after_eos_zeroed(generated) != _after_eos_zeroed(ours), 1)))
    raise VerificationError(f'greedy decodes differ on sample prompt {row}: ours '
                            f'{ours[row].tolist()}, transformers {generated[row].tolist()}')


def _sample_prompts(model: loader.Loaded, fallback: np.ndarray) -> np.ndarray:
  if model.vocabulary_path:
    return model.encode_texts(SAMPLE_PROMPTS)
  return fallback


def _after_eos_zeroed(tokens: np.ndarray) -> np.ndarray:
  out = tokens.copy()
  for row in out:
    hits = np.flatnonzero(row == loader.EOS_ID)
    if hits.size:
      row[hits[0] + 1:] = 0
  return out


def _run_info(model: loader.Loaded) -> dict:
  """What the MODEL_DIR's config.gin says about the run (task, base model, decoding)."""
  folder = os.path.dirname(model.source) if model.source else ''
  gin_path = os.path.join(folder, 'config.gin')
  info: dict[str, Any] = {'step': checkpoints.step_of(model.source), 'folder': folder}
  if not os.path.isfile(gin_path):
    return info
  macros = gin_utils.gin_macros(gin_path)
  for key in ('MIXTURE_OR_TASK_NAME', 'INITIAL_CHECKPOINT_PATH', 'TASK_FEATURE_LENGTHS'):
    if key in macros:
      info[key] = macros[key]
  decode = gin_utils.gin_bindings(gin_path, 'DecodeOptions')
  if decode:
    info['decode_options'] = decode
  metrics = os.path.join(folder, 'metrics.jsonl')
  if os.path.isfile(metrics):
    with open(metrics) as f:
      evals = [r for r in map(json.loads, f) if r.get('split') == 'training_eval']
    if evals:
      info['final_eval'] = evals[-1]
  return info


def _write_generation_config(folder: str, decode: Optional[dict]) -> None:
  """generation_config.json: T5's special ids plus the recipe's decoding settings."""
  config = {'decoder_start_token_id': 0, 'pad_token_id': 0, 'eos_token_id': 1}
  decode = decode or {}
  kind = decode.get('decode', 'greedy')
  if 'max_decode_length' in decode:
    config['max_new_tokens'] = int(decode['max_decode_length'])
  if kind == 'sample':
    config.update(do_sample=True, temperature=float(decode.get('temperature', 1.0)),
                  top_k=int(decode.get('top_k', 0)), top_p=float(decode.get('top_p', 1.0)))
  elif kind == 'beam':
    config.update(num_beams=int(decode.get('num_decodes', 4)),
                  # HF divides by len**penalty, T5X by ((5+len)/6)**alpha: close, not equal.
                  length_penalty=float(decode.get('alpha', 0.6)))
  if decode.get('no_repeat_ngram_size'):
    config['no_repeat_ngram_size'] = int(decode['no_repeat_ngram_size'])
  fs_utils.write_atomic(os.path.join(folder, 'generation_config.json'),
                        json.dumps(config, indent=2))


def _write_model_card(folder: str, name: str, model: loader.Loaded, run: dict,
                      report: dict) -> None:
  cfg = model.config
  lines = [
      '---', 'library_name: transformers', 'pipeline_tag: text2text-generation', '---', '',
      f'# {name}', '',
      f'A T5 encoder-decoder ({model_config.count_params(cfg):,} parameters; '
      f'{"T5 1.0, tied embedding" if cfg.logits_via_embedding else "T5 1.1, untied head"}, '
      f'{cfg.num_encoder_layers}+{cfg.num_decoder_layers} layers, d_model {cfg.emb_dim}) '
      'trained with t5x-instruct and exported with `t5x export-hf`.', '',
      f'- Base model: {run.get("INITIAL_CHECKPOINT_PATH") or "random initialisation"}',
      f'- Task or mixture: {run.get("MIXTURE_OR_TASK_NAME", "unknown")}',
      f'- Steps: {run.get("step", "unknown")}',
  ]
  if model.merged_lora_rank:
    lines.append(f'- Fine-tuned with LoRA (rank {model.merged_lora_rank}); the adapters are '
                 'merged into these weights.')
  final = run.get('final_eval')
  if final:
    lines.append(f'- Final validation (teacher forcing, step {final["step"]}): loss per token '
                 f'{final.get("loss_per_token", float("nan")):.4f}, token accuracy '
                 f'{final.get("accuracy", float("nan")):.4f}')
  if report:
    lines.append(f'- Verified at export: logits max |diff| {report["logits_max_abs_diff"]:.2e} '
                 'against the JAX checkpoint, both in float64 (float32: '
                 f'{report["logits_float32_max_abs_diff"]:.2e}); greedy decodes of '
                 f'{report["greedy_prompts"]} sample prompts token-identical.')
  lines += ['', '```python', 'from transformers import AutoTokenizer, T5ForConditionalGeneration',
            f'tokenizer = AutoTokenizer.from_pretrained("{name}")',
            f'model = T5ForConditionalGeneration.from_pretrained("{name}")',
            f'inputs = tokenizer([{SAMPLE_PROMPTS[0]!r}], return_tensors="pt")',
            'print(tokenizer.batch_decode(model.generate(**inputs), skip_special_tokens=True))',
            '```', '']
  fs_utils.write_atomic(os.path.join(folder, 'README.md'), '\n'.join(lines))


"""Train-step throughput and model FLOPs utilisation (MFU) on synthetic batches.

Runs the project's own partitioned train step (t5x.trainer.Trainer, Adafactor as
in the fine-tuning configs) on every local device, with random full-length batches (no
padding, so every position is a real token), and reports per step: time, tokens/s,
model TFLOP/s per device, MFU against the accelerator's dense bf16 peak, and the peak
device memory XLA's allocator saw.

Model FLOPs (counted, not measured): each parameter costs 2 FLOPs per token in the
forward pass and 4 in the backward, so 6 * N_stack * tokens_stack per stack; encoder
parameters see the encoder tokens, decoder parameters (logits projection included) the
decoder tokens; the embedding lookup costs nothing. Attention adds 6 * 2 * q * k * h * d
per layer and sequence for the two attention matmuls (scores and weighted values),
counted in full for causal self-attention, as is customary (PaLM's MFU). Remat's
recomputation is not counted: MFU counts the model's work, not the hardware's.

Run on an accelerator:
  python benchmarks/train_step.py --size xl --batch 32            # T5 1.1 XL, 512/128 tokens
  python benchmarks/train_step.py --size xxl --batch 8 --scan_layers --remat full \
      --param_dtype bfloat16
Smoke test on a CPU (tiny model, two timed steps): python benchmarks/train_step.py --smoke
Peak: --peak_tflops (default 989, the H100/H200 SXM dense bf16 figure).
"""
import argparse
import dataclasses
import json
import os
import sys
import time

import jax
import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(__file__), '..'))
from t5x import fs_utils  # noqa: E402
from t5x import gin_utils
from t5x import model_config
from t5x import models
from t5x import optimizers
from t5x import partitioning
from t5x import trainer
from t5x.examples.t5.network import T5Config, Transformer  # noqa: E402

GIN_MODELS = os.path.join(os.path.dirname(__file__), '..', 'gin', 'models', 't5_1_1')
TINY = dict(vocab_size=256, emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128,
            num_encoder_layers=2, num_decoder_layers=2, mlp_activations=('gelu', 'linear'),
            logits_via_embedding=False)


def model_flops_per_step(cfg: T5Config, batch: int, inputs_length: int,
                         targets_length: int) -> float:
  """Training FLOPs of one step (forward + backward) by the count in the module docstring."""
  shapes = model_config.param_shapes(dataclasses.replace(cfg, scan_layers=False))
  size = lambda prefix: sum(int(np.prod(s)) for k, s in shapes.items() if k.startswith(prefix))
  enc_tokens, dec_tokens = batch * inputs_length, batch * targets_length
  dense = 6 * (size('encoder/') * enc_tokens + size('decoder/') * dec_tokens)
  if cfg.logits_via_embedding:  # T5 1.0: the tied embedding doubles as the logits kernel
    dense += 6 * cfg.vocab_size * cfg.emb_dim * dec_tokens
  hd = cfg.num_heads * cfg.head_dim
  attention = 6 * 2 * hd * batch * (
      cfg.num_encoder_layers * inputs_length ** 2
      + cfg.num_decoder_layers * (targets_length ** 2 + targets_length * inputs_length))
  return float(dense + attention)


def synthetic_batch(rng: np.random.RandomState, batch: int, inputs_length: int,
                    targets_length: int, vocab: int) -> dict:
  """int32 arrays [batch, length] of random tokens with no padding."""
  enc = rng.randint(2, vocab, (batch, inputs_length)).astype(np.int32)
  tgt = rng.randint(2, vocab, (batch, targets_length)).astype(np.int32)
  dec = np.concatenate([np.zeros((batch, 1), np.int32), tgt[:, :-1]], axis=1)
  return dict(encoder_input_tokens=enc, decoder_input_tokens=dec, decoder_target_tokens=tgt,
              decoder_loss_weights=np.ones_like(tgt))


def build_config(args) -> T5Config:
  if args.smoke:
    fields = dict(TINY)
  else:
    fields = gin_utils.config_from_gin(os.path.join(GIN_MODELS, f'{args.size}.gin'))
    fields = {k: v for k, v in fields.items() if k in {f.name for f in dataclasses.fields(T5Config)}}
  fields.update(dtype=args.dtype, param_dtype=args.param_dtype, dropout_rate=0.0,
                scan_layers=args.scan_layers, remat_policy=args.remat)
  return T5Config(**fields)


def run(args) -> dict:
  cfg = build_config(args)
  model = models.EncoderDecoderModel(Transformer(cfg), optimizer_def=optimizers.adafactor(
      decay_rate=0.8, clipping_threshold=1.0, factored=True))
  part = partitioning.PjitPartitioner(args.num_partitions)
  part.check_batch_size(args.batch)
  t = trainer.Trainer(model, part, num_microbatches=args.microbatches)
  state = t.init_state(jax.random.PRNGKey(0))
  rng, key = np.random.RandomState(0), jax.random.PRNGKey(1)
  batches = [synthetic_batch(rng, args.batch, args.inputs_length, args.targets_length,
                             cfg.vocab_size) for _ in range(2)]
  compile_start = time.perf_counter()
  for i in range(args.warmup):  # the first call compiles
    state, metrics = t.train_step(state, batches[i % 2], key)
  jax.block_until_ready(metrics)
  compile_s = time.perf_counter() - compile_start
  times = []
  for i in range(args.steps):
    start = time.perf_counter()
    state, metrics = t.train_step(state, batches[i % 2], key)
    jax.block_until_ready(metrics)
    times.append(time.perf_counter() - start)
  step_s = float(np.median(times))
  devices = jax.device_count()
  flops = model_flops_per_step(cfg, args.batch, args.inputs_length, args.targets_length)
  tokens = args.batch * (args.inputs_length + args.targets_length)
  stats = jax.local_devices()[0].memory_stats() or {}
  return {
      'device': jax.devices()[0].device_kind, 'devices': devices, 'size': 'tiny' if args.smoke
      else args.size, 'parameters': model_config.count_params(cfg), 'batch': args.batch,
      'inputs_length': args.inputs_length, 'targets_length': args.targets_length,
      'scan_layers': cfg.scan_layers, 'remat': cfg.remat_policy, 'param_dtype': cfg.param_dtype,
      'activation_dtype': cfg.dtype, 'microbatches': args.microbatches,
      'warmup_and_compile_s': compile_s, 'step_s_median': step_s,
      'tokens_per_s': tokens / step_s, 'model_flops_per_step': flops,
      'model_tflops_per_device': flops / step_s / devices / 1e12,
      'mfu': flops / step_s / (args.peak_tflops * 1e12 * devices),
      'peak_tflops': args.peak_tflops, 'loss': float(metrics['loss']),
      'peak_memory_gib': stats['peak_bytes_in_use'] / 2**30 if 'peak_bytes_in_use' in stats
      else None}


def main(argv=None) -> dict:
  p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  p.add_argument('--size', default='xl', choices=('small', 'base', 'large', 'xl', 'xxl'))
  p.add_argument('--batch', type=int, default=32)
  p.add_argument('--inputs_length', type=int, default=512)
  p.add_argument('--targets_length', type=int, default=128)
  p.add_argument('--num_partitions', type=int, default=1)
  p.add_argument('--microbatches', type=int, default=None)
  p.add_argument('--scan_layers', action='store_true')
  p.add_argument('--remat', default='none', choices=('none', 'minimal', 'full'))
  p.add_argument('--dtype', default='bfloat16', help='activation dtype')
  p.add_argument('--param_dtype', default='float32')
  p.add_argument('--warmup', type=int, default=2)
  p.add_argument('--steps', type=int, default=10)
  p.add_argument('--peak_tflops', type=float, default=989.0)
  p.add_argument('--json', default=None, help='also write the result here')
  p.add_argument('--smoke', action='store_true', help='tiny model, short lengths (CPU test)')
  args = p.parse_args(argv)
  if args.smoke:
    args.batch, args.inputs_length, args.targets_length, args.steps = 8, 32, 16, 2
    args.dtype = 'float32'
  result = run(args)
  for key, value in result.items():
    print(f'{key:>26}: {value:.4g}' if isinstance(value, float) else f'{key:>26}: {value}')
  if args.json:
    fs_utils.write_atomic(args.json, json.dumps(result, indent=2))
  return result


if __name__ == '__main__':
  main()

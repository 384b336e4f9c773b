"""`t5x plan`: the per-device memory of a gin config's train step, on a simulated mesh.

    t5x plan --gin_file=gin/copoet_11b.gin --mesh 4x8 --device_memory_gib 16 --json plan.json

Nothing the size of the model is allocated. The config is parsed exactly as `t5x train`
parses it, and the objects `train_script.train` would receive (model, partitioner,
trainer class, train DatasetConfig) build the trainer's abstract state. Two sources of
bytes per device, reported side by side:

- from the shardings: each leaf of `Trainer.abstract_state` costs one shard,
  prod(sharding.shard_shape(shape)) * itemsize; gradients are shaped like the trained
  parameters (with LoRA: the adapters only), plus a second such tree, the accumulator,
  when num_microbatches > 1; activations by the formula of `activation_bytes`.
- from the compiler: XLA's memory analysis of the compiled train step (the same jitted
  function `Trainer.train_step` runs, lowered with ShapeDtypeStructs):
  peak = arguments + outputs - aliased (donated state) + temporaries + generated code,
  plus the state leaves the step never reads (jit drops them; they still take memory).

A compiled total is "computed"; with `--no-compile` the total is "estimated" as the
sharding-derived bytes plus the activation formula. The bytes are what XLA's CPU backend
plans for the simulated devices; TPU and GPU backends fuse, lay out and schedule
differently (e.g. XLA:CPU keeps float32 copies of bfloat16-rounded weights), so they are
a plan, not a measurement; docs/memory_plan.md lists the known differences.

JAX fixes the number of CPU devices when its backend starts, so `t5x plan` (`launch`)
runs the planning in a fresh `python -m t5x.memory.plan` whose environment asks for
DATA*MODEL devices (XLA_FLAGS=--xla_force_host_platform_device_count, JAX_PLATFORMS=cpu).
"""
import argparse
import datetime
import json
import math
import os
import platform
import re
import shlex
import subprocess
import sys
import time
from typing import Optional, Sequence

import gin
import jax
import jax.numpy as jnp

from t5x import fs_utils
from t5x import gin_utils
from t5x import log_noise
from t5x import train as train_script
from t5x import trainer as trainer_lib
from t5x.lora import adapters as lora
from t5x import model_config

GIB = 2 ** 30
_COUNT_FLAG = '--xla_force_host_platform_device_count'
# The run configs mark MODEL_DIR required; planning writes nothing there.
UNUSED_MODEL_DIR = "MODEL_DIR = '/nonexistent/t5x_plan'"
# Errors whose message says what to fix: one line on stderr, exit code 2, no traceback.
_USER_ERRORS = (ValueError, KeyError, FileNotFoundError, SyntaxError, RuntimeError)


# ----------------------------------------------------------------------------- flags

def parse_mesh(text: str) -> tuple[int, int]:
  """'4x8' -> (data 4, model 8)."""
  match = re.fullmatch(r'\s*(\d+)\s*[xX]\s*(\d+)\s*', text)
  if not match or 0 in (int(match[1]), int(match[2])):
    raise argparse.ArgumentTypeError(f'--mesh {text!r}: write DATAxMODEL with positive sizes, '
                                     'e.g. --mesh 4x8 (data 4 x model 8 = 32 devices)')
  return int(match[1]), int(match[2])


def parse_args(argv: Sequence[str]) -> tuple[list, list, list, argparse.Namespace]:
  """(gin files, gin bindings, gin search paths, plan options) of `t5x plan`'s flags."""
  files, bindings, paths, rest = gin_utils.split_flags(argv)
  parser = argparse.ArgumentParser(
      prog='t5x plan', description='Per-device memory of the train step of a gin config '
      '(parameters, optimizer state, gradients, activations) on a simulated mesh.')
  parser.add_argument('--mesh', type=parse_mesh, default=None,
                      help='DATAxMODEL, e.g. 4x8; overrides '
                      'partitioning.PjitPartitioner.num_partitions (default: 1 x that value)')
  parser.add_argument('--device_memory_gib', type=float, default=None,
                      help='memory of one device in GiB, for the fits / does not fit verdict')
  parser.add_argument('--compile', action=argparse.BooleanOptionalAction, default=True,
                      help='compile the step for XLA\'s memory analysis (--no-compile: '
                      'shardings and the activation estimate only; fast for 3B/11B)')
  parser.add_argument('--batch_size', type=int, default=None,
                      help='override train/utils.DatasetConfig.batch_size (BATCH_SIZE)')
  parser.add_argument('--json', dest='json_path', default=None, help='also write the report here')
  parser.add_argument('--mode', choices=('train', 'infer'), default='train',
                      help="train: the train step (default); infer: the decode program of the "
                      "config's model (see t5x/memory/decode_plan.py)")
  infer = parser.add_argument_group('--mode infer')
  infer.add_argument('--decode', choices=('greedy', 'beam', 'sample'), default='greedy')
  infer.add_argument('--num_decodes', type=int, default=1,
                     help='beams or samples per input (CoPoet: 5 samples)')
  infer.add_argument('--input_length', type=int, default=None,
                     help="encoder length (default: TASK_FEATURE_LENGTHS['inputs'])")
  infer.add_argument('--decode_length', type=int, default=None,
                     help="max_decode_length (default: TASK_FEATURE_LENGTHS['targets'])")
  infer.add_argument('--param_dtype', default='bfloat16', choices=('bfloat16', 'float32'),
                     help="parameters while decoding (T5X's runs/infer.gin restores in "
                     'bfloat16; the default)')
  opts = parser.parse_args(rest)
  if not files:
    raise ValueError('no --gin_file given; e.g. t5x plan --gin_file=gin/quickstart.gin --mesh 2x2')
  return files, bindings, paths, opts


def overrides(opts: argparse.Namespace) -> list[str]:
  """Gin bindings that put the plan's flags into the config (later bindings win)."""
  out = []
  if opts.mesh:
    out.append(f'partitioning.PjitPartitioner.num_partitions = {opts.mesh[1]}')
  if opts.batch_size is not None:
    out.append(f'train/utils.DatasetConfig.batch_size = {opts.batch_size}')
  return out


# ----------------------------------------------------------------------------- parent

def launch(argv: Sequence[str]) -> int:
  """`t5x plan`: checks the flags here, plans in a child process; returns its exit code."""
  _, _, _, opts = parse_args(argv)
  env = planning_env(os.environ, opts.mesh[0] * opts.mesh[1] if opts.mesh else None)
  child = 't5x.memory.decode_plan' if opts.mode == 'infer' else 't5x.memory.plan'
  return subprocess.call([sys.executable, '-m', child, *argv], env=env)


def planning_env(environ: dict, device_count: Optional[int]) -> dict:
  """`environ` for a child whose JAX sees `device_count` CPU devices (None: let the child
  set the count from the config's num_partitions before JAX starts its backend)."""
  env = dict(environ, JAX_PLATFORMS='cpu', CUDA_VISIBLE_DEVICES='')
  env.setdefault('TF_CPP_MIN_LOG_LEVEL', '3')
  flags = [f for f in env.get('XLA_FLAGS', '').split() if not f.startswith(_COUNT_FLAG)]
  if device_count:
    flags.append(f'{_COUNT_FLAG}={device_count}')
  env['XLA_FLAGS'] = ' '.join(flags)
  return env


# ----------------------------------------------------------------------------- child

def main(argv: Optional[Sequence[str]] = None, plan_fn=None, format_fn=None) -> int:
  """The child: plan, print the table, write the JSON; exit code 2 on a config error.
  `plan_fn` and `format_fn` (default: the train step's) make and print the report."""
  argv = list(sys.argv[1:] if argv is None else argv)
  log_noise.quiet_start()  # TensorFlow's import (the gin files' tasks), minus its noise
  try:
    files, bindings, paths, opts = parse_args(argv)
    report = (plan_fn or plan)(files, bindings, paths, opts)
  except _USER_ERRORS as e:
    print(f't5x plan: error: {e}', file=sys.stderr)
    return 2
  report['command'] = shlex.join(['t5x', 'plan', *argv])
  print((format_fn or format_report)(report), flush=True)
  if opts.json_path:
    write_json(report, opts.json_path)
  return 0


def plan(files, bindings, paths, opts: argparse.Namespace) -> dict:
  """The report (a JSON-able dict) for one config and mesh; see the module docstring."""
  gin_utils.parse(files, [UNUSED_MODEL_DIR, *bindings, *overrides(opts)], paths)
  data, model = opts.mesh or (1, configured_num_partitions())
  simulate_devices(data * model)
  trainer, dataset_cfg = build_trainer()
  part = trainer.partitioner
  check_batch(part, dataset_cfg.batch_size, trainer.num_microbatches)
  batch = abstract_batch(dataset_cfg, part)
  report = {
      'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
      'machine': machine_description(),
      'jax_version': jax.__version__,
      'gin_files': list(files),
      'gin_bindings': list(bindings),
      'model': model_summary(trainer.model.config),
      'mesh': {'data': part.mesh.shape['data'], 'model': part.mesh.shape['model'],
               'devices': part.mesh.size},
      'batch': _batch_summary(dataset_cfg, trainer.num_microbatches, part.data_size, batch),
      'per_device_bytes': state_bytes(trainer),
  }
  report['per_device_bytes']['batch'] = tree_shard_bytes(batch)
  rows = report['batch']['rows_per_device_per_microbatch']
  report['per_device_bytes']['activations_estimate'] = activation_bytes(
      trainer.model.config, part, rows, dataset_cfg.task_feature_lengths)
  report['compiled'] = compile_step(trainer, batch) if opts.compile else None
  if report['compiled']:
    _add_unused_arguments(report)
  report.update(verdict(report, opts.device_memory_gib))
  return report


def configured_num_partitions() -> int:
  try:
    return int(gin.query_parameter('partitioning.PjitPartitioner.num_partitions'))
  except ValueError:  # not bound: the partitioner's default
    return 1


def simulate_devices(count: int) -> None:
  """Makes JAX's CPU backend hold `count` devices, or says why it cannot."""
  try:
    jax.config.update('jax_platforms', 'cpu')
    jax.config.update('jax_num_cpu_devices', count)
  except RuntimeError:
    pass  # the backend already started (e.g. a gin-imported module used JAX); check below
  if jax.device_count() != count:
    raise RuntimeError(
        f'the planner needs {count} simulated devices but JAX has {jax.device_count()}; run it '
        f'as `t5x plan`, or set XLA_FLAGS={_COUNT_FLAG}={count} JAX_PLATFORMS=cpu before '
        'starting Python.')


def build_trainer():
  """(Trainer, train DatasetConfig) exactly as the parsed `train_script.train` gets them."""
  args = gin.get_bindings(train_script.train)  # references resolved: the configured objects
  missing = [k for k in ('model', 'partitioner', 'train_dataset_cfg') if k not in args]
  if missing:
    raise ValueError(f'the gin config binds no train_script.train.{missing[0]}; include '
                     'runs/finetune.gin (or runs/pretrain.gin) after the model file.')
  trainer_cls = args.get('trainer_cls', trainer_lib.Trainer)
  trainer = trainer_cls(model=args['model'], partitioner=args['partitioner'],
                        skip_nonfinite_updates=args.get('nan_policy') == 'skip')
  return trainer, args['train_dataset_cfg']


def check_batch(partitioner, batch_size: int, num_microbatches: int) -> None:
  """The partitioner's batch check, its error extended with the numbers that would work."""
  try:
    partitioner.check_batch_size(batch_size, num_microbatches)
  except ValueError as e:
    raise ValueError(f'{e} {_batch_hint(batch_size, partitioner.data_size)}') from None


def _batch_hint(batch_size: int, data: int) -> str:
  """Which num_microbatches (else which batch sizes) split `batch_size` over `data` shards."""
  counts = [m for m in range(1, batch_size + 1)
            if batch_size % m == 0 and (batch_size // m) % data == 0]
  if counts:
    return (f'With BATCH_SIZE={batch_size} these num_microbatches work: {counts} '
            '(--gin.trainer.Trainer.num_microbatches=N).')
  near = [b for b in (batch_size // data * data, (batch_size // data + 1) * data) if b > 0]
  return (f'No num_microbatches splits BATCH_SIZE={batch_size} over a data axis of {data}; '
          f'the nearest batch sizes that do: {" and ".join(map(str, near))} (--batch_size).')


def batch_lengths(feature_lengths: dict, pack: bool) -> dict[str, int]:
  """Feature name -> length of the train batch as seqio.EncDecFeatureConverter makes it:
  encoder features take the 'inputs' length, decoder features the 'targets' length;
  packing adds segment ids and positions."""
  enc, dec = feature_lengths['inputs'], feature_lengths['targets']
  lengths = {'encoder_input_tokens': enc, 'decoder_input_tokens': dec,
             'decoder_target_tokens': dec, 'decoder_loss_weights': dec}
  if pack:
    lengths.update(encoder_segment_ids=enc, encoder_positions=enc,
                   decoder_segment_ids=dec, decoder_positions=dec)
  return lengths


def abstract_batch(cfg, partitioner) -> dict[str, jax.ShapeDtypeStruct]:
  """int32 [batch_size, length] ShapeDtypeStructs, sharded over 'data' as in training."""
  sharding = partitioner.batch_sharding(2)
  return {k: jax.ShapeDtypeStruct((cfg.batch_size, n), jnp.int32, sharding=sharding)
          for k, n in batch_lengths(cfg.task_feature_lengths, cfg.pack).items()}


# ----------------------------------------------------------------------------- bytes

def shard_bytes(leaf) -> int:
  """Bytes one device holds of a ShapeDtypeStruct (or array) with a sharding."""
  shape = leaf.sharding.shard_shape(leaf.shape) if leaf.sharding is not None else leaf.shape
  return math.prod(shape) * jnp.dtype(leaf.dtype).itemsize


def tree_shard_bytes(tree) -> int:
  return sum(shard_bytes(leaf) for leaf in jax.tree_util.tree_leaves(tree))


def state_bytes(trainer) -> dict[str, int]:
  """Per-device bytes of the train state and the gradients its step forms.

  Gradients are shaped (and sharded) like the trained parameters, in their dtype; with
  num_microbatches > 1 the step also keeps the running sum of them (the accumulator).
  The optimizer state includes the int32 step counter.
  """
  state = trainer.abstract_state
  trained, _ = lora.split_trainable(state.params, trainer.model.config)
  gradients = tree_shard_bytes(trained)
  return {
      'parameters': tree_shard_bytes(state.params),
      'optimizer_state': tree_shard_bytes(state.opt_state) + shard_bytes(state.step),
      'gradients': gradients,
      'gradient_accumulator': gradients if trainer.num_microbatches > 1 else 0,
  }


def _split(partitioner, logical_axes: tuple) -> tuple[int, ...]:
  """How many ways each dim of an activation with these logical axes is split."""
  spec = partitioner.mesh_axes(logical_axes)
  ways = []
  for axes in tuple(spec) + (None,) * (len(logical_axes) - len(spec)):
    axes = () if axes is None else (axes,) if isinstance(axes, str) else tuple(axes)
    ways.append(math.prod(partitioner.mesh.shape[a] for a in axes))
  return tuple(ways)


def activation_bytes(cfg, partitioner, rows: int, feature_lengths: dict) -> int:
  """Estimated bytes per device of the activations one microbatch keeps for the backward
  pass (documented in docs/memory_plan.md; compare with the compiled temp bytes).

  Per example (row), with a = activation itemsize, f = 4 (float32), q = f if
  float32_attention_logits else a, k = 1 byte per dropout mask when dropout_rate > 0
  (else 0), n = len(mlp_activations), and e, H = heads*head_dim, h, m, v divided by the
  mesh axes the rules give them in activations:
    norm(L)       = L*e*(2a + k)                          sublayer input, normed output, mask
    attn(Lq, Lk)  = Lq*H*(q + a) + Lk*H*(q + a) + h*Lq*Lk*(f + a + k)
                    (query and heads' output; key and value; probabilities, cast, mask)
    mlp(L)        = L*m*(2n*a + k)                        pre- and post-activations, mask
    enc           = 2*norm(Le) + attn(Le, Le) + mlp(Le)
    dec           = 3*norm(Ld) + attn(Ld, Ld) + attn(Ld, Le) + mlp(Ld)
    stacks        = (2*Le + Ld)*e*a + h*(Le^2 + Ld^2)*f + Ld*Le*f  (embeddings, encoder
                    output, attention biases)
    logits        = 3*Ld*v*f                              logits, log-softmax, their gradient
  Layers: remat 'none' keeps Ne*enc + Nd*dec; 'full' keeps each layer's input (e*a per
  position) plus one layer recomputed, max(enc, dec); 'minimal' keeps the projections'
  outputs (saveable matmuls), Ne*Le*(3e + 3H + n*m)*a + Nd*(Ld*(5e + 4H + n*m) +
  2*Le*H)*a, plus one layer recomputed.
  Total = rows * (layers + stacks + logits).
  """
  le, ld = feature_lengths['inputs'], feature_lengths['targets']
  a, f = jnp.dtype(cfg.dtype).itemsize, 4
  q = f if cfg.float32_attention_logits else a
  k = 1 if cfg.dropout_rate > 0 else 0
  n = len(cfg.mlp_activations)
  e = cfg.emb_dim / _split(partitioner, ('batch', 'length', 'embed'))[2]
  heads = _split(partitioner, ('batch', 'length', 'heads', 'kv'))[2]
  h = math.ceil(cfg.num_heads / heads)
  hd = h * cfg.head_dim
  m = cfg.mlp_dim / _split(partitioner, ('batch', 'length', 'mlp'))[2]
  v = cfg.vocab_size / _split(partitioner, ('batch', 'length', 'vocab'))[2]

  norm = lambda L: L * e * (2 * a + k)
  attn = lambda lq, lk: lq * hd * (q + a) + lk * hd * (q + a) + h * lq * lk * (f + a + k)
  mlp = lambda L: L * m * (2 * n * a + k)
  enc = 2 * norm(le) + attn(le, le) + mlp(le)
  dec = 3 * norm(ld) + attn(ld, ld) + attn(ld, le) + mlp(ld)
  policy = getattr(cfg, 'remat_policy', 'none')
  ne, nd = cfg.num_encoder_layers, cfg.num_decoder_layers
  if policy == 'full':
    layers = (ne * le + nd * ld) * e * a + max(enc, dec)
  elif policy == 'minimal':
    saved_enc = le * (3 * e * a + 3 * hd * a + n * m * a)  # input, q/k/v, out, wi, wo
    saved_dec = ld * (5 * e * a + 4 * hd * a + n * m * a) + 2 * le * hd * a
    layers = ne * saved_enc + nd * saved_dec + max(enc, dec)
  else:
    layers = ne * enc + nd * dec
  stacks = (2 * le + ld) * e * a + h * (le * le + ld * ld) * f + ld * le * f
  logits = 3 * ld * v * f
  return int(rows * (layers + stacks + logits))


# ----------------------------------------------------------------------------- compiler

def compile_step(trainer, batch: dict) -> dict:
  """XLA's memory analysis of the compiled train step, per device, in bytes."""
  rng = jax.ShapeDtypeStruct((2,), jnp.uint32, sharding=trainer.partitioner.replicated)
  step = trainer.partitioned_train_step(batch)
  devices = trainer.partitioner.mesh.size
  print(f'compiling the train step for {devices} simulated devices (3B/11B: minutes)...',
        file=sys.stderr, flush=True)
  start = time.perf_counter()
  lowered = step.lower(trainer.abstract_state, batch, rng)
  lowered_at = time.perf_counter()
  stats = lowered.compile().memory_analysis()
  done = time.perf_counter()
  print(f'compiled in {done - start:.0f} s', file=sys.stderr, flush=True)
  if stats is None:
    raise RuntimeError('this JAX backend gives no memory analysis; plan with --no-compile')
  out = {
      'argument_bytes': stats.argument_size_in_bytes,
      'output_bytes': stats.output_size_in_bytes,
      'alias_bytes': stats.alias_size_in_bytes,
      'temp_bytes': stats.temp_size_in_bytes,
      'generated_code_bytes': stats.generated_code_size_in_bytes,
      'lower_seconds': round(lowered_at - start, 1),
      'compile_seconds': round(done - lowered_at, 1),
  }
  # Donated state buffers are reused for the new state: count them once.
  out['peak_bytes'] = (out['argument_bytes'] + out['output_bytes'] - out['alias_bytes']
                       + out['temp_bytes'] + out['generated_code_bytes'])
  return out


def _add_unused_arguments(report: dict) -> None:
  """jit drops arguments the step never reads (e.g. Adafactor's (1,)-shaped placeholders
  for unfactored parameters), so XLA does not count them; their buffers still live on
  the device through training, so the peak gets them back."""
  per, compiled = report['per_device_bytes'], report['compiled']
  inputs = per['parameters'] + per['optimizer_state'] + per['batch'] + 8  # + the rng key
  compiled['unused_argument_bytes'] = max(0, inputs - compiled['argument_bytes'])
  compiled['peak_bytes'] += compiled['unused_argument_bytes']


def verdict(report: dict, device_memory_gib: Optional[float]) -> dict:
  """The total per device, where it comes from, and whether it fits."""
  per = report['per_device_bytes']
  if report['compiled']:
    total, source = report['compiled']['peak_bytes'], 'computed'
  else:
    total, source = sum(per.values()), 'estimated'
  out = {'total_per_device_bytes': int(total), 'source': source,
         'device_memory_gib': device_memory_gib, 'fits': None, 'headroom_bytes': None}
  if device_memory_gib is not None:
    headroom = int(device_memory_gib * GIB) - int(total)
    out.update(fits=headroom >= 0, headroom_bytes=headroom)
  return out


# ----------------------------------------------------------------------------- output

def machine_description() -> str:
  return f'{platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, XLA CPU backend)'


def model_summary(cfg) -> dict:
  counts = model_config.parameter_counts(cfg)
  return {
      'total_parameters': counts['total'], 'trainable_parameters': counts['trainable'],
      'emb_dim': cfg.emb_dim, 'num_heads': cfg.num_heads, 'head_dim': cfg.head_dim,
      'mlp_dim': cfg.mlp_dim, 'num_encoder_layers': cfg.num_encoder_layers,
      'num_decoder_layers': cfg.num_decoder_layers, 'vocab_size': cfg.vocab_size,
      'dtype': str(cfg.dtype), 'param_dtype': str(cfg.param_dtype),
      'scan_layers': getattr(cfg, 'scan_layers', False),
      'remat_policy': getattr(cfg, 'remat_policy', 'none'),
      'lora_rank': getattr(cfg, 'lora_rank', 0),
  }


def _batch_summary(cfg, num_microbatches: int, data_size: int, batch: dict) -> dict:
  return {
      'batch_size': cfg.batch_size, 'num_microbatches': num_microbatches,
      'rows_per_device_per_microbatch': cfg.batch_size // num_microbatches // data_size,
      'task_feature_lengths': dict(cfg.task_feature_lengths), 'pack': cfg.pack,
      'features': sorted(batch),
  }


def format_count(n: int) -> str:
  """12_345 -> '12,345'; 2_851_598_336 -> '2.85B'."""
  for suffix, scale in (('B', 1e9), ('M', 1e6)):
    if n >= scale:
      return f'{n / scale:.3g}{suffix}'
  return f'{n:,}'


def format_size(n: float) -> str:
  """Bytes in a readable unit, right-aligned: '  12.34 GiB', ' 512.0 MiB'."""
  for unit, scale in (('GiB', GIB), ('MiB', 2 ** 20), ('KiB', 2 ** 10)):
    if abs(n) >= scale:
      return f'{n / scale:9.2f} {unit}'
  return f'{n:9.0f} B  '


def format_report(r: dict) -> str:
  """The report as a plain-text table of sizes per device."""
  return '\n'.join(_header_lines(r) + [''] + _byte_lines(r) + verdict_lines(r))


def _header_lines(r: dict) -> list[str]:
  m, b, mesh = r['model'], r['batch'], r['mesh']
  levers = [name for name, on in (('scan_layers', m['scan_layers']),
                                  (f"remat={m['remat_policy']}", m['remat_policy'] != 'none'),
                                  (f"lora_rank={m['lora_rank']}", m['lora_rank'])) if on]
  model = (f"{format_count(m['total_parameters'])} parameters ({format_count(m['trainable_parameters'])} "
           f"trained), {m['num_encoder_layers']}+{m['num_decoder_layers']} layers, emb "
           f"{m['emb_dim']}, params {m['param_dtype']}, activations {m['dtype']}")
  return [
      f"model      {model}" + (f"; {', '.join(levers)}" if levers else ''),
      f"mesh       data {mesh['data']} x model {mesh['model']} = {mesh['devices']} "
      'simulated devices',
      f"batch      {b['batch_size']} = {b['num_microbatches']} microbatch(es) x "
      f"{b['batch_size'] // b['num_microbatches']} rows ({b['rows_per_device_per_microbatch']} "
      f"per device), lengths {b['task_feature_lengths']}, pack={b['pack']}",
  ]


def _byte_lines(r: dict) -> list[str]:
  per, c = r['per_device_bytes'], r['compiled']
  rows = [('per device', None),
          ('parameters', per['parameters']), ('optimizer state', per['optimizer_state']),
          ('gradients', per['gradients']), ('gradient accumulator', per['gradient_accumulator']),
          ('batch', per['batch']), ('activations (estimate)', per['activations_estimate'])]
  if c:
    rows += [(f"compiled step (XLA, {c['compile_seconds']:.0f} s to compile):", None),
             ('  arguments', c['argument_bytes']), ('  outputs', c['output_bytes']),
             ('  aliased with arguments (donated)', c['alias_bytes']),
             ('  temporaries', c['temp_bytes']),
             ('  generated code', c['generated_code_bytes']),
             ('  state the step does not read', c['unused_argument_bytes'])]
  rows.append((f"total per device ({r['source']})", r['total_per_device_bytes']))
  return [label if n is None else f'{label:36s}{format_size(n)}' for label, n in rows]


def verdict_lines(r: dict) -> list[str]:
  if r['fits'] is None:
    return []
  gib, room = r['device_memory_gib'], r['headroom_bytes'] / GIB
  return [f'fits in {gib:g} GiB: headroom {room:.2f} GiB' if r['fits'] else
          f'does not fit in {gib:g} GiB: {-room:.2f} GiB over']


def write_json(report: dict, path: str) -> None:
  """Writes `report` to `path` through a temporary file, so no reader sees half of it."""
  os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
  fs_utils.write_atomic(path, json.dumps(report, indent=2) + '\n')


if __name__ == '__main__':
  sys.exit(main())

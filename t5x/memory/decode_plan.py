"""`t5x plan --mode infer`: the per-device memory of decoding a gin config's model.

    t5x plan --mode infer --gin_file=gin/copoet_11b.gin --mesh 1x8 --decode sample \
      --num_decodes 5 --batch_size 32 --device_memory_gib 16

The model is the one the config trains (`train_script.train.model`) or, for an inference
config that names one, `infer_script.infer.model`. Its parameters are planned in the
decode dtype (`--param_dtype`, bfloat16 by default as in T5X's runs/infer.gin), on the
`('data', 'model')` mesh of `--mesh` (else 1 x the config's num_partitions). As for the
train step, two sources of bytes per device, side by side:

- from the shardings (the rules `decoding` shards by):
  - parameters, by their logical axes;
  - the decoder's key/value cache, per layer 2 x [B, L, h, d] in the activation dtype,
    rows over 'data' and heads over 'model' (`decoding.CACHE_AXES`);
  - the cross-attention keys/values projected once per batch (`decoding._cross_kv`),
    per layer 2 x [B, h, l, d];
  - the input tokens.
  B = batch rows (padded to the data axis) x num_decodes, L = decode length, l = input
  length.
- from the compiler: XLA's memory analysis of the very program `decoding.generate`
  runs (`decoding._compiled`), lowered with ShapeDtypeStructs:
  peak = arguments + outputs + temporaries + generated code (nothing is donated).

XLA:CPU's plan for simulated devices, not a measurement on a TPU or GPU: see the caveats
in docs/memory_plan.md.
"""
import dataclasses
import datetime
import sys
import time
from typing import Optional, Sequence

import gin
import jax
import jax.numpy as jnp

from t5x import decoding
from t5x import gin_utils
from t5x import infer as infer_script
from t5x import model_config
from t5x import partitioning
from t5x import train as train_script
from t5x.examples.t5.network import Transformer
from t5x.memory import plan as train_plan

EOS_ID = 1


def plan(files, bindings, paths, opts) -> dict:
  """The report (a JSON-able dict) of one config, mesh and decode; see the docstring."""
  gin_utils.parse(files, [train_plan.UNUSED_MODEL_DIR, *bindings, *train_plan.overrides(opts)],
                  paths)
  data, model = opts.mesh or (1, train_plan.configured_num_partitions())
  train_plan.simulate_devices(data * model)
  cfg, lengths, part = configured_model()
  inputs = opts.input_length or lengths.get('inputs')
  targets = opts.decode_length or lengths.get('targets')
  if not inputs or not targets:
    raise ValueError('no decode lengths: pass --input_length and --decode_length (the config '
                     'binds no TASK_FEATURE_LENGTHS)')
  part = part or partitioning.PjitPartitioner(model)
  cfg = dataclasses.replace(cfg, param_dtype=opts.param_dtype, remat_policy='none')
  module = Transformer(cfg)
  batch = opts.batch_size or 32
  decoding.check_mesh(module, part, batch, 't5x plan --mode infer (--batch_size)')
  options = decoding.DecodeOptions(decode=opts.decode, num_decodes=opts.num_decodes,
                                   max_decode_length=targets).validate()
  params = abstract_params(module, part)
  tokens = jax.ShapeDtypeStruct((batch, inputs), jnp.int32, sharding=part.batch_sharding(2))
  report = {
      'mode': 'infer',
      'date': datetime.datetime.now().astimezone().isoformat(timespec='seconds'),
      'machine': train_plan.machine_description(), 'jax_version': jax.__version__,
      'gin_files': list(files), 'gin_bindings': list(bindings),
      'model': train_plan.model_summary(cfg),
      'mesh': {'data': part.mesh.shape['data'], 'model': part.mesh.shape['model'],
               'devices': part.mesh.size},
      'decode': {'method': opts.decode, 'num_decodes': opts.num_decodes, 'batch_size': batch,
                 'input_length': inputs, 'decode_length': targets,
                 'rows_per_device': batch * opts.num_decodes // part.data_size},
      'per_device_bytes': {
          'parameters': train_plan.tree_shard_bytes(params),
          **cache_bytes(cfg, part, batch * opts.num_decodes, inputs, targets),
          'input_tokens': train_plan.shard_bytes(tokens)},
  }
  report['compiled'] = compile_decode(module, options, part, params, tokens) if opts.compile else None
  report.update(train_plan.verdict(report, opts.device_memory_gib))
  return report


def configured_model():
  """(network config, TASK_FEATURE_LENGTHS or {}, the gin-built partitioner or None) of
  the parsed config's model."""
  for fn in (train_script.train, infer_script.infer):
    args = gin.get_bindings(fn)  # references resolved: the configured objects
    if args.get('model') is not None:
      dataset = args.get('train_dataset_cfg') or args.get('dataset_cfg')
      lengths = dict(dataset.task_feature_lengths or {}) if dataset is not None else {}
      return args['model'].module.config, lengths, args.get('partitioner')
  raise ValueError('the gin config names no model: include a model file (e.g. '
                   'models/t5_1_1/xxl.gin) and a run file that binds it (runs/finetune.gin, '
                   'or T5X\'s runs/infer.gin with MODEL)')


def abstract_params(module: Transformer, partitioner) -> dict:
  """The parameters as ShapeDtypeStructs in the decode dtype, sharded as `decoding` shards
  them."""
  shapes = model_config.param_shapes(module.config)
  shardings = decoding.param_shardings(module, partitioner)
  dtype = jnp.dtype(module.config.param_dtype)
  return model_config.unflatten({k: jax.ShapeDtypeStruct(v, dtype, sharding=shardings[k])
                                 for k, v in shapes.items()})


def cache_bytes(cfg, partitioner, rows: int, inputs: int, length: int) -> dict:
  """Per-device bytes of the decoder's self-attention cache and of the replayed
  cross-attention keys/values, for `rows` decode rows (padded to the data axis)."""
  rows += -rows % partitioner.data_size
  dtype, layers = jnp.dtype(cfg.dtype), cfg.num_decoder_layers
  h, d = cfg.num_heads, cfg.head_dim
  cache = jax.ShapeDtypeStruct((rows, length, h, d), dtype, sharding=partitioner.sharding(
      decoding.CACHE_AXES['cached_key']))
  cross = jax.ShapeDtypeStruct((rows, h, inputs, d), dtype, sharding=partitioner.sharding(
      ('batch', 'heads', 'length', 'kv')))
  return {'kv_cache': 2 * layers * train_plan.shard_bytes(cache),
          'cross_attention_kv': 2 * layers * train_plan.shard_bytes(cross)}


def compile_decode(module, options, partitioner, params, tokens) -> dict:
  """XLA's memory analysis of the compiled decode program, per device, in bytes."""
  seed = jax.ShapeDtypeStruct((), jnp.uint32, sharding=partitioner.replicated)
  program = decoding._compiled(module, dataclasses.replace(options, seed=0), EOS_ID,
                               partitioner, False)
  print(f'compiling the decode for {partitioner.mesh.size} simulated devices (3B/11B: '
        'minutes)...', file=sys.stderr, flush=True)
  start = time.perf_counter()
  lowered = program.lower(params, tokens, seed)
  lowered_at = time.perf_counter()
  stats = lowered.compile().memory_analysis()
  done = time.perf_counter()
  if stats is None:
    raise RuntimeError('this JAX backend gives no memory analysis; plan with --no-compile')
  out = {'argument_bytes': stats.argument_size_in_bytes,
         'output_bytes': stats.output_size_in_bytes,
         'temp_bytes': stats.temp_size_in_bytes,
         'generated_code_bytes': stats.generated_code_size_in_bytes,
         'lower_seconds': round(lowered_at - start, 1),
         'compile_seconds': round(done - lowered_at, 1)}
  out['peak_bytes'] = (out['argument_bytes'] + out['output_bytes'] + out['temp_bytes']
                       + out['generated_code_bytes'])
  return out


def format_report(r: dict) -> str:
  """The report as a plain-text table of sizes per device."""
  m, d, mesh, per, c = r['model'], r['decode'], r['mesh'], r['per_device_bytes'], r['compiled']
  lines = [
      f"model      {train_plan.format_count(m['total_parameters'])} parameters, "
      f"{m['num_encoder_layers']}+{m['num_decoder_layers']} layers, emb {m['emb_dim']}, "
      f"{m['num_heads']} heads, params {m['param_dtype']}, activations {m['dtype']}",
      f"mesh       data {mesh['data']} x model {mesh['model']} = {mesh['devices']} simulated "
      'devices',
      f"decode     {d['method']} x {d['num_decodes']}, batch {d['batch_size']} "
      f"({d['rows_per_device']} rows per device), inputs {d['input_length']}, "
      f"up to {d['decode_length']} tokens", '', 'per device']
  rows = [('parameters', per['parameters']), ('key/value cache', per['kv_cache']),
          ('cross-attention keys/values', per['cross_attention_kv']),
          ('input tokens', per['input_tokens'])]
  if c:
    rows += [(f"compiled decode (XLA, {c['compile_seconds']:.0f} s to compile):", None),
             ('  arguments', c['argument_bytes']), ('  outputs', c['output_bytes']),
             ('  temporaries', c['temp_bytes']), ('  generated code', c['generated_code_bytes'])]
  rows.append((f"total per device ({r['source']})", r['total_per_device_bytes']))
  lines += [label if n is None else f'{label:36s}{train_plan.format_size(n)}' for label, n in rows]
  return '\n'.join(lines + train_plan.verdict_lines(r))


def main(argv: Optional[Sequence[str]] = None) -> int:
  """The child process of `t5x plan --mode infer` (see t5x.memory.plan.launch)."""
  return train_plan.main(argv, plan_fn=plan, format_fn=format_report)


if __name__ == '__main__':
  sys.exit(main())

"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=8: three train steps on
several meshes; prints one JSON line of losses and sharding checks for the parent test."""
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import train_helpers  # noqa: E402
from t5x import model_config  # noqa: E402
from t5x import partitioning
from t5x import trainer


def run(num_partitions, param_dims, devices, steps=3, zero=False):
  rules = partitioning.standard_logical_axis_rules(parameter_partitioning_dims=param_dims)
  part = partitioning.PjitPartitioner(num_partitions, logical_axis_rules=rules, devices=devices)
  model = train_helpers.tiny_model(dropout_rate=0.1)
  t = trainer.Trainer(model, part, num_microbatches=2, shard_optimizer_state_over_data=zero)
  state = t.init_state(jax.random.PRNGKey(0))
  losses = []
  for i in range(steps):
    state, metrics = t.train_step(state, train_helpers.numpy_batch(i), jax.random.PRNGKey(1))
    losses.append(float(metrics['loss']))
  # Every parameter's sharding is the rules' mapping of its logical axes.
  axes = model_config.param_axes(model.config)
  flat = model_config.flatten(state.params)
  mismatches = [k for k, v in flat.items()
                if v.sharding.spec != part.mesh_axes(axes[k]) or v.sharding.mesh != part.mesh]
  sharded = sum(1 for v in flat.values() if any(a is not None for a in v.sharding.spec))
  opt_bytes = sum(x.addressable_shards[0].data.nbytes
                  for x in jax.tree_util.tree_leaves(state.opt_state))
  return {'losses': losses, 'mismatches': mismatches, 'sharded_params': sharded,
          'opt_state_bytes_per_device': opt_bytes,
          'final_param_sum': float(sum(np.asarray(v, np.float64).sum() for v in flat.values()))}


def main():
  devices = jax.devices()
  assert len(devices) == 8, devices
  out = {'single': run(1, 1, devices[:1])}
  for name, (parts, dims) in {'8x1': (1, 1), '4x2': (2, 1), '2x4': (4, 1), '4x2_2d': (2, 2)}.items():
    out[name] = run(parts, dims, devices)
  out['4x2_zero'] = run(2, 1, devices, zero=True)
  part = partitioning.PjitPartitioner(2, devices=devices)
  try:
    part.check_batch_size(6)
  except ValueError as e:
    out['batch_error'] = str(e)
  try:
    partitioning.PjitPartitioner(3, devices=devices)
  except ValueError as e:
    out['mesh_error'] = str(e)
  try:  # 4 heads cannot split 8 ways; the error must come before any compilation
    trainer.Trainer(train_helpers.tiny_model(), partitioning.PjitPartitioner(8, devices=devices))
  except ValueError as e:
    out['heads_error'] = str(e)
  print('RESULT ' + json.dumps(out))


if __name__ == '__main__':
  main()

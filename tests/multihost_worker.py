"""One process of a multi-host run on localhost CPUs, or its single-process reference.

    python multihost_worker.py MODEL_DIR STEPS LOCAL_DEVICES NUM_PARTITIONS [flags...]

Trains the tiny model with `train.train` (the loop `t5x train` runs, orbax checkpoints
included) on deterministic global batches, of which each process feeds only its own
rows, then prints one `RESULT {json}` line: the parameter sum and the process layout.
The per-step losses are in MODEL_DIR/metrics.jsonl (written by process 0 only).
"""
import json
import os
import sys

MODEL_DIR, STEPS, LOCAL_DEVICES, NUM_PARTITIONS = sys.argv[1:5]
os.environ['JAX_PLATFORMS'] = 'cpu'
import jax  # noqa: E402

jax.config.update('jax_num_cpu_devices', int(LOCAL_DEVICES))

import numpy as np  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
import train_helpers  # noqa: E402
from t5x import distributed  # noqa: E402
from t5x import partitioning
from t5x import train
from t5x import utils

GLOBAL_BATCH = 8


def host_rows(cfg, num_epochs=None, skip_batches=0):
  """This process's rows of global batch i: a contiguous block, as SeqIO's shards are.

  Training repeats forever. Evaluation (num_epochs=1) has 3 global batches, and the
  second half of the rows has only 2: in a 2-process run the second host runs out of
  batches first, as hosts with unequal shards do; a single process sees those rows as
  padding, so both runs evaluate the same examples.
  """
  count, index = jax.process_count(), jax.process_index()
  rows = GLOBAL_BATCH // count
  i = skip_batches
  while num_epochs is None or i < 3:
    batch = train_helpers.numpy_batch((1000 if num_epochs is None else 5000) + i,
                                      batch=GLOBAL_BATCH)
    if num_epochs is not None and i == 2:
      if count == 2 and index == 1:
        return
      batch = {k: np.where(np.arange(GLOBAL_BATCH)[:, None] < GLOBAL_BATCH // 2, v, 0)
               for k, v in batch.items()}
    yield {k: v[index * rows:(index + 1) * rows] for k, v in batch.items()}
    i += 1


def main():
  cfg, rest = distributed.parse_flags(sys.argv[5:])
  assert not rest, rest
  distributed.initialize(cfg)
  model = train_helpers.tiny_model(dropout_rate=0.1)
  part = partitioning.PjitPartitioner(int(NUM_PARTITIONS))
  data_cfg = utils.DatasetConfig('numpy', {}, 'train', GLOBAL_BATCH, False, 0)
  ckpt_cfg = utils.CheckpointConfig(save=utils.SaveCheckpointConfig(period=3, use_async=False))
  state = train.train(model=model, train_dataset_cfg=data_cfg, partitioner=part,
                      model_dir=MODEL_DIR, total_steps=int(STEPS), checkpoint_cfg=ckpt_cfg,
                      train_eval_dataset_cfg=data_cfg, eval_period=3, stats_period=1,
                      get_dataset_fn=host_rows,
                      show_progress=False)
  # Each process holds only its shards; gather the sum over the whole tree.
  from jax.experimental import multihost_utils
  total = sum(float(np.asarray(multihost_utils.process_allgather(x, tiled=True),
                               np.float64).sum())
              for x in jax.tree_util.tree_leaves(state.params))
  print('RESULT ' + json.dumps({
      'process_index': jax.process_index(), 'process_count': jax.process_count(),
      'devices': jax.device_count(), 'local_devices': jax.local_device_count(),
      'mesh': dict(part.mesh.shape), 'step': int(state.step), 'param_sum': total}), flush=True)


if __name__ == '__main__':
  main()

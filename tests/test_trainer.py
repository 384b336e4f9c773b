"""The train step: microbatching, partitioning on 8 simulated devices, schedules, losses."""
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import jobs
import train_helpers
from t5x import losses
from t5x import optimizers
from t5x import partitioning
from t5x import trainer

from conftest import ENV

HERE = os.path.dirname(os.path.abspath(__file__))


def test_microbatched_gradients_equal_full_batch():
  model = train_helpers.tiny_model()
  part = partitioning.PjitPartitioner(1)
  full = trainer.Trainer(model, part)
  params = model.init_params(jax.random.PRNGKey(0))
  batch = jax.tree_util.tree_map(jnp.asarray, train_helpers.numpy_batch(3))
  normalizer = model.loss_normalizer(batch)
  g1, s1 = full.accumulate_gradients(params, batch, jax.random.PRNGKey(1), normalizer)
  for m in (2, 4):
    gm, sm = trainer.Trainer(model, part, num_microbatches=m).accumulate_gradients(
        params, batch, jax.random.PRNGKey(1), normalizer)
    err = max(float(jnp.abs(a - b).max()) for a, b in
              zip(jax.tree_util.tree_leaves(g1), jax.tree_util.tree_leaves(gm)))
    assert err <= 1e-5, (m, err)
    assert float(sm['weight_sum']) == float(s1['weight_sum'])
    np.testing.assert_allclose(float(sm['loss_sum']), float(s1['loss_sum']), rtol=1e-6)
  assert max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(g1)) > 1e-3


@jobs.fixture(scope='module')
def eight_device_run(_folder):
  """The results of partition_worker.py: one process with 8 simulated CPU devices."""
  return jobs.eight_device_result(os.path.join(HERE, 'partition_worker.py'), ENV, 600)


@pytest.mark.parametrize('mesh', ['8x1', '4x2', '2x4', '4x2_2d', '4x2_zero'])
def test_partitioned_losses_equal_single_device(eight_device_run, mesh):
  single, run = eight_device_run['single'], eight_device_run[mesh]
  np.testing.assert_allclose(run['losses'], single['losses'], atol=1e-5, rtol=0)
  assert run['mismatches'] == []
  # The loss moves between steps, so equal losses mean equal updates.
  assert abs(single['losses'][0] - single['losses'][1]) > 1e-3


def test_optimizer_state_over_data_shrinks_it_per_device(eight_device_run):
  plain, zero = eight_device_run['4x2'], eight_device_run['4x2_zero']
  # Adafactor's parameter-shaped leaves split 4 more ways; factored statistics stay whole.
  assert zero['opt_state_bytes_per_device'] < 0.6 * plain['opt_state_bytes_per_device']


def test_two_dimensional_sharding_shards_more_parameters(eight_device_run):
  assert eight_device_run['4x2_2d']['sharded_params'] > eight_device_run['4x2']['sharded_params']


def test_mesh_and_batch_errors_say_what_to_change(eight_device_run):
  assert 'num_partitions=3' in eight_device_run['mesh_error']
  assert 'divisor of 8' in eight_device_run['mesh_error']
  heads = eight_device_run['heads_error']
  assert 'mesh axis model of size 8 (partitioning.PjitPartitioner.num_partitions)' in heads
  assert 'does not divide heads=4' in heads and 'largest fitting: 4' in heads
  msg = eight_device_run['batch_error']
  assert 'BATCH_SIZE=6' in msg and 'data axis of size 4' in msg and 'multiple of 4' in msg


def test_logical_axis_rules_table():
  one = dict(partitioning.standard_logical_axis_rules())
  assert one['batch'] == 'data' and one['embed'] is None and one['kv'] is None
  for name in ('vocab', 'mlp', 'heads', 'joined_kv'):
    assert one[name] == 'model'
  for name in ('length', 'relpos_buckets', 'layers'):
    assert one[name] is None
  part = partitioning.PjitPartitioner(
      1, logical_axis_rules=partitioning.standard_logical_axis_rules(
          parameter_partitioning_dims=2))
  assert tuple(part.mesh_axes(('embed', 'mlp'))) == ('data', 'model')
  assert tuple(part.mesh_axes(('batch', 'length', 'embed'))) == ('data', None, None)
  with pytest.raises(ValueError, match='num_partitions=2 does not divide the 1 devices'):
    partitioning.PjitPartitioner(2)


def test_model_parallel_submesh_sets_the_model_axis(caplog):
  """T5X's (x, y, z, core) tile: its product of devices form 'model'. On chips with
  coordinates each data row is one such tile of the slice."""
  with caplog.at_level('WARNING'):
    partitioning.PjitPartitioner(1, params_on_devices=False)
  assert 'params_on_devices=False has no effect' in caplog.text
  assert partitioning.PjitPartitioner(None, model_parallel_submesh=(1, 1, 1, 1)).num_partitions == 1
  with pytest.raises(ValueError, match=r'model_parallel_submesh=\(1, 2\); it must be 4'):
    partitioning.PjitPartitioner(None, model_parallel_submesh=(1, 2))
  with pytest.raises(ValueError, match='num_partitions=4 and model_parallel_submesh'):
    partitioning.PjitPartitioner(4, model_parallel_submesh=(1, 1, 1, 1))

  class Chip:  # a TPU v4-like chip of a 4x2x1 slice, one core each
    def __init__(self, i, x, y):
      self.id, self.coords, self.core_on_chip = i, (x, y, 0), 0

  chips = [Chip(i, x, y) for i, (y, x) in enumerate((y, x) for y in range(2) for x in range(4))]
  grid = partitioning._tiled_grid(chips, (2, 1, 1, 1))  # pylint: disable=protected-access
  assert [[c.coords[:2] for c in row] for row in grid] == [
      [(0, 0), (1, 0)], [(0, 1), (1, 1)], [(2, 0), (3, 0)], [(2, 1), (3, 1)]]
  assert partitioning._tiled_grid(chips, (3, 1, 1, 1)) is None  # 4 is not a multiple of 3


def test_two_dimensional_rules_keep_t5x_order():
  """T5X's order of the `embed` rules: with 2-D activations and parameters, 'model'
  comes before 'data', so a 1-D embed parameter (a layer-norm scale) goes to 'model' and
  a kernel [embed, mlp] to ('data', 'model'); 2-D parameters alone put embed on 'data'."""
  def embed_rules(act, param):
    return [m for a, m in partitioning.standard_logical_axis_rules(act, param) if a == 'embed']
  assert embed_rules(1, 1) == [None]
  assert embed_rules(1, 2) == ['data', None]
  assert embed_rules(2, 1) == ['model', None]
  assert embed_rules(2, 2) == ['model', 'data', None]
  both = partitioning.PjitPartitioner(
      1, logical_axis_rules=partitioning.standard_logical_axis_rules(2, 2))
  assert tuple(both.mesh_axes(('embed',))) == ('model',)
  assert tuple(both.mesh_axes(('embed', 'mlp'))) == ('data', 'model')
  params_only = partitioning.PjitPartitioner(
      1, logical_axis_rules=partitioning.standard_logical_axis_rules(
          parameter_partitioning_dims=2))
  assert tuple(params_only.mesh_axes(('embed',))) == ('data',)
  extra = partitioning.standard_logical_axis_rules(additional_rules=[('expert', 'data')])
  assert extra[-1] == ('expert', 'data')
  assert dict(extra)['mlp_activations'] is None and dict(extra)['abspos_buckets'] is None


def test_learning_rate_schedules():
  at = lambda s, step: float(s(step))
  constant = optimizers.create_learning_rate_scheduler('constant', 1e-3)
  assert at(constant, 0) == pytest.approx(1e-3) and at(constant, 10**6) == pytest.approx(1e-3)
  warm = optimizers.create_learning_rate_scheduler('constant * linear_warmup', 2.0, warmup_steps=100)
  assert [at(warm, s) for s in (50, 100, 400)] == pytest.approx([1.0, 2.0, 2.0])
  rsqrt = optimizers.create_learning_rate_scheduler('constant * rsqrt_decay', 1.0, warmup_steps=10000)
  assert at(rsqrt, 0) == pytest.approx(0.01) and at(rsqrt, 40000) == pytest.approx(0.005)
  linear = optimizers.create_learning_rate_scheduler('constant * linear_decay', 1.0, warmup_steps=0,
                                                     steps_per_cycle=1000)
  assert [at(linear, s) for s in (0, 250, 1000)] == pytest.approx([1.0, 0.75, 1e-8])
  cosine = optimizers.create_learning_rate_scheduler('constant * cosine_decay', 1.0, warmup_steps=100,
                                                     steps_per_cycle=1000)
  assert [at(cosine, s) for s in (100, 600, 1100)] == pytest.approx([1.0, 0.5, 1.0])
  with pytest.raises(ValueError, match='cosine'):
    optimizers.create_learning_rate_scheduler('constant * cosine')


def test_cross_entropy_gradient_is_softmax_minus_one_hot():
  """The hand-written backward pass (one fused pass over the logits) against autodiff of
  the plain formula, both outputs weighted, z-loss on."""
  rng = np.random.RandomState(0)
  logits = jnp.asarray(rng.randn(3, 5, 50).astype(np.float32) * 4)
  targets = jnp.asarray(rng.randint(0, 50, (3, 5)))
  w_loss, w_z = (jnp.asarray(rng.rand(3, 5).astype(np.float32)) for _ in range(2))

  def plain(x, z_loss):
    log_z = jax.nn.logsumexp(x, axis=-1)
    label = jnp.take_along_axis(x, targets[..., None], axis=-1)[..., 0]
    return log_z - label + z_loss * log_z ** 2, z_loss * log_z ** 2

  for z_loss in (0.0, 1e-4, 0.1):
    objective = lambda fn: lambda x: sum(jnp.sum(o * w) for o, w in zip(fn(x), (w_loss, w_z)))
    ours = objective(lambda x: losses.cross_entropy_with_logits(x, targets, z_loss))
    reference = objective(lambda x: plain(x, z_loss))
    assert float(ours(logits)) == pytest.approx(float(reference(logits)), rel=1e-6)
    np.testing.assert_allclose(jax.grad(ours)(logits), jax.grad(reference)(logits), atol=2e-6)


def test_cross_entropy_z_loss_and_label_smoothing():
  logits = jnp.zeros((1, 1, 4))
  loss, z = losses.cross_entropy_with_logits(logits, jnp.zeros((1, 1), jnp.int32), z_loss=1e-4)
  assert float(loss[0, 0]) == pytest.approx(np.log(4) + 1e-4 * np.log(4) ** 2, rel=1e-6)
  assert float(z[0, 0]) == pytest.approx(1e-4 * np.log(4) ** 2, rel=1e-6)
  # With smoothing 0.1 over 4 classes the target is (0.9, 1/30, 1/30, 1/30); predicting
  # exactly that distribution costs nothing once the target's entropy is subtracted.
  target = jnp.array([0.9, 0.1 / 3, 0.1 / 3, 0.1 / 3])
  smooth, _ = losses.cross_entropy_with_logits(jnp.log(target)[None, None], jnp.zeros((1, 1), jnp.int32),
                                               label_smoothing=0.1)
  assert abs(float(smooth[0, 0])) < 1e-6

"""`adafactor.Adafactor` is T5X's: its updates equal those upstream T5X made (the
`t5x_orbax` fixture in ../shared), its factored path equals optax's Adafactor where the
two agree by construction, and a `layers` batch axis updates each layer on its own."""
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from t5x import adafactor
from t5x import model_config
from t5x.examples.t5.network import T5Config
from upstream_fixtures import FIXTURE_NETWORK, npz_tree

@pytest.fixture(scope='module')
def t5x_orbax(shared_dir):
  return shared_dir / 'fixtures' / 't5x' / 't5x_orbax'


def _restore_state(folder):
  """T5X's `state` item as written by upstream T5X: {'target', 'state': {'step', ...}}."""
  import orbax.checkpoint as ocp
  return ocp.PyTreeCheckpointer().restore(str(folder / 'state'))


def test_three_updates_equal_upstream_t5x(t5x_orbax):
  start = _restore_state(t5x_orbax / 'checkpoint_0')
  opt = adafactor.Adafactor(decay_rate=0.8, step_offset=0,
                            logical_factor_rules=adafactor.standard_logical_factor_rules())
  opt.set_param_axes(model_config.param_axes(T5Config(**FIXTURE_NETWORK)))
  tx = opt(lambda step: jnp.float32(1e-3))
  params = start['target']
  state = tx.init(params)
  # The fresh state has T5X's layout and shapes: the fixture's checkpoint_0 exactly.
  restored_slots = model_config.flatten(start['state']['param_states'])
  ours = model_config.flatten(state.param_states)
  assert ours.keys() == restored_slots.keys()
  for key, value in restored_slots.items():
    assert ours[key].shape == value.shape and ours[key].dtype == value.dtype, key
    assert not np.any(np.asarray(value)), key  # T5X starts every slot at zero
  update = jax.jit(tx.update)
  for n in (1, 2, 3):
    grads = model_config.unflatten(npz_tree(t5x_orbax / 'gradients.npz', f'update_{n}'))
    updates, state = update(grads, state, params)
    params = optax.apply_updates(params, updates)

  expected_params = npz_tree(t5x_orbax / 'state_step3.npz', "['target']")
  expected_slots = npz_tree(t5x_orbax / 'state_step3.npz', "['state']['param_states']")
  got_params, got_slots = model_config.flatten(params), model_config.flatten(state.param_states)
  assert got_params.keys() == expected_params.keys() and len(got_params) == 52
  assert got_slots.keys() == expected_slots.keys() and len(got_slots) == 4 * 52
  param_error = max(float(np.max(np.abs(got_params[k] - v))) for k, v in expected_params.items())
  slot_error = max(float(np.max(np.abs(got_slots[k] - v))) for k, v in expected_slots.items())
  print(f'max |ours - T5X|: parameters {param_error:.3g}, v/v_row/v_col/m {slot_error:.3g}')
  # Measured on this CPU: parameters 1.2e-7 (1 ulp), slots 5.8e-11.
  assert param_error <= 1e-6 and slot_error <= 1e-6, (param_error, slot_error)
  with np.load(t5x_orbax / 'state_step3.npz') as z:
    assert int(state.step) == int(z["['state']['step']"]) == 3
  # The parameters moved: equal parameters mean equal updates, not an idle optimizer.
  moved = max(float(np.max(np.abs(expected_params[k] - np.asarray(v))))
              for k, v in model_config.flatten(start['target']).items())
  assert moved > 1e-4


def test_factored_updates_equal_optax_adafactor():
  """On a matrix whose both sides reach min_dim_size_to_factor, T5X's heuristic factoring,
  parameter scale and clipping are optax's too: five steps agree to float32 round-off."""
  rng = np.random.RandomState(0)
  params = {'w': jnp.asarray(rng.normal(0, 0.3, (160, 192)), jnp.float32),
            'b': jnp.asarray(rng.normal(0, 0.3, (192,)), jnp.float32)}
  schedule = lambda step: 1e-2 / (1.0 + step)
  ours = adafactor.Adafactor()(schedule)
  theirs = optax.adafactor(schedule, min_dim_size_to_factor=128, decay_rate=0.8)
  p_ours, p_theirs = params, params
  s_ours, s_theirs = ours.init(params), theirs.init(params)
  assert s_ours.param_states['w']['v_row'].shape == (160,)
  assert s_ours.param_states['w']['v_col'].shape == (192,)
  assert s_ours.param_states['w']['v'].shape == (1,)
  for _ in range(5):
    grads = jax.tree_util.tree_map(
        lambda p: jnp.asarray(rng.normal(0, 1, p.shape), jnp.float32), params)
    u, s_ours = ours.update(grads, s_ours, p_ours)
    p_ours = optax.apply_updates(p_ours, u)
    u, s_theirs = theirs.update(grads, s_theirs, p_theirs)
    p_theirs = optax.apply_updates(p_theirs, u)
  for k in params:
    np.testing.assert_allclose(p_ours[k], p_theirs[k], rtol=0, atol=2e-6)
    assert float(jnp.max(jnp.abs(p_ours[k] - params[k]))) > 1e-3


def test_layers_axis_updates_each_layer_on_its_own():
  """A scanned kernel [embed, layers, mlp] with a BATCH `layers` axis is updated as its
  layers would be one by one: factored, scaled and clipped per layer."""
  rng = np.random.RandomState(1)
  layers = [jnp.asarray(rng.normal(0, s, (128, 256)), jnp.float32) for s in (0.1, 1.0, 3.0)]
  grads = [jnp.asarray(rng.normal(0, s, (128, 256)), jnp.float32) for s in (10.0, 0.1, 1.0)]
  rules = adafactor.standard_logical_factor_rules()
  stacked_opt = adafactor.Adafactor(logical_factor_rules=rules)
  stacked_opt.set_param_axes({'k': ('embed', 'layers', 'mlp')})
  single_opt = adafactor.Adafactor(logical_factor_rules=rules)
  single_opt.set_param_axes({'k': ('embed', 'mlp')})
  stacked, single = stacked_opt(lambda s: 1e-2), single_opt(lambda s: 1e-2)

  p = {'k': jnp.stack(layers, axis=1)}
  s = stacked.init(p)
  assert s.param_states['k']['v_row'].shape == (128, 3)  # the columns (mlp) averaged out
  assert s.param_states['k']['v_col'].shape == (3, 256)
  for _ in range(2):
    u, s = stacked.update({'k': jnp.stack(grads, axis=1)}, s, p)
    p = optax.apply_updates(p, u)
  for i in range(3):
    q = {'k': layers[i]}
    t = single.init(q)
    for _ in range(2):
      u, t = single.update({'k': grads[i]}, t, q)
      q = optax.apply_updates(q, u)
    # The RMS means over a strided layer sum in another order, so the steps agree to
    # round-off: measured 2.4e-7 of the largest step, plus 1 ulp of the parameter.
    step = float(jnp.max(jnp.abs(q['k'] - layers[i])))
    assert step > 1e-3
    np.testing.assert_allclose(p['k'][:, i], q['k'], rtol=2.5e-7, atol=5e-7 * step)


def test_unscanned_rank_three_without_rules_is_refused():
  opt = adafactor.Adafactor()(lambda s: 1e-3)
  with pytest.raises(ValueError, match=r'encoder/k \(2, 3, 4\) has rank 3 > 2.*logical_factor'):
    opt.init({'encoder': {'k': jnp.zeros((2, 3, 4))}})


def test_missing_logical_rule_names_the_axis_and_parameter():
  opt = adafactor.Adafactor(logical_factor_rules={'embed': 'row'})
  with pytest.raises(ValueError, match=r"no rule for logical axis 'mlp' \(parameter a/wi\)"):
    opt.set_param_axes({'a': {'wi': ('embed', 'mlp')}})


def test_momentum_weight_decay_and_step_offset():
  """beta1 keeps `m` in dtype_momentum; weight decay shrinks as (1 - rate) * param;
  step_offset restarts the second-moment decay (so the first update's v is grad^2)."""
  p = {'w': jnp.full((4,), 2.0, jnp.float32)}
  g = {'w': jnp.asarray([1.0, -2.0, 3.0, -4.0], jnp.float32)}
  opt = adafactor.Adafactor(beta1=0.9, dtype_momentum='bfloat16', weight_decay_rate=0.1,
                            step_offset=5, multiply_by_parameter_scale=False,
                            clipping_threshold=None)
  tx = opt(lambda step: 0.5)
  state = tx.init(p)._replace(step=jnp.int32(5))
  u, state = tx.update(g, state, p)
  new = optax.apply_updates(p, u)
  # decay 0 at step == step_offset: v = g^2 + eps1, y = g / |g| = sign(g).
  np.testing.assert_allclose(state.param_states['w']['v'], np.square(g['w']), rtol=1e-7)
  m = 0.1 * 0.5 * np.sign(g['w'])
  assert state.param_states['w']['m'].dtype == jnp.bfloat16
  np.testing.assert_allclose(state.param_states['w']['m'].astype(np.float32), m, rtol=1e-2)
  np.testing.assert_allclose(new['w'], 0.9 * 2.0 - m, rtol=1e-6)
  assert int(state.step) == 6


def test_t5x_gin_lines_configure_it():
  """The lines T5X's model files use, parsed by gin against this module."""
  import gin
  with gin.unlock_config():
    gin.clear_config()
    gin.parse_config('\n'.join([
        'from __gin__ import dynamic_registration',
        'from t5x import adafactor',
        'OPTIMIZER = @adafactor.Adafactor()',
        'adafactor.Adafactor.decay_rate = 0.8',
        'adafactor.Adafactor.step_offset = 0',
        'adafactor.Adafactor.logical_factor_rules = @adafactor.standard_logical_factor_rules()',
    ]))
    try:
      opt = gin.query_parameter('%OPTIMIZER').scoped_configurable_fn()
    finally:
      gin.clear_config()
  assert isinstance(opt, adafactor.Adafactor)
  assert opt.decay_rate == 0.8 and opt.logical_factor_rules['layers'] is adafactor.FactorDim.BATCH


def _t5x_adafactor():
  return adafactor.Adafactor(decay_rate=0.8, step_offset=0,
                             logical_factor_rules=adafactor.standard_logical_factor_rules())


@pytest.mark.slow  # a training loop with checkpoints, or reads one
def test_trainer_uses_it_and_resumes_bit_for_bit(tmp_path):
  """In the trainer: on the plain tiny model (no matrix reaches min_dim_size_to_factor)
  it trains bit for bit as optax's Adafactor does; a scanned run resumed from its step-2
  checkpoint ends bit for bit as the whole run."""
  import train_helpers
  from t5x import optimizers, partitioning, trainer

  def run(model_dir, steps, optimizer=None, **kw):
    return train_helpers.numpy_run(
        model_dir, train_helpers.tiny_model(optimizer or _t5x_adafactor(), **kw), steps)

  def same(a, b):
    pairs = zip(jax.tree_util.tree_leaves(jax.device_get(a)),
                jax.tree_util.tree_leaves(jax.device_get(b)))
    return all(np.asarray(x).tobytes() == np.asarray(y).tobytes() for x, y in pairs)

  plain = run(tmp_path / 'plain', 3)
  assert isinstance(plain.opt_state[-1], adafactor.AdafactorState)
  assert int(plain.opt_state[-1].step) == 3
  assert same(plain.params, run(tmp_path / 'optax', 3, optimizers.adafactor()).params)
  # Scanned, T5X's rules factor the stacked kernels by their embed/mlp/heads axes (an
  # explicit rule ignores min_dim_size_to_factor, as in T5X), so no plain-model equality here.
  scanned = run(tmp_path / 'scanned', 4, scan_layers=True)
  run(tmp_path / 'resumed', 2, scan_layers=True)
  resumed = run(tmp_path / 'resumed', 4, scan_layers=True)
  assert same(scanned, resumed)
  slots = scanned.opt_state[-1].param_states['encoder']['layers']['mlp']['wi_0']['kernel']
  assert slots['v_row'].shape == (32, 2) and slots['v_col'].shape == (2, 64)
  # Second moments shaped like their kernel are sharded like it; the rest replicated.
  tr = trainer.Trainer(train_helpers.tiny_model(_t5x_adafactor(), scan_layers=True),
                       partitioning.PjitPartitioner(1))
  slots = tr.state_shardings.opt_state[-1].param_states['encoder']['relpos_bias']
  param = tr.state_shardings.params['encoder']['relpos_bias']['rel_embedding']
  assert tuple(param.spec) == ('model', None)  # heads on the model axis
  assert slots['rel_embedding']['v'].spec == param.spec
  assert slots['rel_embedding']['v_row'].spec == tr.partitioner.replicated.spec

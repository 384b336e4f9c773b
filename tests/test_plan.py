"""`t5x plan`: per-device bytes equal a hand count from shapes and rules; verdicts; errors.

Each case runs the real command in a subprocess (it starts its own child with simulated
CPU devices). The expected bytes are computed here from the tiny config's shapes and the
rules table written out below, not through plan.py.
"""
import json
import math
import subprocess
import sys

import jax
import numpy as np
import optax
import pytest

from conftest import ENV, ROOT
from t5x import model_config
from t5x.memory import plan
from t5x.examples.t5.network import T5Config

# gin/quickstart.gin's architecture (over models/t5_1_1/tiny.gin).
QUICKSTART = dict(vocab_size=384, emb_dim=64, num_heads=4, head_dim=16, mlp_dim=128,
                  num_encoder_layers=2, num_decoder_layers=2, mlp_activations=('gelu', 'linear'),
                  logits_via_embedding=False, dtype='float32', dropout_rate=0.0)
# runs/finetune.gin's rules (parameter_partitioning_dims=1): these logical axes go to
# 'model', every other one is replicated.
ON_MODEL_AXIS = {'vocab', 'mlp', 'heads', 'joined_kv'}
# packed int32 batch: 3 encoder features (tokens, segment ids, positions) of length 32,
# 5 decoder features (inputs, targets, loss weights, segment ids, positions) of length 24
BATCH_BYTES_PER_ROW = 4 * (3 * 32 + 5 * 24)


def _plan(tmp_path, *flags, timeout=600):
  """(completed process, report dict or None) of `t5x plan --gin_file=gin/quickstart.gin`."""
  out = tmp_path / 'plan.json'
  proc = subprocess.run(
      [sys.executable, '-m', 't5x_cli.main', 'plan', '--gin_file=gin/quickstart.gin',
       '--json', str(out), *flags],
      cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=timeout)
  report = json.loads(out.read_text()) if out.exists() else None
  return proc, report


def _shard_factor(axes, model_axis: int) -> int:
  return math.prod(model_axis if a in ON_MODEL_AXIS else 1 for a in axes)


def _expected_bytes(cfg: T5Config, model_axis: int) -> tuple[int, int]:
  """(parameter bytes, Adafactor state bytes) per device for float32 parameters.

  The model files' optimizer is T5X's Adafactor: per parameter the second-moment
  statistics that optax's factored Adafactor keeps too (v, or v_row and v_col, with a
  one-float placeholder for the other), T5X's momentum slot m (one float when beta1 is
  None), and one int32 step."""
  shapes, axes = model_config.param_shapes(cfg), model_config.param_axes(cfg)
  params = sum(math.prod(shapes[k]) * 4 // _shard_factor(axes[k], model_axis) for k in shapes)
  tree = model_config.unflatten({k: jax.ShapeDtypeStruct(s, np.float32) for k, s in shapes.items()})
  adafactor = optax.adafactor(lambda step: 1e-3, min_dim_size_to_factor=128)
  state = jax.eval_shape(adafactor.init, tree)
  # T5X's step, its m per parameter, and the trainer's schedule step (one int32 leaf).
  opt = 4 + 4 * len(shapes) + 4
  for path, leaf in jax.tree_util.tree_flatten_with_path(state)[0]:
    if leaf.ndim == 0:
      continue  # optax's own step counts: T5X keeps the one counted above
    name = '/'.join(str(k.key) for k in path if isinstance(k, jax.tree_util.DictKey))
    nbytes = math.prod(leaf.shape) * np.dtype(leaf.dtype).itemsize
    # Second moments shaped like their parameter are sharded like it; factored row and
    # column statistics and placeholders are replicated.
    if name in shapes and tuple(leaf.shape) == shapes[name]:
      nbytes //= _shard_factor(axes[name], model_axis)
    opt += nbytes
  return params, opt


@pytest.fixture(scope='module')
def quickstart_2x2(tmp_path_factory):
  return _plan(tmp_path_factory.mktemp('plan'), '--mesh', '2x2', '--device_memory_gib', '0.001')


@pytest.mark.slow
def test_parameter_and_optimizer_bytes_match_hand_count(quickstart_2x2):
  proc, report = quickstart_2x2
  assert proc.returncode == 0, proc.stderr[-3000:]
  cfg = T5Config(**QUICKSTART)
  params, opt = _expected_bytes(cfg, model_axis=2)
  per = report['per_device_bytes']
  assert report['model']['total_parameters'] == model_config.count_params(cfg) == 246784
  assert report['mesh'] == {'data': 2, 'model': 2, 'devices': 4}
  assert per['parameters'] == params
  assert per['optimizer_state'] == opt
  assert per['gradients'] == params  # every parameter trains; float32 like the parameters
  assert per['gradient_accumulator'] == 0  # quickstart: one microbatch
  assert per['batch'] == 16 * BATCH_BYTES_PER_ROW  # 32 rows over a data axis of 2


@pytest.mark.slow
def test_compiled_memory_analysis_is_reported(quickstart_2x2):
  proc, report = quickstart_2x2
  assert proc.returncode == 0, proc.stderr[-3000:]
  compiled, per = report['compiled'], report['per_device_bytes']
  for key in ('argument_bytes', 'output_bytes', 'alias_bytes', 'temp_bytes', 'peak_bytes',
              'compile_seconds'):
    assert compiled[key] > 0, key
  # The donated state comes back in place: at most arguments alias outputs.
  assert compiled['alias_bytes'] <= min(compiled['argument_bytes'], compiled['output_bytes'])
  # Every state buffer is counted once, read by the step or not.
  inputs = per['parameters'] + per['optimizer_state'] + per['batch'] + 8
  assert compiled['argument_bytes'] + compiled['unused_argument_bytes'] == inputs
  assert report['source'] == 'computed'
  assert report['total_per_device_bytes'] == compiled['peak_bytes']
  assert 'temporaries' in proc.stdout and 'computed' in proc.stdout


@pytest.mark.slow
def test_tiny_device_memory_does_not_fit(quickstart_2x2):
  proc, report = quickstart_2x2
  assert report['fits'] is False
  assert report['headroom_bytes'] == int(0.001 * 2 ** 30) - report['total_per_device_bytes']
  assert 'does not fit in 0.001 GiB' in proc.stdout


@pytest.mark.slow
def test_factored_state_estimate_fits_large_memory(tmp_path):
  """Wider layers make Adafactor factor its second moments (replicated row/column
  statistics); --no-compile gives an estimated total; 100 GiB fits."""
  wide = dict(QUICKSTART, emb_dim=128, mlp_dim=256)
  proc, report = _plan(tmp_path, '--mesh', '1x4', '--no-compile', '--device_memory_gib', '100',
                       '--batch_size', '8', '--gin.network.T5Config.emb_dim=128',
                       '--gin.network.T5Config.mlp_dim=256')
  assert proc.returncode == 0, proc.stderr[-3000:]
  params, opt = _expected_bytes(T5Config(**wide), model_axis=4)
  per = report['per_device_bytes']
  assert (per['parameters'], per['optimizer_state']) == (params, opt)
  assert opt < params  # factoring: far less than one float32 copy of the parameters
  assert report['batch']['batch_size'] == 8 and per['batch'] == 8 * BATCH_BYTES_PER_ROW
  assert report['compiled'] is None and report['source'] == 'estimated'
  assert report['total_per_device_bytes'] == sum(per.values())
  assert report['fits'] is True and 'fits in 100 GiB' in proc.stdout


@pytest.mark.slow
@pytest.mark.parametrize('mesh, numbers', [
    ('3x2', ['BATCH_SIZE=32', 'data axis of size 3', '30 and 33']),  # 32 rows, 3 data shards
    ('2x3', ['does not divide', 'size 3', 'num_partitions']),  # 4 heads, 64 joined_kv over 3
])
def test_indivisible_mesh_is_a_clear_error(tmp_path, mesh, numbers):
  proc, report = _plan(tmp_path, '--mesh', mesh, '--no-compile')
  assert proc.returncode == 2
  assert 'Traceback' not in proc.stderr
  # (gin may add an 'In call to configurable ...' line after the message)
  assert any(l.startswith('t5x plan: error:') for l in proc.stderr.splitlines())
  for text in numbers:
    assert text in proc.stderr, proc.stderr
  assert report is None


def test_bad_mesh_flag_is_refused_before_planning():
  proc = subprocess.run([sys.executable, '-m', 't5x_cli.main', 'plan',
                         '--gin_file=gin/quickstart.gin', '--mesh', '4by8'],
                        cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120)
  assert proc.returncode == 2 and 'DATAxMODEL' in proc.stderr and 'Traceback' not in proc.stderr


def test_child_environment_simulates_the_mesh_devices():
  env = plan.planning_env({'XLA_FLAGS': '--xla_dump_to=/tmp/x '
                                        '--xla_force_host_platform_device_count=2'}, 32)
  assert env['XLA_FLAGS'].split() == ['--xla_dump_to=/tmp/x',
                                      '--xla_force_host_platform_device_count=32']
  assert env['JAX_PLATFORMS'] == 'cpu'
  assert plan.parse_mesh('4x8') == (4, 8)


def test_activation_estimate_formula_by_hand():
  """One encoder and one decoder layer, one device, float32, no dropout: the docstring's
  terms written out for the numbers."""
  cfg = T5Config(vocab_size=128, emb_dim=8, num_heads=2, head_dim=4, mlp_dim=16,
                 num_encoder_layers=1, num_decoder_layers=1, mlp_activations=('gelu', 'linear'),
                 dropout_rate=0.0, dtype='float32')

  class OneDevice:  # mesh_axes and mesh.shape, as the partitioner answers with 1 device
    mesh = type('Mesh', (), {'shape': {'data': 1, 'model': 1}})()

    @staticmethod
    def mesh_axes(logical):
      return (None,) * len(logical)

  le, ld, e, hd, h, m, v = 6, 3, 8, 8, 2, 16, 128
  norm = lambda n: n * e * 8
  attn = lambda q, k: q * hd * 8 + k * hd * 8 + h * q * k * 8
  mlp = lambda n: n * m * 16
  enc = 2 * norm(le) + attn(le, le) + mlp(le)
  dec = 3 * norm(ld) + attn(ld, ld) + attn(ld, le) + mlp(ld)
  stacks = (2 * le + ld) * e * 4 + h * (le * le + ld * ld) * 4 + ld * le * 4
  expected = 2 * (enc + dec + stacks + 3 * ld * v * 4)
  assert plan.activation_bytes(cfg, OneDevice, 2, {'inputs': le, 'targets': ld}) == expected


@pytest.fixture(scope='module')
def decode_2x2(tmp_path_factory):
  """`t5x plan --mode infer`: a 3-beam decode of 8 inputs of the quickstart model, 2x2."""
  return _plan(tmp_path_factory.mktemp('decode_plan'), '--mode', 'infer', '--mesh', '2x2',
               '--decode', 'beam', '--num_decodes', '3', '--batch_size', '8',
               '--device_memory_gib', '1')


@pytest.mark.slow
def test_decode_plan_counts_parameters_and_caches_by_hand(decode_2x2):
  """Parameters in bfloat16 (the decode dtype), sharded by the training rules; the
  key/value cache and the cross-attention keys/values per layer: 24 rows (8 inputs x 3
  beams) over a data axis of 2, 4 heads over a model axis of 2, head_dim 16, float32
  activations, 2 decoder layers; quickstart lengths 32 in, 24 out."""
  proc, report = decode_2x2
  assert proc.returncode == 0, proc.stderr[-3000:]
  cfg = T5Config(**QUICKSTART)
  shapes, axes = model_config.param_shapes(cfg), model_config.param_axes(cfg)
  params = sum(math.prod(shapes[k]) * 2 // _shard_factor(axes[k], 2) for k in shapes)
  per = report['per_device_bytes']
  assert report['model']['param_dtype'] == 'bfloat16' and per['parameters'] == params
  rows, heads, layers = 24 // 2, 4 // 2, 2
  assert per['kv_cache'] == 2 * layers * rows * 24 * heads * 16 * 4
  assert per['cross_attention_kv'] == 2 * layers * rows * heads * 32 * 16 * 4
  assert per['input_tokens'] == 8 // 2 * 32 * 4
  assert report['decode'] == {'method': 'beam', 'num_decodes': 3, 'batch_size': 8,
                              'input_length': 32, 'decode_length': 24, 'rows_per_device': 12}


@pytest.mark.slow
def test_decode_plan_reports_the_compiled_program(decode_2x2):
  proc, report = decode_2x2
  compiled, per = report['compiled'], report['per_device_bytes']
  # The program's arguments: the parameters and the tokens (beam search never reads the
  # seed, so jit drops it).
  assert compiled['argument_bytes'] == per['parameters'] + per['input_tokens']
  # It outputs tokens [8, 3, 24] and scores [8, 3], replicated (int32 / float32), and
  # XLA:CPU's result tuple, one 8-byte pointer per output.
  assert compiled['output_bytes'] == 8 * 3 * 24 * 4 + 8 * 3 * 4 + 2 * 8
  # Caches live inside the program: its temporaries hold at least them.
  assert compiled['temp_bytes'] >= per['kv_cache'] + per['cross_attention_kv']
  assert report['total_per_device_bytes'] == compiled['peak_bytes'] and report['fits'] is True
  assert 'key/value cache' in proc.stdout and 'fits in 1 GiB' in proc.stdout


@pytest.mark.parametrize('flags, numbers', [
    (['--mesh', '1x8'], ['model axis of size 8', 'num_heads=4']),
    (['--mesh', '2x2', '--batch_size', '5'], ['batch_size=5', 'data axis of size 2']),
])
def test_decode_plan_refuses_meshes_that_cannot_decode(tmp_path, flags, numbers):
  proc, report = _plan(tmp_path, '--mode', 'infer', '--no-compile', *flags)
  assert proc.returncode == 2 and 'Traceback' not in proc.stderr and report is None
  for text in numbers:
    assert text in proc.stderr, proc.stderr

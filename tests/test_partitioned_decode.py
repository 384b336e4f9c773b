"""The decode as one program on a mesh (decode_worker.py, 8 simulated CPU devices in a
subprocess): token-identical to one device, parameters sharded as in training."""
import os

import pytest

import jobs
from conftest import ENV

HERE = os.path.dirname(os.path.abspath(__file__))
MESHES = ['plain-float32-8x1', 'plain-float32-4x2', 'plain-float32-2x4', 'plain-float32-1x8',
          'scan-bfloat16-4x2', 'scan-bfloat16-1x8']


@jobs.fixture(scope='module')
def eight_device_decode(_folder):
  """decode_worker.py's results: {case-mesh: {decode: {same_tokens, score_diff}, bytes}}."""
  return jobs.eight_device_result(os.path.join(HERE, 'decode_worker.py'), ENV)


@pytest.mark.parametrize('case', MESHES)
def test_decode_on_a_mesh_equals_one_device(eight_device_decode, case):
  run = eight_device_decode[case]
  for name in ('greedy', 'beam', 'sample'):  # sampling: the same seeds, the same tokens
    assert run[name]['same_tokens'], name
  for name in ('greedy', 'beam'):
    assert run[name]['score_diff'] < 1e-5, name


@pytest.mark.parametrize('case', MESHES)
def test_parameters_are_sharded_by_the_training_rules(eight_device_decode, case):
  run = eight_device_decode[case]
  assert run['param_bytes_per_device'] == run['expected_param_bytes_per_device']
  if case.endswith('1x8'):  # 1/8 of the whole, up to the replicated norms and biases
    whole = run['param_bytes']
    assert whole / 8 <= run['param_bytes_per_device'] < whole / 8 * 1.06


def test_infer_on_a_mesh_writes_what_one_device_writes(eight_device_decode):
  runs = eight_device_decode['infer']
  assert all(r['lines'] == 9 and r['same_predictions'] for r in runs.values()), runs
  # Decodes: the same lines. Teacher-forced scores and a decode's log-probability
  # (summed on the mesh in another order) agree to float32 round-off.
  assert runs['predict']['same_lines'], runs
  assert all(r['same_but_scores'] for r in runs.values()), runs
  assert runs['score']['score_diff'] < 1e-5 and runs['predict_with_aux']['aux_diff'] < 1e-5, runs


def test_infer_eval_on_a_mesh_equals_t5x_eval_of_its_checkpoint(eight_device_decode):
  """Training's infer_eval decodes the live parameters on the 4x2 training mesh; `t5x
  eval` of the checkpoint saved at that step, on one device, gives the same metrics and
  the same 40 predictions (as seqio's JSON logger wrote them)."""
  run = eight_device_decode['infer_eval']
  assert run['during'] == run['after'] and run['during']
  assert run['same_predictions'] and run['predictions'] == 40


def test_notebook_api_on_a_mesh(eight_device_decode):
  """`t5x.load(path, partitioner=PjitPartitioner(2))`: parameters sharded on the 4x2 mesh,
  the same generated texts and scores as on one device."""
  api = eight_device_decode['api']
  assert api['same_generate'] and api['score_diff'] < 1e-5 and api['sharded'] > 0


def test_cache_is_sharded_by_rows_and_heads(eight_device_decode):
  """The key/value cache of a 3-beam decode, read from its arrays: rows over 'data',
  heads over 'model'. On 1x8 each device holds 1/8 of the 1x1 cache, up to the per-layer
  scalar positions (replicated)."""
  cache = eight_device_decode['cache']
  one, wide, mesh = cache['1x1'], cache['1x8'], cache['4x2']
  assert one['per_device'] == one['total'] == wide['total'] == mesh['total']
  assert wide['specs'] == ["P('data', None, 'model', None)", 'P()']
  keys_values = one['total'] - one['index_bytes']
  assert wide['per_device'] == keys_values // 8 + one['index_bytes']
  assert mesh['per_device'] == keys_values // 8 + one['index_bytes']  # 4 row shards x 2 head shards


@pytest.mark.parametrize('source', ['scanned', 't5x_orbax'])
def test_checkpoints_restore_shard_by_shard_into_the_mesh(eight_device_decode, source):
  """t5x.load(..., partitioner, param_dtype='bfloat16') with the host-side reader
  disabled: this project's scanned MODEL_DIR (1x8) and T5X's Orbax checkpoint (4x2) come
  back sharded, in bfloat16, equal to the host read cast, and decode the same tokens."""
  run = eight_device_decode['restore'][source]
  assert run['dtypes'] == ['bfloat16'] and run['sharded'] > 0
  assert run['same_values'] and run['same_decode']
  assert run['per_device'] < run['whole'] / 1.9
  assert run['scanned'] == (source == 'scanned')  # stays stacked; decoding unstacks it


def test_meshes_that_cannot_decode_are_refused_with_their_numbers(eight_device_decode):
  errors = eight_device_decode['errors']
  assert 'model axis of size 8' in errors['heads'] and 'num_heads=4' in errors['heads']
  assert 'batch_size=6' in errors['batch'] and 'data axis of size 4' in errors['batch']
  assert 'multiple of 4' in errors['batch']

"""Run with XLA_FLAGS=--xla_force_host_platform_device_count=8: the decode of a tiny model
on several meshes against one device; prints one JSON line for the parent test."""
import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(__file__))
import train_helpers  # noqa: E402
from t5x import decoding  # noqa: E402
from t5x import model_config  # noqa: E402
from t5x import partitioning  # noqa: E402
from t5x.examples.t5.network import Transformer  # noqa: E402

# 8 heads, and vocabulary / MLP / head sizes that 8 model shards divide.
NETWORK = dict(num_heads=8, head_dim=4, emb_dim=32, mlp_dim=64, vocab_size=128)
OPTIONS = {
    'greedy': decoding.DecodeOptions(max_decode_length=12),
    'beam': decoding.DecodeOptions(decode='beam', num_decodes=3, max_decode_length=12),
    'sample': decoding.DecodeOptions(decode='sample', num_decodes=2, top_k=20, seed=7,
                                     max_decode_length=12),
}


def decode_all(model, params, tokens, partitioner):
  out = {}
  for name, options in OPTIONS.items():
    got, scores = decoding.generate(model.module, params, tokens, options,
                                    partitioner=partitioner)
    out[name] = (np.asarray(got), np.asarray(scores))
  return out


def main():
  devices = jax.devices()
  assert len(devices) == 8, devices
  rng = np.random.RandomState(0)
  tokens = rng.randint(2, 128, (6, 10)).astype(np.int32)  # 6 rows: padded to the data axis
  tokens[4, 6:] = 0
  result = {}
  # Every mesh for the plain float32 model; the scanned bfloat16 one on two of them.
  cases = [(False, 'float32', ('8x1', '4x2', '2x4', '1x8')), (True, 'bfloat16', ('4x2', '1x8'))]
  for scan, dtype, meshes in cases:
    model = train_helpers.tiny_model(scan_layers=scan, param_dtype=dtype, **NETWORK)
    params = model.init_params(jax.random.PRNGKey(0))
    want = decode_all(model, params, tokens, None)
    axes = model_config.param_axes(model.config)
    for mesh in meshes:
      part = partitioning.PjitPartitioner(int(mesh.split('x')[1]), devices=devices)
      shardings = {k: part.sharding(axes[k]) for k in axes}
      flat = model_config.flatten(decoding.place_params(model.module, params, part))
      got = decode_all(model, model_config.unflatten(flat), tokens, part)
      key = f'{"scan" if scan else "plain"}-{dtype}-{mesh}'
      result[key] = {name: {
          'same_tokens': bool(np.array_equal(got[name][0], want[name][0])),
          'score_diff': float(np.max(np.abs(got[name][1] - want[name][1])))}
          for name in OPTIONS}
      # Per-device parameter bytes, read from the arrays, against each parameter's bytes
      # divided by the mesh axes its logical axes map to.
      result[key]['param_bytes_per_device'] = sum(
          v.addressable_shards[0].data.nbytes for v in flat.values())
      result[key]['expected_param_bytes_per_device'] = sum(
          v.nbytes // int(np.prod([part.mesh.shape[a] for a in shardings[k].spec if a]))
          for k, v in flat.items())
      result[key]['param_bytes'] = sum(v.nbytes for v in flat.values())
  result['cache'] = cache_bytes(devices, tokens[:4])  # rows that every data axis divides
  result['restore'] = restore_on_a_mesh(devices)
  result['errors'] = bad_meshes(devices)
  result['infer'] = infer_on_meshes(devices)
  result['api'] = result['infer'].pop('api')
  result['infer_eval'] = infer_eval_on_a_mesh(devices)
  print('RESULT ' + json.dumps(result))


def infer_eval_on_a_mesh(devices):
  """Training's infer_eval on a 4x2 mesh against `t5x eval` of the checkpoint it saved
  (one device): their metrics, and the predictions seqio's JSON logger wrote."""
  import functools
  import gin
  import seqio
  import tempfile
  from t5x import eval as evaluation, train, utils
  from t5x_tasks import vocabularies  # noqa: F401 -- registers task_vocabulary
  gin.bind_parameter('vocabularies.task_vocabulary.name', 'quickstart')
  folder = tempfile.mkdtemp()
  task = utils.DatasetConfig('copoet_compositional', {'inputs': 32, 'targets': 16}, 'test', 8,
                             False, 0)
  evaluator = functools.partial(seqio.Evaluator, logger_cls=[seqio.JSONLogger])
  train.train(
      model=train_helpers.tiny_model(**dict(NETWORK, vocab_size=384)),
      train_dataset_cfg=utils.DatasetConfig('numpy', {}, 'train', 8, True, 0),
      partitioner=partitioning.PjitPartitioner(2, devices=devices), model_dir=folder,
      total_steps=2, get_dataset_fn=train_helpers.numpy_dataset(), show_progress=False,
      checkpoint_cfg=utils.CheckpointConfig(save=utils.SaveCheckpointConfig(
          period=2, use_async=False)),
      infer_eval_dataset_cfg=task, infer_eval_period=2, inference_evaluator_cls=evaluator,
      decode_options=decoding.DecodeOptions(max_decode_length=16))
  with open(os.path.join(folder, 'metrics.jsonl')) as f:
    during = [r for r in map(json.loads, f) if r['split'] == 'infer_eval']
  after = evaluation.evaluate(
      output_dir=os.path.join(folder, 'eval'), dataset_cfg=task,
      restore_checkpoint_cfg=utils.RestoreCheckpointConfig(os.path.join(folder, 'checkpoint_2')),
      inference_evaluator_cls=evaluator, summarize_config_fn=None,
      decode_options=decoding.DecodeOptions(max_decode_length=16))
  read = lambda path: [json.loads(line)['prediction'] for line in open(path)]
  return {
      'during': {k: v for k, v in during[-1].items() if k.startswith('copoet')},
      'after': {f'copoet_compositional/{k}': v for k, v in after[2]['copoet_compositional'].items()},
      'same_predictions': read(os.path.join(folder, 'inference_eval', 'copoet_compositional-000002.jsonl'))
      == read(os.path.join(folder, 'eval', 'copoet_compositional-000002.jsonl')),
      'predictions': len(read(os.path.join(folder, 'eval', 'copoet_compositional-000002.jsonl')))}


def _per_device(tree) -> int:
  """Bytes that the first device holds of every array of `tree`."""
  return sum(x.addressable_shards[0].data.nbytes for x in jax.tree_util.tree_leaves(tree))


def cache_bytes(devices, tokens):
  """The key/value cache of a 3-beam decode, read from its arrays on 1x1, 4x2 and 1x8."""
  model = train_helpers.tiny_model(**NETWORK)
  params = model.init_params(jax.random.PRNGKey(0))
  out = {}
  for mesh in ('1x1', '4x2', '1x8'):
    data, model_axis = map(int, mesh.split('x'))
    part = partitioning.PjitPartitioner(model_axis, devices=devices[:data * model_axis])
    cache = decoding.decode_cache(model.module, params, tokens, OPTIONS['beam'], part)
    out[mesh] = {'per_device': _per_device(cache),
                 'total': sum(x.nbytes for x in jax.tree_util.tree_leaves(cache)),
                 'index_bytes': sum(x.nbytes for x in jax.tree_util.tree_leaves(cache)
                                    if x.ndim == 0),
                 'specs': sorted({str(x.sharding.spec) for x in jax.tree_util.tree_leaves(cache)})}
  return out


def restore_on_a_mesh(devices):
  """`t5x.load(path, partitioner, 'bfloat16')` of a scanned float32 MODEL_DIR and of
  T5X's Orbax fixture: restored shard by shard (the host-side reader is disabled), cast
  while reading, and decoding as the host-read model does."""
  import tempfile
  import t5x
  from t5x import checkpoints, loader, scan_layout
  from t5x.conversion import converters
  folder = tempfile.mkdtemp()
  model = train_helpers.tiny_model(scan_layers=True, **NETWORK)
  converters.write_model_dir(folder, model.init_params(jax.random.PRNGKey(3)),
                             model.module.config)
  fixture = os.path.join(os.path.dirname(__file__), '..', '..', 'shared', 'fixtures', 't5x',
                         't5x_orbax', 'checkpoint_3')
  rng = np.random.RandomState(1)
  out = {}
  for name, path, parts in (('scanned', folder, 8), ('t5x_orbax', fixture, 2)):
    host = loader.load(path, 'bfloat16')
    whole = checkpoints.restore_target
    checkpoints.restore_target = None  # a host-side read would fail
    try:
      meshed = t5x.load(path, param_dtype='bfloat16',
                        partitioner=partitioning.PjitPartitioner(parts, devices=devices))
    finally:
      checkpoints.restore_target = whole
    flat = model_config.flatten(scan_layout.unscan_params(
        jax.device_get(meshed.params), meshed.config.param_scan_axis))
    want = model_config.flatten(host.params)
    tokens = rng.randint(2, host.config.vocab_size, (4, 8)).astype(np.int32)
    greedy = decoding.DecodeOptions(max_decode_length=8)
    out[name] = {
        'scanned': meshed.config.scan_layers,
        'dtypes': sorted({str(v.dtype) for v in jax.tree_util.tree_leaves(meshed.params)}),
        'sharded': sum(1 for v in jax.tree_util.tree_leaves(meshed.params)
                       if not v.sharding.is_fully_replicated),
        'same_values': sorted(flat) == sorted(want) and all(
            np.array_equal(np.asarray(flat[k], np.float32), np.asarray(want[k], np.float32))
            for k in want),
        'per_device': _per_device(meshed.params),
        'whole': sum(v.nbytes for v in jax.tree_util.tree_leaves(meshed.params)),
        'same_decode': bool(np.array_equal(
            decoding.generate(Transformer(meshed.config), meshed.params, tokens, greedy,
                              partitioner=meshed.partitioner)[0],
            decoding.generate(Transformer(host.config), host.params, tokens, greedy)[0]))}
  return out


def bad_meshes(devices):
  """The messages for a model axis that does not divide the heads, and for an infer batch
  size that does not divide the data axis, raised before anything compiles."""
  messages = {}
  model = train_helpers.tiny_model(**dict(NETWORK, num_heads=4, head_dim=8))
  try:
    decoding.generate(model.module, model.init_params(jax.random.PRNGKey(0)),
                      np.ones((2, 4), np.int32), partitioner=partitioning.PjitPartitioner(
                          8, devices=devices))
  except ValueError as e:
    messages['heads'] = str(e)
  try:
    decoding.check_mesh(model.module, partitioning.PjitPartitioner(2, devices=devices), 6,
                        't5x infer (utils.DatasetConfig.batch_size)')
  except ValueError as e:
    messages['batch'] = str(e)
  return messages


def _drop_scores(row: dict) -> dict:
  return {k: v for k, v in row.items() if k not in ('score', 'aux')}


def infer_on_meshes(devices):
  """`t5x infer`'s function on a prompts file, on one device and on a 4x2 mesh: per mode,
  whether the files hold the same lines, whether the decodes are, and the largest
  difference of the decodes' log-probabilities (`aux.scores`)."""
  import tempfile
  from t5x import infer, utils
  from t5x.conversion import converters
  from t5x_tasks import vocabularies
  folder = tempfile.mkdtemp()
  model = train_helpers.tiny_model(**dict(NETWORK, vocab_size=384))
  converters.write_model_dir(os.path.join(folder, 'model'),
                             model.init_params(jax.random.PRNGKey(1)), model.module.config,
                             vocabularies.QUICKSTART_SPM)
  prompts = os.path.join(folder, 'prompts.jsonl')
  with open(prompts, 'w') as f:
    for i, text in enumerate(['a poem about the sea', 'the moon', 'rain on the roof'] * 3):
      f.write(json.dumps({'inputs': text, 'targets': f'line {i}'}) + '\n')
  same = {}
  for mode in ('predict', 'score', 'predict_with_aux'):
    outputs = []
    for name, part in (('one', None), ('4x2', partitioning.PjitPartitioner(2, devices=devices))):
      paths = infer.infer(
          output_dir=os.path.join(folder, name), mode=mode, prompts_file=prompts,
          restore_checkpoint_cfg=utils.RestoreCheckpointConfig(os.path.join(folder, 'model')),
          partitioner=part, show_progress=False, summarize_config_fn=None,
          decode_options=decoding.DecodeOptions(max_decode_length=8))
      with open(paths[0], 'rb') as f:
        outputs.append([json.loads(line) for line in f.read().splitlines()])
    one, mesh = outputs
    same[mode] = {'lines': len(one), 'same_lines': one == mesh,
                  'same_predictions': [r.get('prediction') for r in one]
                  == [r.get('prediction') for r in mesh],
                  'aux_diff': max((abs(a['aux']['scores'] - b['aux']['scores'])
                                   for a, b in zip(one, mesh) if 'aux' in a), default=0.0),
                  'score_diff': max((abs(a['score'] - b['score'])
                                     for a, b in zip(one, mesh) if 'score' in a), default=0.0),
                  'same_but_scores': [_drop_scores(r) for r in one]
                  == [_drop_scores(r) for r in mesh]}
  # The notebook API on the mesh: the same texts and scores as on one device.
  import t5x
  texts = ['a poem about the sea', 'the moon', 'rain on the roof']
  plain = t5x.load(os.path.join(folder, 'model'))
  meshed = t5x.load(os.path.join(folder, 'model'),
                    partitioner=partitioning.PjitPartitioner(2, devices=devices))
  same['api'] = {
      'same_generate': plain.generate(texts, max_decode_length=8)
      == meshed.generate(texts, max_decode_length=8),
      'score_diff': float(np.max(np.abs(plain.score(texts, texts) - meshed.score(texts, texts)))),
      'sharded': sum(1 for v in jax.tree_util.tree_leaves(meshed.params)
                     if not v.sharding.is_fully_replicated)}
  return same


if __name__ == '__main__':
  main()

"""Multi-host `t5x infer` and `t5x eval` on localhost: two processes with two CPU devices
each (one 2x2 mesh across them) against one process with four, the same mesh. Process 0
writes; the files must be byte-identical."""
import json
import os
import sys

import jobs
from conftest import ENV
from test_multihost import _free_port, _result

WORKER = os.path.join(os.path.dirname(__file__), 'multihost_decode_worker.py')
TASK = ['--gin.MIXTURE_OR_TASK_NAME="copoet_compositional"',
        '--gin.TASK_FEATURE_LENGTHS={"inputs": 32, "targets": 16}', '--gin.BATCH_SIZE=8']
MESH = ['--gin.partitioning.PjitPartitioner.num_partitions=2',
        '--gin.decoding.DecodeOptions.max_decode_length=16']
# infer's outputs and eval's metrics file, relative to a run's folder.
OUTPUTS = ['predict/copoet_compositional-predict_with_aux.jsonl-00000-of-00001',
           'score/copoet_compositional-score.jsonl-00000-of-00001',
           'one/prompt-predict.jsonl-00000-of-00001',
           'eval/metrics-step0.json']


def _commands(model_dir, prompts, out):
  infer = ['infer', '--gin_file=runs/infer.gin', f'--gin.CHECKPOINT_PATH="{model_dir}"', *MESH]
  return [
      infer + [f'--gin.INFER_OUTPUT_DIR="{out}/predict"', '--gin.infer.mode="predict_with_aux"',
               *TASK],
      infer + [f'--gin.INFER_OUTPUT_DIR="{out}/score"', '--gin.infer.mode="score"', *TASK],
      # One example, two hosts: the second host's rows are all padding.
      infer + [f'--gin.INFER_OUTPUT_DIR="{out}/one"', f'--gin.PROMPTS_FILE="{prompts}"',
               '--gin.BATCH_SIZE=2'],
      ['eval', '--gin_file=runs/eval.gin', f'--gin.CHECKPOINT_PATH="{model_dir}"', *MESH, *TASK,
       f'--gin.EVAL_OUTPUT_DIR="{out}/eval"']]


@jobs.fixture(scope='module')
def decode_jobs(folder):
  model_dir, prompts = folder / 'model', folder / 'prompt.jsonl'
  prompts.write_text(json.dumps({'inputs': 'a poem about the sea'}) + '\n')
  setup = folder / 'setup.json'
  setup.write_text(json.dumps([{'write_model': str(model_dir)}]))
  assert _result(jobs.run([sys.executable, WORKER, '1', str(setup)], env=ENV,
                          timeout=300).stdout)['codes'] == [0]
  for name in ('multi', 'single'):
    (folder / f'{name}.json').write_text(json.dumps(_commands(model_dir, prompts,
                                                              folder / name)))

  def multi():
    port = _free_port()
    procs = [jobs.popen([sys.executable, WORKER, '2', str(folder / 'multi.json'),
                         f'--coordinator_address=127.0.0.1:{port}', '--process_count=2',
                         f'--process_index={i}', '--initialization_timeout=120'],
                        env=ENV, stdout=-1, stderr=-1, text=True) for i in range(2)]
    outs = [jobs.communicate(p, timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
      assert p.returncode == 0, err[-3000:]
    return [_result(out) for out, _ in outs]

  def single():
    proc = jobs.run([sys.executable, WORKER, '4', str(folder / 'single.json')], env=ENV,
                    timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return _result(proc.stdout)

  runs, reference = jobs.concurrently(multi, single)
  return folder, runs, reference


def test_every_command_succeeds_on_both_layouts(decode_jobs):
  _, runs, single = decode_jobs
  assert [r['process_index'] for r in runs] == [0, 1]
  for r in runs:
    assert r['codes'] == [0, 0, 0, 0] and r['process_count'] == 2 and r['devices'] == 4
  assert single['codes'] == [0, 0, 0, 0] and single['devices'] == 4


def test_two_processes_write_the_bytes_one_process_writes(decode_jobs):
  folder, _, _ = decode_jobs
  for name in OUTPUTS:
    multi, single = (folder / run / name for run in ('multi', 'single'))
    assert multi.read_bytes() == single.read_bytes(), name
  lines = lambda name: (folder / 'multi' / name).read_text().splitlines()
  assert len(lines(OUTPUTS[0])) == len(lines(OUTPUTS[1])) == 40  # the whole test split
  assert len(lines(OUTPUTS[2])) == 1  # the host with no example took part and wrote nothing
  predictions = [json.loads(l) for l in lines(OUTPUTS[0])]
  assert all('aux' in r and r['prediction'] for r in predictions)
  for name in OUTPUTS[:3]:
    assert (folder / 'multi' / (name + '.COMPLETED')).exists()
  metrics = json.loads((folder / 'multi' / OUTPUTS[3]).read_text())['metrics']
  assert set(metrics) == {'copoet_compositional'}

"""After training: `t5x infer` (with resume), `t5x score`, `t5x eval`, and an export
that proves itself, all on the quickstart's checkpoint."""
import json
import os

import numpy as np
import pytest
import transformers

import t5x
from t5x_cli import main as cli
from t5x.conversion import hf_export

LENGTHS = '{"inputs": 64, "targets": 64}'


def _infer(model_dir, out, *extra):
  return cli.main(['infer', '--gin_file=runs/infer.gin', f'--gin.CHECKPOINT_PATH="{model_dir}"',
                   f'--gin.INFER_OUTPUT_DIR="{out}"', *extra])


@pytest.fixture(scope='module')
def sampled_runs(quickstart, tmp_path_factory):
  """Two sampled runs of the three CoPoet test sets (the CoPoet protocol, shortened)."""
  model_dir, _ = quickstart
  out = tmp_path_factory.mktemp('infer')
  assert _infer(model_dir, out, '--gin.MIXTURE_OR_TASK_NAME="copoet"',
                f'--gin.TASK_FEATURE_LENGTHS={LENGTHS}',
                '--gin.decoding.DecodeOptions.decode="sample"', '--gin.decoding.DecodeOptions.top_k=5',
                '--gin.decoding.DecodeOptions.temperature=0.7',
                '--gin.decoding.DecodeOptions.no_repeat_ngram_size=2', '--num_runs=2') == 0
  return out


def _rows(path):
  with open(path) as f:
    return [json.loads(line) for line in f]


def test_infer_then_score_copoet(sampled_runs, capsys):
  # T5X's names: {task}-{mode}.jsonl-{shard}-of-{shards}, with a .COMPLETED marker each.
  files = sorted(str(p) for p in sampled_runs.glob('copoet_ki_ke-predict-run?.jsonl-?????-of-?????'))
  assert [os.path.basename(f) for f in files] == [
      'copoet_ki_ke-predict-run1.jsonl-00000-of-00001',
      'copoet_ki_ke-predict-run2.jsonl-00000-of-00001']
  assert all(os.path.getsize(f + '.COMPLETED') == 0 for f in files)
  runs = [_rows(f) for f in files]
  assert len(runs[0]) == len(runs[1]) == 40
  assert {'inputs', 'prediction', 'targets'} <= set(runs[0][0])
  assert [r['prediction'] for r in runs[0]] != [r['prediction'] for r in runs[1]]  # seeds differ
  assert cli.main(['score', 'copoet', '--json', *files]) == 0
  result = json.loads(capsys.readouterr().out)
  assert result['runs'] == 2 and 0.0 <= result['mean'] <= 100.0


def test_interrupted_run_continues_to_the_same_file(quickstart, sampled_runs, tmp_path):
  model_dir, _ = quickstart
  name = 'copoet_ki_ke-predict-run2.jsonl-00000-of-00001'
  whole = sampled_runs / name
  # An interrupted run: 33 complete lines and a torn one, under the in-progress name.
  lines = whole.read_text().splitlines(keepends=True)
  (tmp_path / f'{name}.partial').write_text(''.join(lines[:33]) + '{"inp')
  assert _infer(model_dir, tmp_path, '--gin.MIXTURE_OR_TASK_NAME="copoet_ki_ke"',
                f'--gin.TASK_FEATURE_LENGTHS={LENGTHS}',
                '--gin.decoding.DecodeOptions.decode="sample"', '--gin.decoding.DecodeOptions.top_k=5',
                '--gin.decoding.DecodeOptions.temperature=0.7',
                '--gin.decoding.DecodeOptions.no_repeat_ngram_size=2', '--num_runs=2') == 0
  assert (tmp_path / name).read_text() == whole.read_text()
  assert not list(tmp_path.glob('*.partial'))
  assert (tmp_path / f'{name}.COMPLETED').exists()


def test_infer_modes_as_t5x(quickstart, tmp_path):
  """T5X's infer.mode: 'score' gives the targets' log-likelihood (as the notebook API),
  'predict_with_aux' the same decodes as 'predict' plus their log-probability."""
  model_dir, _ = quickstart
  pairs = [("Write a poetic sentence about 'sea'", 'the sea sleeps beneath the silver hills.'),
           ("Write a poetic sentence about 'sea'", 'hills silver the beneath sleeps sea the.'),
           ("Write a haiku about 'moon'", 'moon over the water')]
  prompts = tmp_path / 'pairs.jsonl'
  prompts.write_text(''.join(json.dumps({'inputs': i, 'targets': t}) + '\n' for i, t in pairs))
  for mode in ('predict', 'score', 'predict_with_aux'):
    assert _infer(model_dir, tmp_path / 'out', f'--gin.PROMPTS_FILE="{prompts}"',
                  f'--gin.infer.mode="{mode}"') == 0
  read = lambda mode: _rows(tmp_path / 'out' / f'pairs-{mode}.jsonl-00000-of-00001')
  model = t5x.load(str(model_dir))
  inputs = [i for i, _ in pairs]
  scores = [r['score'] for r in read('score')]
  np.testing.assert_allclose(scores, model.score(inputs, [t for _, t in pairs]), rtol=1e-5)
  assert scores[0] > scores[1]
  predicted, with_aux = read('predict'), read('predict_with_aux')
  assert [r['prediction'] for r in with_aux] == [r['prediction'] for r in predicted]
  # The aux score is the greedy decode's log-probability: scoring the decode gives it back.
  np.testing.assert_allclose([r['aux']['scores'] for r in with_aux],
                             model.score(inputs, [r['prediction'] for r in with_aux]), rtol=1e-4)


def test_infer_shards_split_the_task_as_t5x(quickstart, sampled_runs, tmp_path):
  model_dir, _ = quickstart
  # The shard as a gin binding, or as T5X's --shard_id flag (which overrides it).
  for shard in ('--gin.infer.shard_id=0', '--shard_id=1'):
    assert _infer(model_dir, tmp_path, '--gin.MIXTURE_OR_TASK_NAME="copoet_ki_ke"',
                  f'--gin.TASK_FEATURE_LENGTHS={LENGTHS}', shard, '--gin.infer.num_shards=2',
                  '--gin.decoding.DecodeOptions.max_decode_length=4') == 0
  shards = [_rows(tmp_path / f'copoet_ki_ke-predict.jsonl-0000{k}-of-00002') for k in (0, 1)]
  whole = _rows(sampled_runs / 'copoet_ki_ke-predict-run1.jsonl-00000-of-00001')
  assert len(shards[0]) == len(shards[1]) == 20
  # SeqIO's shards of a one-file split: example i goes to shard i % 2.
  assert [r['inputs'] for r in shards[0]] == [r['inputs'] for r in whole[0::2]]
  assert [r['inputs'] for r in shards[1]] == [r['inputs'] for r in whole[1::2]]


def test_eval_applies_the_tasks_metrics(quickstart, tmp_path):
  model_dir, _ = quickstart
  assert cli.main(['eval', '--gin_file=runs/eval.gin', f'--gin.CHECKPOINT_PATH="{model_dir}"',
                   f'--gin.EVAL_OUTPUT_DIR="{tmp_path}"', '--gin.MIXTURE_OR_TASK_NAME="copoet"',
                   f'--gin.TASK_FEATURE_LENGTHS={LENGTHS}']) == 0
  result = json.loads((tmp_path / 'metrics-step800.json').read_text())
  assert set(result['metrics']) == {'copoet_ki_ke', 'copoet_ki_ue', 'copoet_compositional'}
  for metrics in result['metrics'].values():
    assert 0.0 <= metrics['success_rate'] <= 100.0
  assert list((tmp_path / 'inference_eval').rglob('events.out.tfevents.*'))
  # T5X's TASK_FEATURE_LENGTHS = None: SeqIO takes each feature's longest example.
  assert cli.main(['eval', '--gin_file=runs/eval.gin', f'--gin.CHECKPOINT_PATH="{model_dir}"',
                   f'--gin.EVAL_OUTPUT_DIR="{tmp_path / "auto"}"',
                   '--gin.MIXTURE_OR_TASK_NAME="copoet"', '--gin.TASK_FEATURE_LENGTHS=None']) == 0
  auto = json.loads((tmp_path / 'auto' / 'metrics-step800.json').read_text())
  assert set(auto['metrics']) == set(result['metrics'])


def test_export_verifies_and_matches_infer(quickstart, tmp_path, capsys):
  model_dir, _ = quickstart
  out = tmp_path / 'hf'
  assert cli.main(['export-hf', str(model_dir), str(out)]) == 0
  assert 'greedy decodes of 4 prompts token-identical' in capsys.readouterr().out
  for name in ('config.json', 'model.safetensors', 'generation_config.json', 'spiece.model',
               'tokenizer_config.json', 'README.md'):
    assert (out / name).exists(), name
  card = (out / 'README.md').read_text()
  assert 'copoet_instructions' in card and 'Steps: 800' in card
  # Refuses a non-empty folder without --force.
  assert cli.main(['export-hf', str(model_dir), str(out)]) == 2
  assert cli.main(['export-hf', str(model_dir), str(out), '--force', '--no-verify']) == 0
  # PyTorch users get the same text as `t5x infer` (greedy). transformers 5 removed the
  # "text2text-generation" pipeline; its replacement is tokenizer + generate.
  prompts = tmp_path / 'prompts.txt'
  texts = ["Write a poetic sentence about 'sea'", "Write a haiku about 'moon'",
           "Write a simile about 'love'"]
  prompts.write_text('\n'.join(texts) + '\n')
  assert _infer(model_dir, tmp_path / 'out', f'--gin.PROMPTS_FILE="{prompts}"') == 0
  ours = [r['prediction']
          for r in _rows(tmp_path / 'out' / 'prompts-predict.jsonl-00000-of-00001')]
  tokenizer = transformers.AutoTokenizer.from_pretrained(str(out))
  hf = transformers.T5ForConditionalGeneration.from_pretrained(str(out)).eval()
  batch = tokenizer(texts, return_tensors='pt', padding=True)
  generated = hf.generate(**batch, max_new_tokens=64, do_sample=False, num_beams=1)
  theirs = tokenizer.batch_decode(generated, skip_special_tokens=True)
  assert ours == theirs


def test_export_refuses_a_model_that_does_not_reproduce(quickstart, tmp_path, monkeypatch):
  model_dir, _ = quickstart
  real = hf_export.hf_convert.write_hf_files

  def corrupt(folder, params, cfg, vocab):
    params = dict(params, decoder=dict(params['decoder'], decoder_norm={
        'scale': np.asarray(params['decoder']['decoder_norm']['scale']) * 1.01}))
    real(folder, params, cfg, vocab)

  monkeypatch.setattr(hf_export.hf_convert, 'write_hf_files', corrupt)
  with pytest.raises(hf_export.VerificationError, match='logits of the export differ'):
    hf_export.export(str(model_dir), str(tmp_path / 'bad'))
  assert not (tmp_path / 'bad').exists()


def test_notebook_generate_and_score(quickstart):
  model = t5x.load(str(quickstart[0]))
  greedy = model.generate(["Write a poetic sentence about 'sea'"])
  assert isinstance(greedy[0], str) and greedy == model.generate(["Write a poetic sentence about 'sea'"])
  samples = model.generate(["Write a poetic sentence about 'sea'"], decode='sample', top_k=5,
                           num_decodes=3, seed=3)
  assert len(samples[0]) == 3
  assert samples == model.generate(["Write a poetic sentence about 'sea'"], decode='sample',
                                   top_k=5, num_decodes=3, seed=3)
  good, bad = model.score(["Write a poetic sentence about 'sea'"] * 2,
                          ['the sea sleeps beneath the silver hills.',
                           'hills silver the beneath sleeps sea the.'])
  assert good > bad


def test_eval_every_checkpoint_of_a_model_dir(quickstart, tmp_path):
  model_dir, _ = quickstart
  assert cli.main(['eval', '--gin_file=runs/eval.gin', f'--gin.CHECKPOINT_PATH="{model_dir}"',
                   f'--gin.EVAL_OUTPUT_DIR="{tmp_path}"',
                   '--gin.MIXTURE_OR_TASK_NAME="copoet_compositional"',
                   f'--gin.TASK_FEATURE_LENGTHS={LENGTHS}', '--gin.ALL_CHECKPOINTS=True']) == 0
  steps = [json.loads(line)['step'] for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  assert steps == [400, 800]


@pytest.mark.slow
def test_infer_eval_period_during_training(tmp_path):
  import gin
  import train_helpers
  from t5x import partitioning
  from t5x import train
  from t5x import utils
  from t5x_tasks import vocabularies  # noqa: F401 -- registers task_vocabulary with gin
  gin.clear_config()
  gin.bind_parameter('vocabularies.task_vocabulary.name', 'quickstart')
  try:
    cfg = utils.DatasetConfig('numpy', {}, 'train', 8, True, 0)
    infer_cfg = utils.DatasetConfig('copoet_compositional', {'inputs': 32, 'targets': 32}, 'test',
                                    8, False, 0)
    train.train(model=train_helpers.tiny_model(vocab_size=384), train_dataset_cfg=cfg,
                partitioner=partitioning.PjitPartitioner(1), model_dir=str(tmp_path),
                total_steps=4, get_dataset_fn=train_helpers.numpy_dataset(),
                checkpoint_cfg=utils.CheckpointConfig(save=None), infer_eval_dataset_cfg=infer_cfg,
                infer_eval_period=2, show_progress=False)
  finally:
    gin.clear_config()
  records = [json.loads(line) for line in (tmp_path / 'metrics.jsonl').read_text().splitlines()]
  # metrics.jsonl holds the training run's records only, one per step and split.
  assert all({'step', 'split'} <= set(r) for r in records)
  assert [r['step'] for r in records if r['split'] == 'infer_eval'] == [2, 4]
  assert not (tmp_path / 'inference_eval').exists()  # its events are the run's infer_eval/
  assert json.loads((tmp_path / 'metrics-step4.json').read_text())['metrics'][
      'copoet_compositional']['success_rate'] >= 0.0

"""New Yorker caption contest: readers, layout, SeqIO tasks, metrics and the scorer."""
import io
import json
import math
import pathlib
import shutil

import gin
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio

from t5x_tasks import caption_contest, vocabularies
from t5x_tasks import caption_contest_data as data
from t5x_tasks import caption_contest_metrics as metrics

SAMPLE = pathlib.Path(data.SAMPLE_DIR)
LENGTHS = {'inputs': 1024, 'targets': 512}


@pytest.fixture(autouse=True)
def quickstart_vocabulary(monkeypatch):
  """The bundled vocabulary (T5's public one needs the network); the sample as data."""
  monkeypatch.delenv(data.ENV_VAR, raising=False)
  gin.clear_config()
  gin.bind_parameter('vocabularies.task_vocabulary.name', 'quickstart')
  yield vocabularies.quickstart_vocabulary()
  gin.clear_config()


def _raw(kind, split, folder=SAMPLE):
  path = pathlib.Path(folder) / kind / f'{split}.jsonl'
  return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _write_predictions(path, predictions):
  path.write_text(json.dumps(predictions))
  return str(path)


# --- readers and layout -------------------------------------------------------------------

def test_sample_layout_sizes_and_fields():
  assert data.data_dir() == data.SAMPLE_DIR
  for kind in data.KINDS:
    sizes = {s: len(data.load_rows(kind, 0, s)) for s in data.SPLITS}
    assert sizes == {'train': 8, 'validation': 4, 'test': 4}
  row = data.load_rows('ranking', 0, 'test')[0]
  assert set(row) >= {'instance_id', 'from_description', 'label', 'winner_source',
                      'caption_choices', 'contest_number', 'entities'}
  # The hub's from_description format, rebuilt from the row's parts.
  matching = data.load_rows('matching', 0, 'train')[0]
  assert matching['from_description'] == data.from_description(
      'matching', matching['caption_choices'], matching['image_location'],
      matching['image_description'], matching['image_uncanny_description'],
      matching['entities'])
  assert matching['from_description'].startswith('scene: ')
  assert ' entities: ' in matching['from_description']
  assert ' choices A: ' in matching['from_description']


def test_parquet_reader_reads_only_known_columns(tmp_path):
  rows = _raw('ranking', 'test')
  table = pa.Table.from_pylist([{**r, 'image': b'\x89PNG'} for r in rows])
  (tmp_path / 'ranking').mkdir()
  pq.write_table(table, tmp_path / 'ranking' / 'test.parquet')
  got = data.load_rows('ranking', 0, 'test', str(tmp_path))
  assert [r['instance_id'] for r in got] == [r['instance_id'] for r in rows]
  assert [r['winner_source'] for r in got] == [r['winner_source'] for r in rows]
  assert 'image' not in got[0] and got[0]['caption_choices'] == rows[0]['caption_choices']
  # The hub's own shard names work too.
  (tmp_path / 'ranking_2').mkdir()
  pq.write_table(table, tmp_path / 'ranking_2' / 'test-00000-of-00001.parquet')
  assert len(data.load_rows('ranking', 2, 'test', str(tmp_path))) == len(rows)


def test_original_task_file_and_annotations(tmp_path):
  name = 'contest_matching_split=0_cleaned.json'
  original = json.loads((SAMPLE / name).read_text())
  rows = data.read_original(str(SAMPLE / name), 'matching', 'validation')
  assert len(rows) == len(original['val']) == 4
  first = original['val'][0]
  assert rows[0]['label'] == 'ABCDE'[first['correct_idx']]
  assert rows[0]['caption_choices'] == [c['clean_caption'] for c in first['choices']]
  assert rows[0]['from_description'].startswith('choices A: ')  # no annotations bundled
  # With the per-split annotations (in tasks/ and annotations_per_split/, as unzipped).
  (tmp_path / 'tasks').mkdir()
  shutil.copy(SAMPLE / name, tmp_path / 'tasks' / name)
  (tmp_path / 'annotations_per_split').mkdir()
  notes = {str(first['contest_number']): {'mturk_annotations': {
      'description_hit': [{'image_description': 'A rabbit reads.',
                           'image_uncanny_description': 'Rabbits cannot read.'}],
      'links_hit': [{'image_location': 'a burrow', 'link_1': 'https://en.wikipedia.org/wiki/Rabbit',
                     'link_2': None}]}}}
  (tmp_path / 'annotations_per_split' / 'split=0_newyorker_contest_annotations.json').write_text(
      json.dumps(notes))
  row = data.load_rows('matching', 0, 'validation', str(tmp_path))[0]
  assert row['from_description'].startswith(
      'scene: a burrow description: A rabbit reads. uncanny: Rabbits cannot read. '
      'entities: Rabbit. choices A: ')


@pytest.mark.parametrize('change, message', [
    (lambda r: r.pop('label'), 'field "label" is missing'),
    (lambda r: r.update(label='F'), 'field "label" is \'F\''),
    (lambda r: r.update(winner_source='editor'), 'field "winner_source"'),
    (lambda r: r.update(from_description=3), 'field "from_description"'),
])
def test_malformed_file_names_file_record_and_field(tmp_path, change, message):
  rows = _raw('ranking', 'test')
  change(rows[1])
  (tmp_path / 'ranking').mkdir()
  path = tmp_path / 'ranking' / 'test.jsonl'
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  with pytest.raises(ValueError, match=f'{path}:2: {message}'):
    data.load_rows('ranking', 0, 'test', str(tmp_path))


def test_malformed_original_record_and_prediction_file(tmp_path):
  path = tmp_path / 'quality_ranking_split=1_cleaned.json'
  path.write_text(json.dumps({'train': [], 'val': [], 'test': [{'A': 'x', 'contest_number': 1}]}))
  with pytest.raises(ValueError, match=r'test\[0\]: missing field "B"'):
    data.load_rows('ranking', 1, 'test', str(tmp_path))
  bad = _write_predictions(tmp_path / 'p.json', {'abc': 3})
  with pytest.raises(ValueError, match=f'{bad}: record "abc": the prediction is int'):
    metrics.read_predictions(bad)


def test_missing_data_says_how_to_configure(tmp_path):
  with pytest.raises(FileNotFoundError, match=data.ENV_VAR):
    data.load_rows('matching', 3, 'test', str(tmp_path))


def test_data_folder_from_environment_and_gin(monkeypatch, tmp_path):
  monkeypatch.setenv(data.ENV_VAR, str(tmp_path))
  assert caption_contest.data_dir() == str(tmp_path)
  gin.bind_parameter('caption_contest.data_dir.path', str(SAMPLE))  # the binding wins
  assert caption_contest.data_dir() == str(SAMPLE)


# --- SeqIO tasks --------------------------------------------------------------------------

def test_tasks_registered_for_five_splits():
  assert len(caption_contest.TASK_NAMES) == 15
  for name in ('caption_matching_split0', 'caption_ranking_split4',
               'caption_explanation_split2'):
    assert set(seqio.get_mixture_or_task(name).splits) == {'train', 'validation', 'test'}
  caption_contest.register()  # registering again replaces, never raises


@pytest.mark.parametrize('kind', data.KINDS)
def test_tasks_yield_description_and_label(kind, quickstart_vocabulary):
  task = seqio.get_mixture_or_task(f'caption_{kind}_split0')
  examples = list(task.get_dataset(LENGTHS, split='validation', shuffle=False)
                  .as_numpy_iterator())
  raw = _raw(kind, 'validation')
  assert len(examples) == len(raw) == 4
  for ex, row in zip(examples, raw):
    assert ex['inputs_pretokenized'].decode() == row['from_description']
    assert ex['targets_pretokenized'].decode() == row['label']
    assert ex['instance_id'].decode() == row['instance_id']
    assert ex['targets'][-1] == 1  # EOS
    # The quickstart vocabulary has no capital letters (they decode to ⁇), so compare
    # with what it makes of the label; the next test checks exact labels.
    expected = quickstart_vocabulary.decode(quickstart_vocabulary.encode(row['label']))
    assert quickstart_vocabulary.decode(ex['targets'].tolist()) == expected


def test_decoded_targets_are_the_labels(tmp_path):
  import sentencepiece as spm
  text = [r[f] for k in data.KINDS for s in data.SPLITS for r in _raw(k, s)
          for f in ('from_description', 'label')]
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(text), model_writer=model, vocab_size=600, hard_vocab_limit=False,
      model_type='unigram', pad_id=0, eos_id=1, unk_id=2, bos_id=-1, byte_fallback=True,
      character_coverage=1.0, minloglevel=2)
  (tmp_path / 'spiece.model').write_bytes(model.getvalue())
  gin.bind_parameter('vocabularies.task_vocabulary.sentencepiece_model_file',
                     str(tmp_path / 'spiece.model'))
  gin.bind_parameter('vocabularies.task_vocabulary.extra_ids', 0)
  vocab = seqio.SentencePieceVocabulary(str(tmp_path / 'spiece.model'), extra_ids=0)
  # A vocabulary keeps the model it first loaded: fresh tasks now and after this test.
  caption_contest.register()
  try:
    for kind in data.KINDS:
      task = seqio.get_mixture_or_task(f'caption_{kind}_split0')
      examples = task.get_dataset(LENGTHS, split='test', shuffle=False).as_numpy_iterator()
      assert [vocab.decode(ex['targets'].tolist()) for ex in examples] == [
          r['label'] for r in _raw(kind, 'test')]
  finally:
    caption_contest.register()


def test_seqio_metric_fns():
  (accuracy,) = seqio.get_mixture_or_task('caption_matching_split0').metric_fns
  assert accuracy(['A', 'C', 'E', 'B'], ['A', 'c', 'D', 'B) Stop me']) == {'accuracy': 75.0}
  (bleu_rouge,) = seqio.get_mixture_or_task('caption_explanation_split1').metric_fns
  refs = [r['label'] for r in _raw('explanation', 'test')]
  assert bleu_rouge(refs, refs) == {'bleu': pytest.approx(100.0), 'rougeL': pytest.approx(100.0)}


# --- metrics and the scorer ---------------------------------------------------------------

def test_matching_accuracy_exact(tmp_path):
  rows = data.load_rows('matching', 0, 'test')
  wrong = {'A': 'B', 'B': 'C', 'C': 'D', 'D': 'E', 'E': 'A'}
  preds = {r['instance_id']: r['label'] if i != 2 else wrong[r['label']]
           for i, r in enumerate(rows)}
  result = metrics.score('matching', [_write_predictions(tmp_path / 'm.json', preds)])
  assert result['splits'][0] == {'accuracy': 75.0, 'n': 4}
  assert result['mean'] == {'accuracy': 75.0, 'n': 4}
  assert 'split 0: accuracy=75.00  n=4' in metrics.format_report(result)


def test_ranking_accuracy_nyacc_crowdacc(tmp_path):
  # Six hand-made pairs: official winners 1 of 2 right, crowd winners 3 of 4 right.
  sources = ['official_winner'] * 2 + ['crowd_winner'] * 4
  rows = [{'instance_id': f'r{i}', 'from_description': f'choices A: a{i} B: b{i}',
           'label': 'AB'[i % 2], 'winner_source': s} for i, s in enumerate(sources)]
  (tmp_path / 'ranking').mkdir()
  (tmp_path / 'ranking' / 'test.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
  preds = {'r0': 'A', 'r1': 'A', 'r2': 'A', 'r3': 'B', 'r4': 'A', 'r5': 'A'}
  path = _write_predictions(tmp_path / 'ranking_preds.json', preds)
  result = metrics.score('ranking', [path], str(tmp_path))
  assert result['splits'][0] == {'accuracy': pytest.approx(400 / 6), 'n': 6, 'nyacc': 50.0,
                                 'n_ny': 2, 'crowdacc': 75.0, 'n_crowd': 4}
  report = metrics.format_report(result)
  assert 'nyacc=50.00' in report and 'crowdacc=75.00' in report


def test_explanation_bleu_and_rouge_match_the_libraries(tmp_path):
  import sacrebleu
  from rouge_score import rouge_scorer
  rows = data.load_rows('explanation', 0, 'test')
  hyps = ['The joke is that the guru sells wisdom like a snack.',
          'An octopus has eight arms so it can read many newspapers at once.',
          'The x-ray shows a house, so he is at home in his body.',
          'A shark watching swimmers is a warning, not praise.']
  preds = {r['instance_id']: h for r, h in zip(rows, hyps)}
  result = metrics.score('explanation', [_write_predictions(tmp_path / 'e.json', preds)],
                         mode='lenient')
  refs = [r['label'] for r in rows]
  expected_bleu = sacrebleu.corpus_bleu(hyps, [refs]).score
  scorer = rouge_scorer.RougeScorer(['rougeL'], use_stemmer=True)
  expected_rouge = 100 * sum(scorer.score(r, h)['rougeL'].fmeasure
                             for r, h in zip(refs, hyps)) / len(refs)
  split = result['splits'][0]
  assert 0 < split['bleu'] < 100 and 0 < split['rougeL'] < 100
  assert split['bleu'] == pytest.approx(expected_bleu)
  assert split['rougeL'] == pytest.approx(expected_rouge)
  assert split['n'] == 4 and split['n_empty'] == 0


def test_id_mismatch_lists_missing_and_extra(tmp_path):
  rows = data.load_rows('matching', 0, 'test')
  preds = {r['instance_id']: 'A' for r in rows[1:]}
  preds.update({'zzz_extra1': 'A', 'zzz_extra2': 'B'})
  path = _write_predictions(tmp_path / 'preds_split0.json', preds)
  with pytest.raises(ValueError) as error:
    metrics.score('matching', [path], mode='lenient')
  message = str(error.value)
  assert path in message and 'matching test (split 0)' in message
  assert f'1 of 4 reference ids missing ({rows[0]["instance_id"]})' in message
  assert '2 extra ids not in the references (zzz_extra1, zzz_extra2)' in message


def test_split_from_file_name_or_position():
  assert metrics.split_of('/x/model=t5~task=matching~split=3.json', 0) == 3
  assert metrics.split_of('preds_split4.json', 0) == 4
  assert metrics.split_of('Split_2.json', 0) == 2
  assert metrics.split_of('preds.json', 1) == 1


def test_mean_over_two_splits(tmp_path):
  # Split 1: a copy of the sample's matching data as config matching_1.
  for config in ('matching', 'matching_1'):
    shutil.copytree(SAMPLE / 'matching', tmp_path / config)
  rows = data.load_rows('matching', 0, 'test')
  all_right = {r['instance_id']: r['label'] for r in rows}
  half_right = {r['instance_id']: r['label'] if i < 2 else 'X' for i, r in enumerate(rows)}
  first = _write_predictions(tmp_path / 'a.json', all_right)  # split 0 by position
  second = _write_predictions(tmp_path / 'b.json', half_right)  # split 1 by position
  result = metrics.score('matching', [first, second], str(tmp_path), mode='lenient')
  assert result['splits'] == {0: {'accuracy': 100.0, 'n': 4}, 1: {'accuracy': 50.0, 'n': 4}}
  assert result['mean'] == {'accuracy': 75.0, 'n': 8}
  assert 'mean over 2 split(s): accuracy=75.00  n=8' in metrics.format_report(result)
  with pytest.raises(ValueError, match='both split 0'):
    metrics.score('matching', [first, str(tmp_path / 'x_split=0.json')], str(tmp_path),
                  mode='lenient')


# --- paper mode (the official eval_crossval.py) vs lenient mode ---------------------------

def _write_rows(folder, config, rows):
  """A hand-made test split of one hub config in the JSON Lines layout."""
  (folder / config).mkdir(parents=True)
  (folder / config / 'test.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))


def _run_cli(argv, capsys):
  from t5x_cli import main as cli
  assert cli.main(['score', 'caption'] + argv + ['--json']) == 0
  return json.loads(capsys.readouterr().out)


def test_paper_mode_compares_raw_letters(tmp_path, capsys):
  rows = data.load_rows('matching', 0, 'test')
  labels = [r['label'] for r in rows]
  # Right, lowercase, trailing space, letter with its caption: only the first equals its
  # label as a string (the official comparison); all four read as the label when lenient.
  answers = [labels[0], labels[1].lower(), labels[2] + ' ', labels[3] + ') the caption']
  path = _write_predictions(tmp_path / 'split=0.json',
                            {r['instance_id']: a for r, a in zip(rows, answers)})
  assert metrics.score('matching', [path])['splits'][0] == {'accuracy': 25.0, 'n': 4}
  assert metrics.score('matching', [path], mode='lenient')['splits'][0] == {
      'accuracy': 100.0, 'n': 4}
  # The command line defaults to paper mode.
  assert _run_cli(['--task', 'matching', '--predictions', path], capsys)['mean'] == {
      'accuracy': 25.0, 'n': 4}
  assert _run_cli(['--task', 'matching', '--predictions', path, '--mode', 'lenient'],
                  capsys)['mean'] == {'accuracy': 100.0, 'n': 4}
  with pytest.raises(ValueError, match="unknown mode 'strict'; modes: paper, lenient"):
    metrics.score('matching', [path], mode='strict')


def test_paper_mode_nyacc_nan_without_official_winners(tmp_path, capsys):
  # Splits 0-3: an official-winner pair (label A) and a crowd-winner pair (label B); split 4:
  # two crowd-winner pairs. One file predicts all of them.
  preds = {}
  for fold in range(5):
    sources = ['official_winner', 'crowd_winner'] if fold < 4 else ['crowd_winner'] * 2
    rows = [{'instance_id': f's{fold}r{i}', 'from_description': f'choices A: a B: b {i}',
             'label': 'AB'[i], 'winner_source': s} for i, s in enumerate(sources)]
    _write_rows(tmp_path, data.config_name('ranking', fold), rows)
    # Official pairs right in splits 0-1, wrong in 2-3; crowd pairs right but s4r1.
    preds[f's{fold}r0'] = 'A' if fold in (0, 1, 4) else 'B'
    preds[f's{fold}r1'] = 'A' if fold == 4 else 'B'
  path = _write_predictions(tmp_path / 'all_splits.json', preds)
  result = metrics.score('ranking', [path], str(tmp_path))
  split4 = result['splits'][4]
  assert (split4['accuracy'], split4['crowdacc'], split4['n_ny']) == (50.0, 50.0, 0)
  assert math.isnan(split4['nyacc'])
  # Per split: accuracy 100 100 50 50 50, NYAcc 100 100 0 0 nan, CrowdAcc 100 100 100 100 50;
  # the mean is numpy's, so nan stays nan.
  mean = result['mean']
  assert (mean['accuracy'], mean['crowdacc']) == (70.0, 90.0)
  assert math.isnan(mean['nyacc'])
  assert (mean['n'], mean['n_ny'], mean['n_crowd']) == (10, 4, 6)
  report = metrics.format_report(result)
  assert 'split 4: accuracy=50.00  n=2  nyacc=nan' in report
  assert 'mean over 5 split(s): accuracy=70.00  n=10  nyacc=nan' in report
  # JSON has no NaN: the command line writes null.
  printed = _run_cli(['--task', 'ranking', '--predictions', path, '--data', str(tmp_path)],
                     capsys)
  assert printed['mean']['nyacc'] is None and printed['splits']['4']['nyacc'] is None
  # Lenient: split 4 has no NYAcc and the mean leaves it out: (100 + 100 + 0 + 0) / 4.
  per_split = []
  for fold in range(5):
    ids = [f's{fold}r0', f's{fold}r1']
    per_split.append(_write_predictions(tmp_path / f'split={fold}.json',
                                        {i: preds[i] for i in ids}))
  lenient = metrics.score('ranking', per_split, str(tmp_path), mode='lenient')
  assert lenient['splits'][4]['nyacc'] is None
  assert lenient['mean'] == {'accuracy': 70.0, 'n': 10, 'nyacc': 50.0, 'n_ny': 4,
                             'crowdacc': 90.0, 'n_crowd': 6}


def test_paper_mode_takes_one_file_for_several_splits(tmp_path):
  rows = _raw('matching', 'test')
  _write_rows(tmp_path, 'matching', rows)
  _write_rows(tmp_path, 'matching_1', [{**r, 'instance_id': 'b' + r['instance_id']}
                                      for r in rows])
  # Split 0 all right, split 1 the first two right (the others get a wrong letter).
  wrong = {'A': 'B', 'B': 'C', 'C': 'D', 'D': 'E', 'E': 'A'}
  preds = {r['instance_id']: r['label'] for r in rows}
  preds.update({'b' + r['instance_id']: r['label'] if i < 2 else wrong[r['label']]
                for i, r in enumerate(rows)})
  preds['not_in_any_split'] = 'A'
  path = _write_predictions(tmp_path / 'everything.json', preds)
  result = metrics.score('matching', [path], str(tmp_path))
  assert result['splits'] == {0: {'accuracy': 100.0, 'n': 4}, 1: {'accuracy': 50.0, 'n': 4}}
  assert result['mean'] == {'accuracy': 75.0, 'n': 8}
  assert result['files'] == {0: path, 1: path} and result['n_unused'] == 1
  assert set(result['skipped']) == {2, 3, 4}
  assert result['skipped'][2].startswith(f'no matching_2 test data in {tmp_path}')
  report = metrics.format_report(result)
  assert 'split 3: skipped, no matching_3 test data' in report
  assert "1 predicted ids are in no scored split's references and were ignored." in report
  # Lenient takes the file as split 0 and refuses its 5 other ids.
  with pytest.raises(ValueError, match=r'5 extra ids not in the references \(b'):
    metrics.score('matching', [path], str(tmp_path), mode='lenient')
  # A split missing a prediction is skipped, as the official script does, and said.
  del preds['b' + rows[3]['instance_id']]
  partial = _write_predictions(tmp_path / 'partial.json', preds)
  result = metrics.score('matching', [partial], str(tmp_path))
  assert result['splits'] == {0: {'accuracy': 100.0, 'n': 4}} and result['files'] == {0: partial}
  assert result['skipped'][1] == f'missing 1/4 predictions (b{rows[3]["instance_id"]})'
  # When no split can be scored, it is an error that says why, split by split.
  with pytest.raises(ValueError, match=r'no matching split could be scored: split 0: '
                     r'missing 4/4 predictions'):
    metrics.score('matching', [_write_predictions(tmp_path / 'p3.json', {'x': 'A'})],
                  str(tmp_path))


def test_paper_rouge_l_unstemmed_bootstrap_and_empty_predictions(tmp_path):
  import numpy as np
  import sacrebleu
  refs = ['the cats are running', 'He is laughing at the Dog', 'a fish rides a bicycle', 'ok']
  hyps = ['a cat runs', 'the dog is laughing', 'the fish is riding a bike', '']
  # rouge_score lowercases and keeps a-z0-9 runs; Porter stemming (lenient) only for words
  # over 3 letters. LCS lengths, F = 2 * LCS / (len(ref) + len(hyp)):
  #   1: [the cats are running] / [a cat runs]: LCS 0 -> 0; stemmed [the cat are run] /
  #      [a cat run]: LCS 2 -> 4/7.
  #   2: [he is laughing at the dog] / [the dog is laughing]: LCS 2 (is laughing) -> 2/5,
  #      the same stemmed.
  #   3: [a fish rides a bicycle] / [the fish is riding a bike]: LCS 2 (fish a) -> 4/11;
  #      stemmed ride/ride also match: LCS 3 -> 6/11.
  assert metrics.rouge_l(refs[2:3], hyps[2:3]) == pytest.approx(400 / 11, abs=1e-9)
  assert metrics.rouge_l(refs[2:3], hyps[2:3], 'lenient') == pytest.approx(600 / 11, abs=1e-9)
  # Paper ROUGE-L is the median of 1000 bootstrap means. For two examples (0 and 2/5) each
  # mean is 0, 1/5 or 2/5 with chances 1/4, 1/2, 1/4: the median is 1/5 (its 500th and
  # 501st values are 1/5 unless one end draws over half the samples).
  state = np.random.get_state()
  assert metrics.rouge_l(refs[:2], hyps[:2]) == pytest.approx(20.0, abs=1e-9)
  assert metrics.rouge_l(refs[:2], hyps[:2], 'lenient') == pytest.approx(
      100 * (4 / 7 + 2 / 5) / 2, abs=1e-9)
  after = np.random.get_state()  # the global generator is left as it was
  assert state[0] == after[0] and (state[1] == after[1]).all() and state[2:] == after[2:]
  # With more examples the median is no longer the mean: it is rouge_score's aggregator
  # drawing after np.random.seed(1), as eval_crossval.py seeds it.
  from rouge_score import rouge_scorer, scoring
  more_refs = refs[:3] + ['a dog at the bar', 'the king wants his crown back',
                          'two birds on one wire']
  more_hyps = hyps[:3] + ['the dog walks into a bar', 'his crown is lost', 'birds sit on a wire']
  scorer = rouge_scorer.RougeScorer(['rougeL'])
  aggregator = scoring.BootstrapAggregator()
  for r, h in zip(more_refs, more_hyps):
    aggregator.add_scores(scorer.score(r, h))
  np.random.seed(1)
  expected = 100 * aggregator.aggregate()['rougeL'].mid.fmeasure
  np.random.set_state(state)
  plain_mean = 100 * (0 + 2 / 5 + 4 / 11 + 4 / 11 + 2 / 5 + 3 / 5) / 6  # LCS 2, 2, 2, 3
  assert metrics.rouge_l(more_refs, more_hyps) == expected != pytest.approx(plain_mean)
  # Through the scorer: split 0 = examples 1-2, split 1 = examples 3-4 (4 is empty).
  for fold, pairs in ((0, [0, 1]), (1, [2, 3])):
    _write_rows(tmp_path, data.config_name('explanation', fold), [
        {'instance_id': f'e{i}', 'from_description': f'caption: {i}', 'label': refs[i]}
        for i in pairs])
  files = [_write_predictions(tmp_path / f'split={k}.json', {f'e{i}': hyps[i] for i in pairs})
           for k, pairs in enumerate(([0, 1], [2, 3]))]
  paper = metrics.score('explanation', files, str(tmp_path))
  lenient = metrics.score('explanation', files, str(tmp_path), mode='lenient')
  # The official script skips a split with an empty prediction; lenient scores it as 0.
  assert list(paper['splits']) == [0]
  assert paper['skipped'][1].startswith('1 empty predictions; the official script skips')
  assert paper['mean']['rougeL'] == pytest.approx(20.0, abs=1e-9)
  assert lenient['splits'][1]['n_empty'] == 1
  assert lenient['splits'][1]['rougeL'] == pytest.approx(100 * (6 / 11 + 0) / 2, abs=1e-9)
  assert lenient['mean']['rougeL'] == pytest.approx(
      100 * ((4 / 7 + 2 / 5) / 2 + (6 / 11) / 2) / 2, abs=1e-9)
  # BLEU is evaluate's sacrebleu defaults (case kept) in both modes.
  bleu0 = sacrebleu.corpus_bleu(hyps[:2], [refs[:2]]).score
  assert paper['splits'][0]['bleu'] == lenient['splits'][0]['bleu'] == bleu0

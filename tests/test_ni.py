"""Super-NaturalInstructions: prep, Tk-Instruct's encodings, the SeqIO tasks, the scorer."""
import errno
import json
import os
import pathlib
import warnings

import gin
import pytest
import seqio
from rouge_score import rouge_scorer

from t5x import fs_utils
from t5x_cli import main as cli
from t5x_tasks import ni, ni_data, ni_metrics

ROOT = pathlib.Path(__file__).resolve().parents[1]
RAW_SAMPLE = ROOT / 't5x_tasks' / 'data' / 'ni_raw_sample'
LENGTHS = {'inputs': 1024, 'targets': 64}
TEST_TASKS = ['task033_winogrande_answer_generation', 'task039_qasc_find_overlapping_words',
              'task1154_bard_analogical_reasoning_travel',
              'task1159_bard_analogical_reasoning_containers', 'task1664_winobias_text_generation']
LEGACY = 'task1159_bard_analogical_reasoning_containers'


@pytest.fixture(autouse=True)
def quickstart_vocabulary():
  """The bundled vocabulary (T5's public one needs the network)."""
  gin.clear_config()
  gin.bind_parameter('vocabularies.task_vocabulary.name', 'quickstart')
  yield
  gin.clear_config()


@pytest.fixture(scope='module')
def shared_prep(shared_dir, tmp_path_factory):
  """prep() of the fixtures in ../shared (6 of the 875 listed tasks exist there)."""
  out = tmp_path_factory.mktemp('ni_prep')
  with warnings.catch_warnings():
    warnings.simplefilter('ignore', UserWarning)
    summary = _prep(shared_dir / 'data' / 'natural_instructions', out)
  return out, summary


def _prep(data_dir, out_dir, **kwargs):
  """prep() with its keywords, written as `t5x prep ni` writes it (all three files or none)."""
  result = ni_data.prep(str(data_dir), **kwargs)
  fs_utils.write_files({os.path.join(out_dir, name): lines
                        for name, lines in ni_data.output_lines(result).items()})
  return result


def _lines(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def _examples(task_name, split):
  task = seqio.get_mixture_or_task(task_name)
  return list(task.get_dataset(LENGTHS, split=split, shuffle=False).as_numpy_iterator())


# ---------------------------------------------------------------------------------------------
# Encodings

def test_def_pos2_encoding_of_a_real_task(shared_prep, monkeypatch):
  out, _ = shared_prep
  monkeypatch.setenv(ni.ENV_VAR, str(out))
  examples = {ex['id'].decode(): ex for ex in _examples('ni_def_pos2', 'train')}
  ex = examples['task1146-caea1179adc149ffb2a3ecb2ea3abefc']  # the file's first instance
  # Built by hand from Tk-Instruct's template: "." added where the text lacks punctuation.
  expected = (
      'Definition: In this task, you are given a country name and you need to return the '
      'capital city of the given country' + '.' + '\n\n'
      + ' Positive Example 1 -\n' + 'Input: United States' + '.' + '\n'
      + ' Output: Washington' + '.' + '\n' + '\n'
      + ' Positive Example 2 -\n' + 'Input: India' + '.' + '\n'
      + ' Output: New Delhi' + '.' + '\n' + '\n'
      + 'Now complete the following example -\n' + 'Input: Afghanistan' + '.' + '\n'
      + 'Output: ')
  assert ex['inputs_pretokenized'].decode() == expected
  assert ex['targets_pretokenized'].decode() == 'Kabul'
  assert ex['inputs'][-1] == 1  # EOS


def _record():
  return {'definition': ' Say it again ',
          'positive_examples': [{'input': 'Why?', 'output': 'Because!', 'explanation': 'Echo'},
                                {'input': 'b', 'output': 'b'}],
          'negative_examples': [{'input': 'c', 'output': 'd', 'explanation': 'Not c.'},
                                {'input': 'e', 'output': 'f'}],
          'input': ' x '}


DEF = 'Definition: Say it again.\n\n'
POS1 = ' Positive Example 1 -\nInput: Why?\n Output: Because!\n\n'
POS1_EXPL = ' Positive Example 1 -\nInput: Why?\n Output: Because!\n Explanation: Echo.\n\n'
POS2 = ' Positive Example 2 -\nInput: b.\n Output: b.\n\n'
NEG1 = ' Negative Example 1 -\nInput: c.\n Output: d.\n\n'
NEG2 = ' Negative Example 2 -\nInput: e.\n Output: f.\n\n'
INSTANCE = 'Now complete the following example -\nInput: x.\nOutput: '


def test_encodings_without_a_length_limit():
  record = _record()
  assert ni.build_source(record, 'def') == DEF + INSTANCE
  assert ni.build_source(record, 'pos2') == POS1 + POS2 + INSTANCE
  assert ni.build_source(record, 'def_pos2') == DEF + POS1 + POS2 + INSTANCE
  assert ni.build_source(record, 'def_pos2_neg2') == DEF + POS1 + POS2 + NEG1 + NEG2 + INSTANCE
  assert ni.build_source(record, 'def_pos2_expl') == DEF + POS1_EXPL + POS2 + INSTANCE


def test_examples_are_dropped_greedily_with_a_small_length():
  record, count = _record(), len  # one "token" per character
  # Room for the first positive example only: the second is dropped, the instance kept.
  limit = len(DEF + POS1 + INSTANCE)
  assert ni.build_source(record, 'def_pos2', count, limit) == DEF + POS1 + INSTANCE
  assert ni.build_source(record, 'def_pos2', count, limit - 1) == DEF + INSTANCE
  # Negatives are measured after the positives kept, joined by a space as Tk-Instruct does.
  limit = len(DEF + POS1 + ' ' + POS2 + NEG1 + INSTANCE)
  assert ni.build_source(record, 'def_pos2_neg2', count, limit) == (
      DEF + POS1 + POS2 + NEG1 + INSTANCE)
  assert ni.build_source(record, 'def_pos2_neg2', count, limit - 1) == DEF + POS1 + POS2 + INSTANCE
  # The instance is always there, even when nothing fits.
  assert ni.build_source(record, 'def_pos2_neg2', count, 1) == DEF + INSTANCE


# ---------------------------------------------------------------------------------------------
# prep

def _write_task(path, **fields):
  task = {'Definition': ['Echo the input.'], 'Positive Examples': [], 'Negative Examples': [],
          'Categories': ['Misc.'],
          'Instances': [{'id': 't-1', 'input': 'a', 'output': ['a']}]}
  task.update(fields)
  task = {k: v for k, v in task.items() if v is not None}
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(task), encoding='utf-8')


def _splits(root, train=(), test=()):
  split_dir = root / 'splits' / 'default'
  split_dir.mkdir(parents=True, exist_ok=True)
  (split_dir / 'train_tasks.txt').write_text(''.join(f'{t}\n' for t in train))
  (split_dir / 'test_tasks.txt').write_text(''.join(f'{t}\n' for t in test))


def test_prep_of_the_shared_fixtures(shared_prep, shared_dir):
  out, summary = shared_prep
  assert summary['tasks'] == {'train': 1, 'test': 5}
  assert len(summary['missing']) == 119 + 756 - 6
  test = _lines(out / 'test.jsonl')
  counts = {t: sum(r['task_id'] == t for r in test) for t in TEST_TASKS}
  assert counts == {t: 100 for t in TEST_TASKS}  # the cap; the fixtures hold 100 each
  train = _lines(out / 'train.jsonl')
  assert len(train) == 100 and {r['task_id'] for r in train} == {'task1146_country_capital'}
  assert all(r['track'] == 'default' for r in test + train)
  references = _lines(out / 'references.jsonl')
  assert [r['id'] for r in references] == [r['id'] for r in test]
  assert set(references[0]) == {'id', 'task_id', 'task_category', 'references', 'track'}
  raw = json.loads((shared_dir / 'data' / 'natural_instructions' / 'tasks' /
                    'task039_qasc_find_overlapping_words.json').read_text())
  first = next(r for r in references if r['task_id'] == 'task039_qasc_find_overlapping_words')
  assert first == {'id': raw['Instances'][0]['id'],
                   'task_id': 'task039_qasc_find_overlapping_words',
                   'task_category': 'Overlap Extraction',
                   'references': raw['Instances'][0]['output'], 'track': 'default'}


def test_prep_caps_and_reports_missing_tasks(shared_dir, tmp_path):
  data = shared_dir / 'data' / 'natural_instructions'
  with pytest.warns(UserWarning, match=r'869 task\(s\) listed .* missing .*task547_alt'):
    _prep(data, tmp_path / 'a', max_train_instances=30, max_test_instances=10)
  test = _lines(tmp_path / 'a' / 'test.jsonl')
  raw = json.loads((data / 'tasks' / f'{TEST_TASKS[0]}.json').read_text())
  assert [r['id'] for r in test if r['task_id'] == TEST_TASKS[0]] == [
      i['id'] for i in raw['Instances'][:10]]  # the first ten
  train = _lines(tmp_path / 'a' / 'train.jsonl')
  assert len(train) == 30
  with pytest.warns(UserWarning):
    _prep(data, tmp_path / 'b', max_train_instances=30, max_test_instances=10)
  assert _lines(tmp_path / 'b' / 'train.jsonl') == train  # a seeded draw
  with pytest.raises(FileNotFoundError, match='task547_alt_translation_entk_en'):
    _prep(data, tmp_path / 'c', strict=True)
  assert not (tmp_path / 'c').exists()


def test_legacy_schema_preps_with_stable_ids(shared_dir, tmp_path):
  legacy = shared_dir / 'data' / 'natural_instructions' / 'tasks_legacy' / f'{LEGACY}.json'
  raw = json.loads(legacy.read_text())
  assert isinstance(raw['Definition'], str) and 'id' not in raw['Instances'][0]
  (tmp_path / 'data' / 'tasks').mkdir(parents=True)
  os.symlink(legacy, tmp_path / 'data' / 'tasks' / f'{LEGACY}.json')  # read in place
  _splits(tmp_path / 'data', test=[LEGACY])
  ids = []
  for run in ('a', 'b'):
    _prep(tmp_path / 'data', tmp_path / run)
    test = _lines(tmp_path / run / 'test.jsonl')
    ids.append([r['id'] for r in test])
  assert ids[0] == ids[1] == [f'{LEGACY}-{i}' for i in range(100)]
  assert test[0]['definition'] == raw['Definition']
  assert test[0]['input'] == 'jam : jar. potatoes : ?' and test[0]['references'] == ['sack']
  assert test[0]['task_category'] == 'Answer Generation'


def test_missing_instances_names_file_and_field(tmp_path):
  _write_task(tmp_path / 'tasks' / 'task1_bad.json', Instances=None)
  _splits(tmp_path, test=['task1_bad'])
  with pytest.raises(ValueError, match=r'task1_bad\.json: missing field "Instances"'):
    _prep(tmp_path, tmp_path / 'out')
  assert not (tmp_path / 'out').exists() or not os.listdir(tmp_path / 'out')
  _write_task(tmp_path / 'tasks' / 'task1_bad.json',
              Instances=[{'id': 'x', 'input': 'a', 'output': 3}])
  with pytest.raises(ValueError, match=r'task1_bad\.json: field "Instances\[0\]\.output"'):
    ni_data.read_task(str(tmp_path / 'tasks' / 'task1_bad.json'))


def test_task121_is_renamed(tmp_path):
  assert ni_data.canonical_task_name('task121_atomic_question_rewriting') == (
      'task121_zest_question_rewriting')
  assert ni_data.canonical_task_name('task121_zest_text_modification') == (
      'task121_zest_text_modification')
  _write_task(tmp_path / 'tasks' / 'task121_atomic_question_rewriting.json',
              Instances=[{'input': 'q', 'output': ['r']}])
  task = ni_data.read_task(str(tmp_path / 'tasks' / 'task121_atomic_question_rewriting.json'))
  assert task['task_id'] == 'task121_zest_question_rewriting'
  assert task['instances'][0]['id'] == 'task121_zest_question_rewriting-0'


def test_bundled_sample_is_the_prep_of_the_raw_sample(tmp_path, capsys):
  assert cli.main(['prep', 'ni', '--data', str(RAW_SAMPLE), '--out', str(tmp_path)]) == 0
  for name in ('train.jsonl', 'test.jsonl', 'references.jsonl'):
    assert (tmp_path / name).read_bytes() == (pathlib.Path(ni.SAMPLE_DIR) / name).read_bytes()
  result = ni_data.prep(str(RAW_SAMPLE))
  assert capsys.readouterr().out.startswith(
      f"wrote {tmp_path}: {result['train']} train instances ({result['tasks']['train']} tasks), "
      f"{result['test']} test instances")


def test_a_failed_prep_leaves_all_three_earlier_files(tmp_path, monkeypatch, capsys):
  assert cli.main(['prep', 'ni', '--data', str(RAW_SAMPLE), '--out', str(tmp_path)]) == 0
  before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
  synced = []
  real_fsync = os.fsync

  def full_at_the_third_file(fd):  # train and test are written whole, then the disk fills
    synced.append(fd)
    if len(synced) == 3:
      raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    return real_fsync(fd)

  monkeypatch.setattr(fs_utils.os, 'fsync', full_at_the_third_file)
  capsys.readouterr()
  assert cli.main(['prep', 'ni', '--data', str(RAW_SAMPLE), '--out', str(tmp_path),
                   '--max_test_instances', '1']) == 2
  assert capsys.readouterr().err.strip().endswith(
      f"{tmp_path / 'references.jsonl'}: No space left on device")
  assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before  # no temporaries


# ---------------------------------------------------------------------------------------------
# SeqIO tasks

def test_tasks_load_from_the_bundled_sample(monkeypatch):
  monkeypatch.delenv(ni.ENV_VAR, raising=False)
  assert ni.data_dir() == ni.SAMPLE_DIR
  sample_test = pathlib.Path(ni.SAMPLE_DIR) / 'test.jsonl'
  references = {r['id']: r['references'] for r in _lines(sample_test)}
  for name in ni.TASK_NAMES:
    for split in ni.SPLITS:
      assert len(_examples(name, split)) == 20, (name, split)
  task = seqio.get_mixture_or_task('ni_def_pos2_neg2')
  examples = _examples('ni_def_pos2_neg2', 'test')
  for ex in examples:
    target = task.postprocess_fn(ex['targets_pretokenized'], example=ex, is_target=True)
    assert target['references'] == references[target['id']]
    assert ex['targets_pretokenized'].decode() in target['references']
    assert ' Negative Example 2 -\n' in ex['inputs_pretokenized'].decode()
  targets = [task.postprocess_fn(ex['targets_pretokenized'], example=ex, is_target=True)
             for ex in examples]
  (metric,) = task.metric_fns
  scores = metric(targets, [t['references'][-1] for t in targets])
  assert scores['exact_match'] == scores['rougeL_for_title_generation'] == 100.0


def test_tk_instruct_is_deterministic(monkeypatch):
  monkeypatch.delenv(ni.ENV_VAR, raising=False)
  first = _examples('ni_tk_instruct', 'train')
  second = _examples('ni_tk_instruct', 'train')
  assert [(e['inputs_pretokenized'], e['targets_pretokenized']) for e in first] == [
      (e['inputs_pretokenized'], e['targets_pretokenized']) for e in second]
  encodings = [e['encoding'].decode() for e in first]
  assert encodings == [ni.choose_encoding(e['id'].decode()) for e in first]
  assert len(set(encodings)) >= 3  # a per-instance choice, not one encoding
  for ex in first:  # each source is the one its encoding gives
    record = next(r for r in ni.read_records('train') if r['id'] == ex['id'].decode())
    assert ex['inputs_pretokenized'].decode() == ni.build_source(record, ex['encoding'].decode())


# ---------------------------------------------------------------------------------------------
# Metric and scorer

def test_exact_match_normalisation():
  assert ni_metrics.normalize_answer('  The  Cat,\tsat! ') == 'the cat sat'
  assert ni_metrics.exact_match('The cat.', 'the   CAT') == 1.0
  assert ni_metrics.exact_match('a cat', 'cat') == 0.0  # articles are kept
  assert ni_metrics.exact_match("don't", 'dont') == 1.0


def test_rouge_l_values():
  # LCS "the cat sat" = 3 of 3 predicted and 6 reference tokens: F = 2 * 1 * 0.5 / 1.5.
  assert ni_metrics.rouge_l('the cat sat', 'the cat sat on the mat') == pytest.approx(2 / 3)
  assert ni_metrics.rouge_l('Cats running', 'cat runs') == 1.0  # Porter stemming
  scorer = rouge_scorer.RougeScorer(['rougeL'], use_stemmer=True)
  for prediction, reference in [('a dog barked loudly', 'the dog barked'),
                                ('New Delhi, India', 'new delhi')]:
    expected = scorer.score(reference, prediction)['rougeL'].fmeasure
    assert ni_metrics.rouge_l(prediction, reference) == pytest.approx(expected)


def _refs():
  return [
      {'id': '1', 'task_id': 'taskA', 'task_category': 'Word Analogy',
       'references': ['bottle', 'jar'], 'track': 'default'},
      {'id': '2', 'task_id': 'taskA', 'task_category': 'Word Analogy',
       'references': ['sack'], 'track': 'default'},
      {'id': '3', 'task_id': 'taskB', 'task_category': 'Title Generation',
       'references': ['the cat sat on the mat', 'a cat'], 'track': 'default'},
      {'id': '4', 'task_id': 'taskC', 'task_category': 'Misc.',
       'references': ['x'], 'track': 'default'},
  ]


def test_score_takes_the_max_over_references_and_reports_official_metrics():
  predictions = {'1': 'Jar.', '2': 'bag', '3': 'the cat sat', '4': 'x'}
  result = ni_metrics.score(predictions, _refs())
  # EM per instance: 1 (jar), 0, 0, 1.
  # ROUGE-L: 1, 0, max(2/3, against "a cat" 2 * (1/3) * (1/2) / (5/6) = 0.4), 1.
  assert result['exact_match'] == pytest.approx(50.0)
  assert result['rougeL'] == pytest.approx(100 * (1 + 0 + 2 / 3 + 1) / 4)
  assert result['per_task']['taskA']['official_metric'] == 'exact_match'
  assert result['per_task']['taskA']['official'] == pytest.approx(50.0)
  assert result['per_task']['taskC']['official_metric'] is None
  assert result['official'] == {
      'Word Analogy': {'metric': 'exact_match', 'value': pytest.approx(50.0)},
      'Title Generation': {'metric': 'rougeL', 'value': pytest.approx(200 / 3)}}
  assert result['per_category']['Misc.'] == {'count': 1, 'exact_match': 100.0, 'rougeL': 100.0}
  report = ni_metrics.format_report(result)
  assert 'Word Analogy' in report and 'taskB' in report


def _write_jsonl(path, rows):
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows), encoding='utf-8')


def test_id_mismatch_and_xlingual_without_tokenizer(tmp_path):
  _write_jsonl(tmp_path / 'refs.jsonl', _refs())
  _write_jsonl(tmp_path / 'pred.jsonl', [{'id': '1', 'prediction': 'jar'},
                                         {'id': '2', 'prediction': 'sack'},
                                         {'id': '9', 'prediction': '?'}])
  with pytest.raises(ValueError) as error:
    ni_metrics.score_files(str(tmp_path / 'pred.jsonl'), str(tmp_path / 'refs.jsonl'))
  message = str(error.value)
  assert 'pred.jsonl' in message
  assert '2 id(s) of' in message and 'first: 3, 4' in message
  assert '1 predicted id(s) are not in' in message and 'first: 9' in message
  with pytest.raises(ValueError, match=r'xlingual.*--tokenizer'):
    ni_metrics.score_files(str(tmp_path / 'pred.jsonl'), str(tmp_path / 'refs.jsonl'),
                           track='xlingual')


def test_xlingual_track_uses_the_given_tokenizer(tmp_path):
  class Split:
    def tokenize(self, text):
      return text.split()

  refs = [dict(r, track='xlingual') for r in _refs()[2:3]]
  _write_jsonl(tmp_path / 'refs.jsonl', _refs()[:2] + refs)
  _write_jsonl(tmp_path / 'pred.jsonl', [{'id': '3', 'prediction': 'the cats sat'}])
  result = ni_metrics.score_files(str(tmp_path / 'pred.jsonl'), str(tmp_path / 'refs.jsonl'),
                                  track='xlingual', tokenizer=Split())
  # No stemming: "cats" does not match "cat"; LCS "the sat" = 2 of 3 and 6 -> F = 4/9.
  assert result['count'] == 1 and result['rougeL'] == pytest.approx(100 * 4 / 9)


def test_xlingual_track_loads_a_local_gpt2_style_tokenizer(tmp_path):
  from tokenizers import ByteLevelBPETokenizer
  bpe = ByteLevelBPETokenizer()  # a tiny byte-level BPE in GPT-2's file layout
  bpe.train_from_iterator(['the cat sat on the mat'] * 20, vocab_size=300, show_progress=False)
  bpe.save_model(str(tmp_path))
  (tmp_path / 'tokenizer_config.json').write_text('{"tokenizer_class": "GPT2Tokenizer"}')
  tokenizer = ni_metrics.GPT2Tokenizer(str(tmp_path))
  assert tokenizer.tokenizer.tokenize('the cat sat')[1] == 'Ġcat'
  assert tokenizer.tokenize('the cat sat') == ['the', 'cat', 'sat']  # the marker dropped
  result = ni_metrics.score({'1': 'cat sat on'}, [{'id': '1', 'references': ['the cat sat']}],
                            track='xlingual', tokenizer=str(tmp_path))
  # LCS "cat sat" = 2 of 3 and 3 tokens: F = 2/3.
  assert result['rougeL'] == pytest.approx(200 / 3)
  with pytest.raises(ValueError, match=r'no_such_folder.*--tokenizer'):
    ni_metrics.GPT2Tokenizer(str(tmp_path / 'no_such_folder'))


def test_baselines_on_the_shared_test_tasks(shared_prep):
  out, _ = shared_prep
  test = _lines(out / 'test.jsonl')
  copy_input = ni_metrics.baseline_predictions(str(out / 'test.jsonl'), 'copy_input')
  assert [p['prediction'] for p in copy_input] == [r['input'] for r in test]
  copy_demo = ni_metrics.baseline_predictions(str(out / 'test.jsonl'), 'copy_demo')
  assert copy_demo[0]['prediction'] == test[0]['positive_examples'][0]['output']
  for method in ni_metrics.BASELINES:
    result = ni_metrics.score_baseline(str(out / 'test.jsonl'), str(out / 'references.jsonl'),
                                       method)
    assert result['count'] == 500 and sorted(result['per_task']) == sorted(TEST_TASKS)
    values = [result['exact_match'], result['rougeL']] + [
        e[m] for e in result['per_task'].values() for m in ni_metrics.METRICS]
    assert all(0.0 <= v <= 100.0 for v in values)
    assert set(result['official']) == {'Coreference Resolution', 'Overlap Extraction',
                                       'Word Analogy'}

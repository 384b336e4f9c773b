"""CoPoet's SeqIO tasks: the raw format, the data folder, the test-set metric, errors."""
import importlib.util
import json
import pathlib

import gin
import pytest
import seqio

from t5x_tasks import copoet, vocabularies

ROOT = pathlib.Path(__file__).resolve().parents[1]
LENGTHS = {'inputs': 64, 'targets': 64}


@pytest.fixture(autouse=True)
def quickstart_vocabulary():
  """The bundled vocabulary (T5's public one needs the network)."""
  gin.clear_config()
  gin.bind_parameter('vocabularies.task_vocabulary.name', 'quickstart')
  yield vocabularies.quickstart_vocabulary()
  gin.clear_config()


def _raw(path):
  with open(path, encoding='utf-8') as f:
    return [json.loads(line)['translation'] for line in f]


def test_bundled_sample_is_the_fallback(monkeypatch, quickstart_vocabulary):
  monkeypatch.delenv(copoet.ENV_VAR, raising=False)
  assert copoet.data_dir() == copoet.SAMPLE_DIR
  task = seqio.get_mixture_or_task('copoet_instructions')
  examples = list(task.get_dataset(LENGTHS, split='validation', shuffle=False).as_numpy_iterator())
  raw = _raw(pathlib.Path(copoet.SAMPLE_DIR) / 'validation.json')
  assert len(examples) == len(raw) == 200
  # No task prefix: the input is the instruction itself, the target the line.
  assert quickstart_vocabulary.decode(examples[0]['inputs'].tolist()) == raw[0]['en1']
  assert quickstart_vocabulary.decode(examples[0]['targets'].tolist()) == raw[0]['en2']
  assert all(ex['targets'][-1] == 1 for ex in examples)  # EOS


def test_data_folder_from_environment_and_gin(shared_dir, monkeypatch, tmp_path):
  folder = shared_dir / 'data' / 'copoet'
  monkeypatch.setenv(copoet.ENV_VAR, str(folder))
  counts = {}
  for task, name in copoet.TEST_SETS.items():
    ds = seqio.get_mixture_or_task(task).get_dataset(LENGTHS, split='test', shuffle=False)
    counts[name] = sum(1 for _ in ds)
  assert counts == {'ki_ke': 82, 'ki_ue': 82, 'compositional': 78}  # the paper's sizes
  (tmp_path / 'train.json').write_text(json.dumps({'translation': {'en1': 'a', 'en2': 'b'}}) + '\n')
  gin.bind_parameter('copoet.data_dir.path', str(tmp_path))  # the binding beats the variable
  assert copoet.data_dir() == str(tmp_path)
  assert copoet.read_pairs(str(tmp_path / 'train.json')) == [{'inputs': 'a', 'targets': 'b'}]


def test_mixture_trains_on_instructions_and_evaluates_on_test_sets():
  mixture = seqio.get_mixture_or_task('copoet')
  assert sorted(t.name for t in mixture.tasks) == sorted(
      ['copoet_instructions', 'copoet_ki_ke', 'copoet_ki_ue', 'copoet_compositional'])
  train_tasks = [t.name for t in mixture.tasks if 'train' in t.splits]
  assert train_tasks == ['copoet_instructions']
  assert all('test' in seqio.get_mixture_or_task(t).splits for t in copoet.TEST_SETS)


def test_test_set_metric_scores_predictions_against_instructions():
  task = seqio.get_mixture_or_task('copoet_compositional')
  examples = list(task.get_dataset(LENGTHS, split='test', shuffle=False).as_numpy_iterator())
  targets = [task.postprocess_fn(ex['targets_pretokenized'], example=ex, is_target=True)
             for ex in examples[:4]]
  raw = _raw(pathlib.Path(copoet.SAMPLE_DIR) / 'test_sets' / 'compositional.json')[:4]
  assert [t['instruction'] for t in targets] == [r['en1'] for r in raw]
  # The reference lines satisfy their instructions; an empty line satisfies none.
  (metric,) = task.metric_fns
  assert metric(targets, [r['en2'] for r in raw]) == {'success_rate': 100.0}
  assert metric(targets, [''] * 4) == {'success_rate': 0.0}


@pytest.mark.parametrize('line, message', [
    ('{"translation": {"en1": "x"', 'not valid JSON'),
    ('{"text": "x"}', 'missing field "translation"'),
    ('{"translation": {"en1": "x"}}', 'field "translation.en2"'),
])
def test_bad_lines_name_file_line_and_field(tmp_path, line, message):
  path = tmp_path / 'train.json'
  path.write_text(json.dumps({'translation': {'en1': 'ok', 'en2': 'ok'}}) + '\n' + line + '\n')
  with pytest.raises(ValueError, match=f'{path}:2: {message}'):
    copoet.read_pairs(str(path))


def test_missing_file_says_how_to_configure(tmp_path):
  with pytest.raises(FileNotFoundError, match=copoet.ENV_VAR):
    copoet.read_pairs(str(tmp_path / 'train.json'))


def test_sample_is_reproducible():
  path = ROOT / 'data_prep' / 'make_quickstart_sample.py'
  spec = importlib.util.spec_from_file_location('make_quickstart_sample', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  sample = pathlib.Path(copoet.SAMPLE_DIR)
  for split, examples in module.make_splits().items():
    assert [{'en1': e['inputs'], 'en2': e['targets']} for e in examples] == _raw(
        sample / f'{split}.json')
  for name, examples in module.make_test_sets().items():
    assert [{'en1': e['inputs'], 'en2': e['targets']} for e in examples] == _raw(
        sample / 'test_sets' / f'{name}.json')

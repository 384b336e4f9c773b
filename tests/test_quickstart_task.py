"""The quickstart's bundled sample task: loads, tokenizes as the files say, is reproducible."""
import importlib.util
import json
import pathlib

import seqio

from t5x_tasks import quickstart  # noqa: F401  (registers copoet_quickstart)
from t5x_tasks import vocabularies

ROOT = pathlib.Path(__file__).resolve().parents[1]
DATA_DIR = ROOT / 't5x_tasks' / 'data' / 'copoet_sample'
LENGTHS = {'inputs': 64, 'targets': 64}


def _records(split):
  with open(DATA_DIR / f'{split}.jsonl', encoding='utf-8') as f:
    return [json.loads(line) for line in f]


def _validation_examples():
  task = seqio.get_mixture_or_task('copoet_quickstart')
  ds = task.get_dataset(LENGTHS, split='validation', shuffle=False)
  return list(ds.as_numpy_iterator())


def _generator_module():
  # data_prep/ is a folder of scripts, not a package, so load the file directly.
  path = ROOT / 'data_prep' / 'make_quickstart_sample.py'
  spec = importlib.util.spec_from_file_location('make_quickstart_sample', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  return module


def test_validation_split_matches_file():
  examples = _validation_examples()
  records = _records('validation')
  assert len(examples) == len(records)
  vocab = vocabularies.quickstart_vocabulary()
  assert vocab.decode(examples[0]['targets'].tolist()) == records[0]['targets']
  assert vocab.decode(examples[0]['inputs'].tolist()) == records[0]['inputs']
  for ex in examples:
    for key in ('inputs', 'targets'):
      ids = ex[key]
      assert ids[-1] == 1, f'{key} does not end with EOS: {ids}'
      assert ids.max() < vocab.vocab_size


def test_vocabulary_has_t5_special_ids():
  vocab = vocabularies.quickstart_vocabulary()
  assert (vocab.pad_id, vocab.eos_id, vocab.unk_id) == (0, 1, 2)
  assert vocab.extra_ids == 0


def test_generator_is_deterministic():
  generator = _generator_module()
  splits = generator.make_splits()
  assert splits['validation'] == _records('validation')
  assert splits['train'] == _records('train')

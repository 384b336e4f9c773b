"""CoPoet's poetry instructions as SeqIO tasks.

Raw format (the paper's): JSON Lines, one `{"translation": {"en1": instruction,
"en2": poem line}}` per line. The input is the instruction with no task prefix; the
target is the line. A data folder holds

    train.json, validation.json                       instruction tuning data
    test_sets/ki_ke.json, ki_ue.json, compositional.json   the paper's test sets

chosen, first match wins, by the gin binding `copoet.data_dir.path`, the environment
variable COPOET_DATA_DIR, or the sample bundled with the package (our own text, so the
quickstart and tests run offline).

Tasks: `copoet_instructions` (train, validation), `copoet_ki_ke`, `copoet_ki_ue`,
`copoet_compositional` (test, scored by the paper's success rate), and the mixture
`copoet` of all four.
"""
import os
from typing import Optional

import gin
import seqio
import tensorflow as tf

from t5x_tasks import copoet_metrics, jsonl, vocabularies

ENV_VAR = 'COPOET_DATA_DIR'
SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'copoet_sample')
SPLIT_FILES = {'train': 'train.json', 'validation': 'validation.json'}
TEST_SETS = {'copoet_ki_ke': 'ki_ke', 'copoet_ki_ue': 'ki_ue',
             'copoet_compositional': 'compositional'}


@gin.configurable(module='copoet')
def data_dir(path: Optional[str] = None) -> str:
  """The CoPoet data folder: the gin binding, else $COPOET_DATA_DIR, else the sample."""
  return path or os.environ.get(ENV_VAR) or SAMPLE_DIR


def read_pairs(path: str) -> list[dict[str, str]]:
  """Reads a CoPoet JSON Lines file -> [{'inputs': instruction, 'targets': line}].

  Errors name the file, the line number and the field, and say what was expected.
  """
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path}: no such file; set {ENV_VAR} or copoet.data_dir.path to a '
                            f'folder with {", ".join(SPLIT_FILES.values())} and test_sets/.')
  pairs = []
  for number, record in jsonl.records(path):
    translation = record.get('translation')
    if not isinstance(translation, dict):
      raise ValueError(f'{path}:{number}: missing field "translation" '
                       '(expected {"translation": {"en1": instruction, "en2": line}}).')
    for field in ('en1', 'en2'):
      if not isinstance(translation.get(field), str):
        raise ValueError(f'{path}:{number}: field "translation.{field}" is missing or not a '
                         'string.')
    pairs.append({'inputs': translation['en1'], 'targets': translation['en2']})
  if not pairs:  # else training stops at its first batch with a bare StopIteration
    raise ValueError(f'{path}: no instruction pairs (the file is empty); expected one '
                     '{"translation": {"en1": instruction, "en2": line}} per line.')
  return pairs


def _as_dataset(pairs: list[dict[str, str]]) -> tf.data.Dataset:
  return tf.data.Dataset.from_tensor_slices({
      'inputs': tf.constant([p['inputs'] for p in pairs], tf.string),
      'targets': tf.constant([p['targets'] for p in pairs], tf.string)})


def _instructions_fn(split: str, shuffle_files: bool, seed: Optional[int] = None):
  del shuffle_files, seed  # one file per split; seqio shuffles the examples
  return _as_dataset(read_pairs(os.path.join(data_dir(), SPLIT_FILES[split])))


def _test_set_fn(name: str):
  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None):
    del split, shuffle_files, seed
    return _as_dataset(read_pairs(os.path.join(data_dir(), 'test_sets', f'{name}.json')))
  return dataset_fn


def success_rate(targets, predictions) -> dict:
  """SeqIO metric: the paper's success rate (percent) of predictions on their instructions.

  `targets` are the postprocessed targets, which `_keep_instruction` turns into the
  instruction each prediction answers.
  """
  return copoet_metrics.seqio_metric(targets, predictions)


def _keep_instruction(output, example=None, is_target=False):
  """Postprocessor: for targets, the example's instruction (what the metric checks)."""
  if is_target and example is not None:
    return {'instruction': _text(example['inputs_pretokenized'])}
  return _text(output)


def _text(value) -> str:
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def _features():
  vocab = vocabularies.TaskVocabulary()
  return {'inputs': seqio.Feature(vocab, add_eos=True),
          'targets': seqio.Feature(vocab, add_eos=True)}


_PREPROCESSORS = [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim]


def register() -> None:
  """Registers the tasks and the mixture (again, if already registered)."""
  names = ['copoet_instructions', *TEST_SETS, 'copoet']
  seqio.MixtureRegistry.remove('copoet')
  for name in names[:-1]:
    seqio.TaskRegistry.remove(name)
  seqio.TaskRegistry.add(
      'copoet_instructions',
      source=seqio.FunctionDataSource(_instructions_fn, splits=tuple(SPLIT_FILES)),
      preprocessors=_PREPROCESSORS, output_features=_features(), metric_fns=[])
  for task, name in TEST_SETS.items():
    seqio.TaskRegistry.add(
        task, source=seqio.FunctionDataSource(_test_set_fn(name), splits=('test',)),
        preprocessors=_PREPROCESSORS, output_features=_features(),
        postprocess_fn=_keep_instruction, metric_fns=[success_rate])
  seqio.MixtureRegistry.add('copoet', [(name, 1.0) for name in names[:-1]])


register()

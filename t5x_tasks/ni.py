"""Super-NaturalInstructions (Tk-Instruct) as SeqIO tasks, with Tk-Instruct's encodings.

Tasks (registered on import; splits `train` and `test`):

    ni_def            Definition only
    ni_pos2           two positive examples, no Definition
    ni_def_pos2       Definition + two positive examples (the headline setting)
    ni_def_pos2_neg2  Definition + two positive + two negative examples
    ni_def_pos2_expl  Definition + two positive examples with their explanations
    ni_tk_instruct    per instance one of the five above, as Tk-Instruct trains; the choice
                      is seeded by the instance id, so every run sees the same one
                      (train on it; evaluate with ni_def_pos2, as the paper reports)

The source text is Tk-Instruct's (src/ni_collator.py), character for character:

    "Definition: " + definition.strip() [+ "."] + "\\n\\n"
    " Positive Example {i} -\\n" + "Input: {input}" [+ "."] + "\\n"
        + " Output: {output}" [+ "."] + "\\n" [+ " Explanation: {explanation}" [+ "."] + "\\n"]
        + "\\n"                                          (Negative: the same words)
    "Now complete the following example -\\n" + "Input: {input}" [+ "."] + "\\n" + "Output: "

A "." is added only where the text so far does not end in string.punctuation; example and
instance fields are stripped. Examples are added in order while the tokenized candidate
stays within the input length (TASK_FEATURE_LENGTHS['inputs'], default 1024), counting the
EOS token as Tk-Instruct's Hugging Face tokenizer does; the first one that does not fit
ends the positives (the negatives are then tried the same way). Like Tk-Instruct, the
candidate measured joins the examples kept so far with a space. The instance is always
included; a source still too long is trimmed by seqio as usual.

Targets: one of the instance's references, chosen at random seeded by the instance id (as
Tk-Instruct picks one at random). Evaluation keeps all references: each example carries
`id`, `task_id`, `task_category`, `track` and `references` (a JSON list) through the
pipeline, and `postprocess` turns the target into that record for the metric
(ni_metrics.seqio_metric: exact match and ROUGE-L, max over references).

Data: a `ni_data.prep` output folder (train.jsonl, test.jsonl) chosen, first match wins,
by the gin binding `ni.data_dir.path`, the environment variable NI_DATA_DIR, or the sample
bundled with the package (t5x_tasks/data/ni_sample, four small tasks of our own).
"""
import functools
import json
import os
import random
import string
from typing import Any, Callable, Dict, List, NamedTuple, Optional, Tuple

import gin
import seqio
import tensorflow as tf

from t5x_tasks import jsonl, ni_data, ni_metrics, vocabularies

ENV_VAR = 'NI_DATA_DIR'
SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data', 'ni_sample')
SPLITS = ('train', 'test')
DEFAULT_INPUT_LENGTH = 1024  # Tk-Instruct's max_source_length


class Encoding(NamedTuple):
  """What a source holds: the Definition, how many examples, their explanations."""
  definition: bool
  positives: int
  negatives: int
  explanation: bool


# Tk-Instruct's five training encodings, in its order.
ENCODINGS = {
    'def': Encoding(True, 0, 0, False),
    'pos2': Encoding(False, 2, 0, False),
    'def_pos2': Encoding(True, 2, 0, False),
    'def_pos2_neg2': Encoding(True, 2, 2, False),
    'def_pos2_expl': Encoding(True, 2, 0, True),
}
TK_INSTRUCT = 'tk_instruct'  # the per-instance random choice among ENCODINGS
TASK_NAMES = {f'ni_{name}': name for name in (*ENCODINGS, TK_INSTRUCT)}
RECORD_FIELDS = ('id', 'task_id', 'definition', 'positive_examples', 'negative_examples',
                 'input', 'references')

CountTokens = Callable[[str], int]


# ---------------------------------------------------------------------------------------------
# Encodings

def _end_sentence(text: str) -> str:
  """`text` + "." unless it already ends in punctuation (Tk-Instruct's rule)."""
  return text if text and text[-1] in string.punctuation else text + '.'


def definition_text(definition: str) -> str:
  """'Definition: {definition}.\\n\\n' (the "." only where needed)."""
  return _end_sentence('Definition: ' + definition.strip()) + '\n\n'


def example_text(kind: str, number: int, example: Dict[str, str], explanation: bool) -> str:
  """One demonstration.

  Args:
    kind: str, 'Positive' or 'Negative'.
    number: int, its 1-based number among the examples of its kind.
    example: dict with input, output and optionally explanation.
    explanation: bool, add the explanation (when the example has one).
  Returns:
    str, e.g. ' Positive Example 1 -\\nInput: India.\\n Output: New Delhi.\\n\\n'.
  """
  text = f' {kind} Example {number} -\n'
  text = _end_sentence(text + f'Input: {example["input"].strip()}') + '\n'
  text = _end_sentence(text + f' Output: {example["output"].strip()}') + '\n'
  if explanation and 'explanation' in example:
    text = _end_sentence(text + f' Explanation: {example["explanation"].strip()}') + '\n'
  return text + '\n'


def instance_text(instance_input: str) -> str:
  """'Now complete the following example -\\nInput: {input}.\\nOutput: '."""
  text = _end_sentence(f'Now complete the following example -\nInput: {instance_input.strip()}')
  return text + '\nOutput: '


def build_source(record: Dict[str, Any], encoding: str, count_tokens: Optional[CountTokens] = None,
                 max_length: int = DEFAULT_INPUT_LENGTH) -> str:
  """The encoder input of a prep record under `encoding`, adding examples greedily.

  Args:
    record: dict with definition, positive_examples, negative_examples, input.
    encoding: str, a key of ENCODINGS.
    count_tokens: callable str -> int (tokens including EOS), or None to keep every example.
    max_length: int, the most tokens a candidate source may have.
  Returns:
    str, definition + positive examples + negative examples + instance.
  """
  spec = ENCODINGS[encoding]
  definition = definition_text(record['definition']) if spec.definition else ''
  task_input = instance_text(record['input'])

  def fits(text: str) -> bool:
    return count_tokens is None or count_tokens(text) <= max_length

  positives: List[str] = []
  for i, example in enumerate(record['positive_examples'][:spec.positives]):
    text = example_text('Positive', i + 1, example, spec.explanation)
    # Measured as Tk-Instruct measures it: the kept examples joined by a space.
    if not fits(definition + ' '.join(positives) + text + task_input):
      break
    positives.append(text)
  negatives: List[str] = []
  for i, example in enumerate(record['negative_examples'][:spec.negatives]):
    text = example_text('Negative', i + 1, example, spec.explanation)
    if not fits(definition + ' '.join(positives) + ' '.join(negatives) + text + task_input):
      break
    negatives.append(text)
  return definition + ''.join(positives) + ''.join(negatives) + task_input


def choose_encoding(instance_id: str) -> str:
  """ni_tk_instruct's encoding for an instance: a choice among ENCODINGS seeded by its id."""
  return random.Random(ni_data.stable_seed(instance_id, 'encoding')).choice(list(ENCODINGS))


def choose_reference(instance_id: str, references: List[str]) -> str:
  """The training target: one of `references`, chosen at random seeded by the instance id."""
  return random.Random(ni_data.stable_seed(instance_id, 'target')).choice(references)


def token_counter(vocabulary: seqio.Vocabulary) -> CountTokens:
  """str -> its token count under `vocabulary` plus one for the EOS seqio appends."""
  tokenizer = getattr(vocabulary, 'tokenizer', None)  # SentencePiece: skip seqio's wrapper
  encode = tokenizer.EncodeAsIds if hasattr(tokenizer, 'EncodeAsIds') else vocabulary.encode
  return lambda text: len(encode(text)) + 1


# ---------------------------------------------------------------------------------------------
# Data

@gin.configurable(module='ni')
def data_dir(path: Optional[str] = None) -> str:
  """The prep output folder: the gin binding, else $NI_DATA_DIR, else the bundled sample."""
  return path or os.environ.get(ENV_VAR) or SAMPLE_DIR


@functools.lru_cache(maxsize=4)
def _cached_records(path: str, mtime_ns: int, size: int) -> Tuple[Dict[str, Any], ...]:
  del mtime_ns, size  # only part of the cache key: the six tasks read the same files
  records = []
  for number, record in jsonl.records(path):
    for field in RECORD_FIELDS:
      if field not in record:
        raise ValueError(f'{path}:{number}: missing field "{field}"; is this a `t5x prep ni` '
                         'output?')
    if not isinstance(record['references'], list) or not record['references']:
      raise ValueError(f'{path}:{number}: field "references" must be a non-empty list')
    records.append(record)
  return tuple(records)


def read_records(split: str, folder: Optional[str] = None) -> List[Dict[str, Any]]:
  """The prep records of `split` ('train' or 'test') from `folder` (default data_dir())."""
  if split not in SPLITS:
    raise ValueError(f'Super-NaturalInstructions tasks have splits {SPLITS}, not {split!r}')
  path = os.path.join(folder or data_dir(), f'{split}.jsonl')
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path}: no such file; set {ENV_VAR} or ni.data_dir.path to a '
                            '`t5x prep ni` output folder (train.jsonl, test.jsonl).')
  stat = tf.io.gfile.stat(path)
  return list(_cached_records(path, stat.mtime_nsec, stat.length))


def _dataset_fn_for(encoding: str) -> Callable[..., tf.data.Dataset]:
  """A seqio dataset_fn of raw records; `encode_inputs` builds the source text later."""
  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
    del shuffle_files, seed  # one file per split; seqio shuffles the examples
    records = read_records(split)
    columns: Dict[str, List[str]] = {key: [] for key in (
        'id', 'task_id', 'task_category', 'track', 'encoding', 'record', 'targets',
        'references')}
    for r in records:
      columns['id'].append(r['id'])
      columns['task_id'].append(r['task_id'])
      columns['task_category'].append(r.get('task_category', ''))
      columns['track'].append(r.get('track', 'default'))
      columns['encoding'].append(choose_encoding(r['id']) if encoding == TK_INSTRUCT
                                 else encoding)
      columns['record'].append(json.dumps({k: r[k] for k in (
          'definition', 'positive_examples', 'negative_examples', 'input')}))
      columns['targets'].append(choose_reference(r['id'], r['references']))
      columns['references'].append(json.dumps(r['references'], ensure_ascii=False))
    return tf.data.Dataset.from_tensor_slices({
        key: tf.constant(values, dtype=tf.string, shape=[len(values)])
        for key, values in columns.items()})
  dataset_fn.__name__ = f'ni_{encoding}_dataset_fn'
  return dataset_fn


def encode_inputs(dataset: tf.data.Dataset, sequence_length: Optional[Dict[str, int]] = None,
                  output_features: Optional[Dict[str, seqio.Feature]] = None) -> tf.data.Dataset:
  """seqio preprocessor: `record` + `encoding` -> `inputs`, the Tk-Instruct source text.

  The greedy example rule needs the task vocabulary's token counts and the input length,
  which only a preprocessor sees; the text is built in Python (tf.numpy_function).
  """
  length = (sequence_length or {}).get('inputs') or DEFAULT_INPUT_LENGTH
  count = token_counter(output_features['inputs'].vocabulary) if output_features else None

  def source(record: bytes, encoding: bytes) -> bytes:
    text = build_source(json.loads(record), encoding.decode('utf-8'), count, length)
    return text.encode('utf-8')

  def add_inputs(example: Dict[str, tf.Tensor]) -> Dict[str, tf.Tensor]:
    inputs = tf.numpy_function(source, [example['record'], example['encoding']], tf.string,
                               stateful=False)
    inputs.set_shape([])
    features = {k: v for k, v in example.items() if k != 'record'}
    features['inputs'] = inputs
    return features

  return dataset.map(add_inputs, num_parallel_calls=tf.data.AUTOTUNE)


def _text(value: Any) -> str:
  if hasattr(value, 'item'):  # a numpy scalar
    value = value.item()
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def postprocess(output: Any, example: Optional[Dict[str, Any]] = None,
                is_target: bool = False) -> Any:
  """seqio postprocess_fn: predictions as text; a target as the record the metric needs.

  Returns:
    for targets (with the example): {'id', 'task_id', 'task_category', 'track',
    'references': [str]}; otherwise the decoded text.
  """
  if is_target and example is not None:
    record = {key: _text(example[key]) for key in ('id', 'task_id', 'task_category', 'track')}
    record['references'] = json.loads(_text(example['references']))
    return record
  return _text(output)


def register(vocabulary: Optional[seqio.Vocabulary] = None) -> List[seqio.Task]:
  """Registers (or re-registers) the six ni_* tasks.

  Args:
    vocabulary: seqio.Vocabulary for inputs and targets; default the shared
      vocabularies.TaskVocabulary() (T5's unless gin binds vocabularies.task_vocabulary).
  Returns:
    list of seqio.Task, in TASK_NAMES order.
  """
  vocabulary = vocabulary or vocabularies.TaskVocabulary()
  features = {'inputs': seqio.Feature(vocabulary, add_eos=True),
              'targets': seqio.Feature(vocabulary, add_eos=True)}
  tasks = []
  for name, encoding in TASK_NAMES.items():
    seqio.TaskRegistry.remove(name)  # re-import / re-register must not hit duplicate names
    tasks.append(seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(_dataset_fn_for(encoding), splits=SPLITS),
        preprocessors=[encode_inputs, seqio.preprocessors.tokenize,
                       seqio.preprocessors.append_eos_after_trim],
        output_features=features, postprocess_fn=postprocess,
        metric_fns=[ni_metrics.seqio_metric]))
  return tasks


register()

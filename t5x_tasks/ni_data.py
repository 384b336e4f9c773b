"""Super-NaturalInstructions raw data: task files, the split lists, and prep.

A Super-NaturalInstructions checkout (github.com/allenai/natural-instructions) holds

    tasks/<task>.json                   one file per task
    splits/default/{train,test}_tasks.txt   the English track: one task name per line
    splits/xlingual/{train,test}_tasks.txt  the cross-lingual track

A task file has `Definition` (a string in old files, a list of strings in newer ones; the
first element is the one Tk-Instruct uses), `Positive Examples` and `Negative Examples`
(lists of {input, output, explanation}), `Instances` (lists of {id, input, output}, the
output a LIST of acceptable references; old files have no ids), `Categories`,
`Input_language` and `Output_language`.

`prep(data_dir)` reads them into records and `output_lines` formats these; "t5x prep ni
--data DIR --out OUT" writes them, atomically,

    OUT/train.jsonl       one training instance per line
    OUT/test.jsonl        one test instance per line
    OUT/references.jsonl  the NI leaderboard's references: {id, task_id, task_category,
                          references, track}

Each instance line holds everything the encodings (t5x_tasks.ni) and the scorer
(t5x_tasks.ni_metrics) need: id, task_id, task_category, categories, definition (a
string), positive_examples, negative_examples, input, references, input_language,
output_language, track.

The Tk-Instruct protocol: a test task keeps its first `max_test_instances` (100) instances,
which the dataset authors put first, label-balanced, for evaluation; a training task keeps
at most `max_train_instances` (100), drawn at random (Tk-Instruct shuffles; here the draw
is seeded by the task name, so prep is reproducible) and written in file order. None or a
negative number keeps all.

Ids: an instance without an `id` (old files) gets f'{task_id}-{index}', `index` its 0-based
position in the file's `Instances`, so the id does not change with the caps. Task
`task121_atomic_question_rewriting` is renamed `task121_zest_question_rewriting`, as the
official evaluation does (`canonical_task_name`). Tasks that a split lists but tasks/ lacks
are reported with a warning naming them (a release may ship a subset of tasks; the
fixtures in ../shared hold 6 of 875); `strict=True` makes that an error.

The bundled raw sample, t5x_tasks/data/ni_raw_sample/ (four tasks written for this
project), preps into the bundled t5x_tasks/data/ni_sample/ with

    t5x prep ni --data t5x_tasks/data/ni_raw_sample --out t5x_tasks/data/ni_sample
"""
import hashlib
import os
import random
import warnings
from typing import Any, Dict, Iterator, List, Optional, Sequence

from t5x_tasks import jsonl

SPLITS = ('train', 'test')
TRACKS = ('default', 'xlingual')
# Renamed by the official evaluation scripts (Tk-Instruct's compute_metrics / baselines).
TASK_RENAMES = {'task121_atomic_question_rewriting': 'task121_zest_question_rewriting'}
REQUIRED_FIELDS = ('Definition', 'Positive Examples', 'Negative Examples', 'Instances')

Record = Dict[str, Any]


def canonical_task_name(name: str) -> str:
  """The task name the official evaluation reports for `name`.

  Args:
    name: str, a task name as in the split files, e.g. 'task121_atomic_question_rewriting'.
  Returns:
    str, e.g. 'task121_zest_question_rewriting'; other names unchanged.
  """
  return TASK_RENAMES.get(name, name)


def stable_seed(*parts: str) -> int:
  """A 64-bit seed from strings: the same on every run, machine and Python (unlike hash())."""
  digest = hashlib.sha256('\x1f'.join(parts).encode('utf-8')).digest()
  return int.from_bytes(digest[:8], 'big')


def read_split(path: str) -> List[str]:
  """Task names of a split file, one per line, blank lines skipped, in file order.

  Raises:
    FileNotFoundError: naming the file and the expected layout.
  """
  if not os.path.isfile(path):
    raise FileNotFoundError(f'{path}: no such split file; a Super-NaturalInstructions folder '
                            'has splits/<split>/train_tasks.txt and test_tasks.txt')
  return [line.strip() for _, line in jsonl.lines(path) if line.strip()]


def _strings(path: str, field: str, value: Any) -> List[str]:
  """`value` as a list of str (a str is one element); the error names file and field."""
  if isinstance(value, str):
    return [value]
  if isinstance(value, list) and all(isinstance(v, str) for v in value):
    return list(value)
  raise ValueError(f'{path}: field "{field}" must be a string or a list of strings, got '
                   f'{type(value).__name__}')


def _examples(path: str, field: str, value: Any) -> List[Dict[str, str]]:
  """Demonstrations as [{input, output[, explanation]}]; errors name file and field."""
  if not isinstance(value, list):
    raise ValueError(f'{path}: field "{field}" must be a list of {{input, output, '
                     f'explanation}}, got {type(value).__name__}')
  examples = []
  for i, example in enumerate(value):
    where = f'{field}[{i}]'
    if not isinstance(example, dict):
      raise ValueError(f'{path}: field "{where}" must be an object with input and output')
    kept = {}
    for key in ('input', 'output', 'explanation'):
      if key not in example:
        if key == 'explanation':  # optional: the encodings skip a missing one
          continue
        raise ValueError(f'{path}: field "{where}.{key}" is missing')
      if not isinstance(example[key], str):
        raise ValueError(f'{path}: field "{where}.{key}" must be a string, got '
                         f'{type(example[key]).__name__}')
      kept[key] = example[key]
    examples.append(kept)
  return examples


def read_task(path: str, task_name: Optional[str] = None) -> Dict[str, Any]:
  """Reads and checks one task file, old or new schema.

  Args:
    path: str, a tasks/<task>.json file.
    task_name: str or None, the name as a split lists it; default the file's stem.
  Returns:
    dict with task_id (canonical name), definition (str: a list Definition's first element),
    positive_examples, negative_examples, categories, input_language, output_language and
    instances: [{id, input, references}] in file order, ids filled in where missing.
  Raises:
    ValueError: naming the file and the field at fault (e.g. a missing `Instances`).
  """
  data = jsonl.load_json(path)  # errors name path:line; a BOM is accepted
  if not isinstance(data, dict):
    raise ValueError(f'{path}: expected a JSON object (a task), got {type(data).__name__}')
  for field in REQUIRED_FIELDS:
    if field not in data:
      raise ValueError(f'{path}: missing field "{field}"; a Super-NaturalInstructions task has '
                       f'{", ".join(REQUIRED_FIELDS)}')
  task_id = canonical_task_name(task_name or os.path.splitext(os.path.basename(path))[0])
  definitions = _strings(path, 'Definition', data['Definition'])
  if not definitions:
    raise ValueError(f'{path}: field "Definition" is an empty list')
  if not isinstance(data['Instances'], list):
    raise ValueError(f'{path}: field "Instances" must be a list, got '
                     f'{type(data["Instances"]).__name__}')
  instances = []
  for index, instance in enumerate(data['Instances']):
    where = f'Instances[{index}]'
    if not isinstance(instance, dict) or not isinstance(instance.get('input'), str):
      raise ValueError(f'{path}: field "{where}.input" is missing or not a string')
    if 'output' not in instance:
      raise ValueError(f'{path}: field "{where}.output" is missing')
    references = _strings(path, f'{where}.output', instance['output'])
    if not references:
      raise ValueError(f'{path}: field "{where}.output" is an empty list (no reference to '
                       'train on or score against); fix or delete the instance')
    instance_id = instance.get('id')
    if instance_id is not None and not isinstance(instance_id, str):
      raise ValueError(f'{path}: field "{where}.id" must be a string')
    instances.append({'id': instance_id or f'{task_id}-{index}', 'input': instance['input'],
                      'references': references})
  categories = _strings(path, 'Categories', data.get('Categories', []))
  return {
      'task_id': task_id,
      'definition': definitions[0],
      'positive_examples': _examples(path, 'Positive Examples', data['Positive Examples']),
      'negative_examples': _examples(path, 'Negative Examples', data['Negative Examples']),
      'categories': categories,
      'input_language': _strings(path, 'Input_language', data.get('Input_language', [])),
      'output_language': _strings(path, 'Output_language', data.get('Output_language', [])),
      'instances': instances,
  }


def select_instances(task: Dict[str, Any], subset: str,
                     max_instances: Optional[int] = 100) -> List[Dict[str, Any]]:
  """The instances prep keeps of a task, in file order.

  Args:
    task: dict from read_task().
    subset: str, 'test' (the first `max_instances`) or 'train' (a random `max_instances`,
      seeded by the task id).
    max_instances: int or None; None or negative keeps all.
  Returns:
    list of instance dicts.
  """
  instances = task['instances']
  if max_instances is None or max_instances < 0 or len(instances) <= max_instances:
    return list(instances)
  if subset == 'test':
    return instances[:max_instances]
  rng = random.Random(stable_seed(task['task_id'], 'train-instances'))
  return [instances[i] for i in sorted(rng.sample(range(len(instances)), max_instances))]


def instance_records(task: Dict[str, Any], instances: Sequence[Dict[str, Any]],
                     track: str) -> List[Record]:
  """One prep line per instance: the task's fields plus the instance's id, input, references."""
  category = task['categories'][0] if task['categories'] else ''
  shared = {key: task[key] for key in ('task_id', 'definition', 'positive_examples',
                                       'negative_examples', 'categories', 'input_language',
                                       'output_language')}
  return [{'id': inst['id'], **shared, 'task_category': category, 'input': inst['input'],
           'references': inst['references'], 'track': track} for inst in instances]


def reference_record(record: Record) -> Record:
  """The NI leaderboard's reference line for a prep record."""
  return {key: record[key] for key in ('id', 'task_id', 'task_category', 'references', 'track')}


def prep(data_dir: str, max_train_instances: Optional[int] = 100,
         max_test_instances: Optional[int] = 100, split: str = 'default',
         strict: bool = False) -> Dict[str, Any]:
  """Super-NaturalInstructions checkout -> the records of train, test and references.

  Nothing is written here: `output_lines(result)` gives the three files' JSON Lines, which
  `t5x prep ni` writes (all or none) with t5x.fs_utils.write_files.

  Args:
    data_dir: str, a folder with tasks/ and splits/<split>/{train,test}_tasks.txt.
    max_train_instances: int or None, instances kept per training task (a seeded random
      draw); None or negative keeps all.
    max_test_instances: int or None, the first instances kept per test task.
    split: str, the splits/ subfolder: 'default' (English) or 'xlingual'; it also names the
      leaderboard `track` ('xlingual' for xlingual, else 'default').
    strict: bool, raise instead of warning when a split lists tasks that tasks/ lacks.
  Returns:
    dict: {'train': n lines, 'test': n lines, 'tasks': {'train': n, 'test': n},
    'missing': [task names listed but absent], 'records': {'train': [record],
    'test': [record], 'references': [reference record]}}.
  Raises:
    FileNotFoundError: a split file is missing, no listed task exists, or (strict) some are
      missing; the message names them.
    ValueError: a task file is malformed (naming file and field), or two instances share an
      id (naming both tasks).
  """
  split_dir = os.path.join(data_dir, 'splits', split)
  task_dir = os.path.join(data_dir, 'tasks')
  track = 'xlingual' if split == 'xlingual' else 'default'
  caps = {'train': max_train_instances, 'test': max_test_instances}
  records: Dict[str, List[Record]] = {}
  missing: List[str] = []
  task_counts = {}
  seen: Dict[str, str] = {}  # instance id -> task id, to catch duplicate ids
  for subset in SPLITS:
    names = read_split(os.path.join(split_dir, f'{subset}_tasks.txt'))
    records[subset] = []
    task_counts[subset] = 0
    for name in names:
      path = os.path.join(task_dir, f'{name}.json')
      if not os.path.isfile(path):
        missing.append(name)
        continue
      task = read_task(path, name)
      task_counts[subset] += 1
      for record in instance_records(task, select_instances(task, subset, caps[subset]), track):
        if record['id'] in seen:
          raise ValueError(f'{path}: instance id {record["id"]!r} also occurs in task '
                           f'{seen[record["id"]]}; ids must be unique')
        seen[record['id']] = task['task_id']
        records[subset].append(record)
  if missing:
    message = (f'{len(missing)} task(s) listed in {split_dir} are missing from {task_dir}: '
               f'{", ".join(missing[:10])}{" ..." if len(missing) > 10 else ""}')
    if strict or not any(task_counts.values()):
      raise FileNotFoundError(message + ('' if any(task_counts.values()) else
                                         '; none of the listed tasks exists'))
    warnings.warn(message + '; prep writes the tasks that exist', stacklevel=2)
  outputs = {'train': records['train'], 'test': records['test'],
             'references': [reference_record(r) for r in records['test']]}
  return {'train': len(records['train']), 'test': len(records['test']), 'tasks': task_counts,
          'missing': missing, 'records': outputs}


def output_lines(result: Dict[str, Any]) -> Dict[str, Iterator[str]]:
  """{file name: its JSON Lines, streamed} of a `prep` result: train.jsonl, test.jsonl and
  references.jsonl."""
  return {f'{name}.jsonl': jsonl.dump_lines(records)
          for name, records in result['records'].items()}

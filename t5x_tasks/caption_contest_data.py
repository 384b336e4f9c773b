"""New Yorker caption contest raw data ("Do Androids Laugh at Electric Sheep?", Hessel et al.
2023): readers for the Hugging Face rows and the paper's original task files, and the layout.

Rows are those of `jmhessel/newyorker_caption_contest`, configs `matching`, `ranking`,
`explanation` (cross-validation split 0) and `{config}_1` ... `{config}_4` (splits 1-4), with
`from_description` (the model input of the "from description" setting), `label` (A-E for
matching, A/B for ranking, the explanation text for explanation), `instance_id` (the key of
the official `{instance_id: prediction}` files), `contest_number`, `caption_choices`,
`image_location`, `image_description`, `image_uncanny_description`, `entities`, `questions`
and, for ranking, `winner_source`: 'official_winner' when the funnier caption is an official
New Yorker finalist, 'crowd_winner' when it won the crowd vote (the other caption is an "okay"
one by crowd vote). Readers keep these fields and drop the rest (the `image` column).

A data folder holds, first match wins per config and split,

    {config}/{split}.jsonl                  Dataset.to_json() export (JSON Lines)
    {config}/{split}.parquet                Dataset.to_parquet() export
    {config}/{split}-*.parquet              the hub's own files (train-00000-of-00001.parquet)
    [tasks/]contest_matching_split=K_cleaned.json      the original task files, each with
    [tasks/]quality_ranking_split=K_cleaned.json       `train`/`val`/`test` lists
    [tasks/]explanation_generation_split=K_cleaned.json

with split in train, validation, test. The original files carry no descriptions: their
from_description is built, in the hub's format ("scene: ... description: ... uncanny: ...
entities: A, B. choices A: ... B: ..." or "... caption: ..."), from the paper's per-split
annotations `[annotations_per_split/]split=K_newyorker_contest_annotations.json` next to
them (first description and links HIT per contest) when present, else from the choices
alone. Their instance ids are `{contest_number}_{index}` (the hub's ids are hashes we cannot
rebuild), so score official prediction files against the hub rows.
"""
import os
import re
from typing import Any, Dict, List, Optional

import gin
import pyarrow as pa
import pyarrow.parquet as pq

from t5x_tasks import gfile, jsonl

ENV_VAR = 'CAPTION_CONTEST_DATA'
SAMPLE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data',
                          'caption_contest_sample')
KINDS = ('matching', 'ranking', 'explanation')
SPLITS = ('train', 'validation', 'test')
NUM_FOLDS = 5
LETTERS = {'matching': 'ABCDE', 'ranking': 'AB'}
WINNER_SOURCES = ('official_winner', 'crowd_winner')
ORIGINAL_FILES = {'matching': 'contest_matching_split={}_cleaned.json',
                  'ranking': 'quality_ranking_split={}_cleaned.json',
                  'explanation': 'explanation_generation_split={}_cleaned.json'}
ANNOTATIONS_FILE = 'split={}_newyorker_contest_annotations.json'
FIELDS = ('instance_id', 'contest_number', 'from_description', 'label', 'caption_choices',
          'winner_source', 'image_location', 'image_description', 'image_uncanny_description',
          'entities', 'questions')

Row = Dict[str, Any]


@gin.configurable(module='caption_contest')
def data_dir(path: Optional[str] = None) -> str:
  """The data folder: the gin binding, else $CAPTION_CONTEST_DATA, else the bundled sample."""
  return path or os.environ.get(ENV_VAR) or SAMPLE_DIR


def config_name(kind: str, fold: int) -> str:
  """The hub config of a task kind and cross-validation split: 'matching', 'matching_3'."""
  if kind not in KINDS or not 0 <= fold < NUM_FOLDS:
    raise ValueError(f'unknown task {kind!r} split {fold}; tasks: {KINDS}, splits 0-4.')
  return kind if fold == 0 else f'{kind}_{fold}'


def check_row(row: Row, kind: str, where: str) -> Row:
  """Checks the fields the tasks and the scorer use; returns the row with FIELDS only.

  Args:
    row: dict, one record.
    kind: str, one of KINDS.
    where: str, 'FILE:LINE' or 'FILE: row N' for error messages.
  Returns:
    dict with the FIELDS present in `row`.
  Raises:
    ValueError naming `where` and the field.
  """
  for field in ('instance_id', 'from_description', 'label'):
    if not isinstance(row.get(field), str) or not row[field]:
      raise ValueError(f'{where}: field "{field}" is missing, empty or not a string.')
  if kind in LETTERS and row['label'] not in LETTERS[kind]:
    raise ValueError(f'{where}: field "label" is {row["label"]!r}; {kind} labels are one of '
                     f'{", ".join(LETTERS[kind])}.')
  if kind == 'ranking' and row.get('winner_source') not in WINNER_SOURCES:
    raise ValueError(f'{where}: field "winner_source" is {row.get("winner_source")!r}; '
                     f'expected one of {", ".join(WINNER_SOURCES)}.')
  return {k: row[k] for k in FIELDS if k in row}


def read_jsonl(path: str, kind: str) -> List[Row]:
  """Rows of a JSON Lines export (one hub row per line); errors name file, line, field."""
  return [check_row(record, kind, f'{path}:{number}') for number, record in jsonl.records(path)]


def read_parquet(path: str, kind: str) -> List[Row]:
  """Rows of a parquet export; reads only FIELDS (not the images). Errors name file, row."""
  if '://' in path:  # GFile is no pyarrow file: bucket files are read into memory whole
    with gfile.open(path, 'rb') as f:
      source = pa.BufferReader(f.read())
  else:
    source = path
  parquet = pq.ParquetFile(source)
  columns = [c for c in FIELDS if c in parquet.schema_arrow.names]
  records = parquet.read(columns=columns).to_pylist()
  return [check_row(r, kind, f'{path}: row {i}') for i, r in enumerate(records)]


def _entity(link: str) -> str:
  """'https://en.wikipedia.org/wiki/Bar_joke' -> 'Bar_joke' (how from_description lists them)."""
  return link.split('/wiki/')[-1].split('#')[0] if '/wiki/' in link else link


def from_description(kind: str, choices: Any, scene: str = '', description: str = '',
                     uncanny: str = '', entities: Optional[List[str]] = None) -> str:
  """The hub's from_description string, from its parts (parts left out when empty).

  Args:
    kind: str, one of KINDS.
    choices: list of str (matching, ranking) or str (explanation: the caption).
    scene, description, uncanny: str, the cartoon's location and descriptions.
    entities: list of str, Wikipedia links or titles.
  Returns:
    str, e.g. 'scene: a bar description: ... uncanny: ... entities: A, B. choices A: ... B: ...'.
  """
  parts = [f'{name}: {value}' for name, value in
           (('scene', scene), ('description', description), ('uncanny', uncanny)) if value]
  if entities:
    parts.append('entities: ' + ', '.join(_entity(e) for e in entities) + '.')
  if kind == 'explanation':
    parts.append(f'caption: {choices}')
  else:
    parts.append('choices ' + ' '.join(f'{l}: {c}' for l, c in zip(LETTERS[kind], choices)))
  return ' '.join(parts)


def _annotations(folder: str, fold: int) -> Dict[str, Dict[str, Any]]:
  """contest number (str) -> {'scene', 'description', 'uncanny', 'entities'}; {} if no file."""
  # Beside the task file, or in annotations_per_split/ beside it or beside its tasks/ folder.
  for sub in ('', 'annotations_per_split', os.path.join('..', 'annotations_per_split')):
    path = os.path.join(folder, sub, ANNOTATIONS_FILE.format(fold))
    if gfile.exists(path):
      data = jsonl.load_json(path)
      if not isinstance(data, dict):
        raise ValueError(f'{path}: expected a JSON object of contest number -> annotations, '
                         f'got {type(data).__name__}.')
      break
  else:
    return {}
  parts = {}
  for number, contest in data.items():
    try:
      hits = contest.get('mturk_annotations', contest)
      # Validation and test contests have exactly one HIT of each kind; for train the first.
      desc = (hits.get('description_hit') or [{}])[0]
      links = (hits.get('links_hit') or [{}])[0]
      parts[str(number)] = {
          'scene': links.get('image_location') or '',
          'description': desc.get('image_description') or '',
          'uncanny': desc.get('image_uncanny_description') or '',
          'entities': [links[k] for k in sorted(links) if k.startswith('link_') and links[k]]}
    except (AttributeError, TypeError, KeyError, IndexError):
      raise ValueError(f'{path}: contest {number!r}: expected an object whose '
                       '"description_hit" and "links_hit" are lists of objects.') from None
  return parts


def _original_row(kind: str, record: Any, where: str) -> Row:
  """A hub-style row (no id yet) from one record of an original task file."""
  if not isinstance(record, dict):
    raise ValueError(f'{where}: expected a JSON object, got {type(record).__name__}.')
  fields = {'matching': ('choices', 'correct_idx'), 'ranking': ('A', 'B', 'label'),
            'explanation': ('caption', 'explanation')}[kind] + ('contest_number',)
  for field in fields:
    if field not in record:
      raise ValueError(f'{where}: missing field "{field}" (a {kind} record has '
                       f'{", ".join(fields)}).')
  row = {'contest_number': record['contest_number']}
  if kind == 'matching':
    choices = record['choices']
    try:
      row['caption_choices'] = [c['clean_caption'] for c in choices]
      row['label'] = LETTERS['matching'][int(record['correct_idx'])]
    except (TypeError, KeyError, IndexError, ValueError):
      raise ValueError(f'{where}: field "choices" must be 5 objects with "clean_caption" and '
                       f'"correct_idx" an index into them.') from None
  elif kind == 'ranking':
    row.update(caption_choices=[record['A'], record['B']], label=record['label'],
               winner_source=record.get('winner_source'))
  else:
    row.update(caption_choices=record['caption'], label=record['explanation'])
  return row


def read_original(path: str, kind: str, split: str, fold: Optional[int] = None) -> List[Row]:
  """Rows of one split of an original task file (`val` is our `validation`).

  from_description comes from the per-split annotations of split `fold` (default: the
  `split=K` in the file name, else 0) next to the file, when present.
  """
  data = jsonl.load_json(path)
  key = 'val' if split == 'validation' else split
  if not isinstance(data, dict) or not isinstance(data.get(key), list):
    raise ValueError(f'{path}: missing list "{key}" (expected an object with train/val/test).')
  if fold is None:
    match = re.search(r'split=(\d)', os.path.basename(path))
    fold = int(match.group(1)) if match else 0
  notes = _annotations(os.path.dirname(path), fold)
  rows = []
  for i, record in enumerate(data[key]):
    where = f'{path}: {key}[{i}]'
    row = _original_row(kind, record, where)
    row['instance_id'] = f'{row["contest_number"]}_{i}'
    row['from_description'] = from_description(
        kind, row['caption_choices'], **notes.get(str(row['contest_number']), {}))
    rows.append(check_row(row, kind, where))
  return rows


def find_files(folder: str, kind: str, fold: int, split: str) -> List[str]:
  """The file(s) holding (kind, fold, split) in `folder`, by the module docstring's layout.

  Returns:
    list of str: one export file, the hub's parquet shards, or one original task file.

  Raises:
    FileNotFoundError listing the paths looked for and how to set the folder.
  """
  config = config_name(kind, fold)
  candidates = [os.path.join(folder, config, f'{split}.jsonl'),
                os.path.join(folder, config, f'{split}.parquet')]
  for path in candidates:
    if gfile.exists(path):
      return [path]
  shards = os.path.join(folder, config, f'{split}-*.parquet')
  candidates.append(shards)
  if gfile.glob(shards):
    return sorted(gfile.glob(shards))
  for sub in ('', 'tasks'):
    path = os.path.join(folder, sub, ORIGINAL_FILES[kind].format(fold))
    candidates.append(path)
    if gfile.exists(path):
      return [path]
  raise FileNotFoundError(
      f'no {config} {split} data in {folder}: looked for {", ".join(candidates)}. Set '
      f'{ENV_VAR} or caption_contest.data_dir.path to a folder in that layout.')


def read_file(path: str, kind: str, split: str, fold: Optional[int] = None) -> List[Row]:
  """Rows of one (kind, split) file; the format from its name (.jsonl, .parquet, else an
  original task file, whose annotations are those of split `fold`)."""
  if path.endswith('.jsonl'):
    return read_jsonl(path, kind)
  if path.endswith('.parquet'):
    return read_parquet(path, kind)
  return read_original(path, kind, split, fold)


def load_rows(kind: str, fold: int, split: str, folder: Optional[str] = None) -> List[Row]:
  """Rows of task `kind`, cross-validation split `fold`, split `split` (train/validation/test).

  Args:
    kind: str, one of KINDS.
    fold: int, 0-4.
    split: str, one of SPLITS.
    folder: str, the data folder; default data_dir().
  Returns:
    list of dict rows (FIELDS), in file order.
  """
  if split not in SPLITS:
    raise ValueError(f'unknown split {split!r}; splits: {SPLITS}.')
  folder = folder or data_dir()
  return [row for path in find_files(folder, kind, fold, split)
          for row in read_file(path, kind, split, fold)]

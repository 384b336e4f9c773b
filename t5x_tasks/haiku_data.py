"""Deep Haiku raw data: the `statworx/haiku` columns, parquet/text/CSV readers, and prep.

`statworx/haiku` is one parquet (train.parquet) with columns `source`, `text` (the haiku,
lines joined by " / "), `text_phonemes`, `keywords` (KeyBERT topics), `keyword_phonemes`,
`gruen_score` (GRUEN text quality) and `text_punc` (the text with punctuation restored).
Readers take local or gs:// parquet (through t5x_tasks.gfile); their errors name the file (and
line or row) and say how to fix it.

`prep(input_path)` ("t5x prep haiku IN OUT", which writes OUT atomically) turns one haiku per
line (" / " between its lines, .txt) or a CSV whose columns 0, 1, 2 are the lines (.csv) into
a table with the dataset's columns; a .parquet is checked and passed through. `text` is
the haiku lowercased with punctuation other than in-word apostrophes removed, `text_punc` the
haiku as written, the phonemes haiku_phonetics.phonemize(). `keywords` come from
`extract_keywords()`, a stand-in for the dataset's KeyBERT: the (by default two) content
words, outside a stop-word list and at least 3 letters long, that occur most often, the
longer first, the earlier first; written in the order they occur. `gruen_score` is left null
(GRUEN needs a model); `source` is the given one, else a CSV's own `source` column, else the
input file's stem.

The bundled sample is 50 haiku written for this project (t5x_tasks/data/haiku_sample.txt),
built by `python data_prep/make_haiku_sample.py`, i.e. prep() on the txt.
"""
import csv
import os
import re
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import pyarrow as pa
import pyarrow.parquet as pq

from t5x_tasks import gfile, haiku_phonetics, jsonl

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
SAMPLE_TXT = os.path.join(DATA_DIR, 'haiku_sample.txt')
SAMPLE_PARQUET = os.path.join(DATA_DIR, 'haiku_sample.parquet')
DATA_ENV = 'HAIKU_DATA'  # names the parquet the tasks read (haiku.data_path())

DATASET_COLUMNS = ('source', 'text', 'text_phonemes', 'keywords', 'keyword_phonemes',
                   'gruen_score', 'text_punc')
REQUIRED_COLUMNS = ('text', 'text_phonemes', 'keywords', 'keyword_phonemes')
SCHEMA = pa.schema([(name, pa.float64() if name == 'gruen_score' else pa.string())
                    for name in DATASET_COLUMNS])

# Function words and fillers that never make a topic (our own list).
STOP_WORDS = frozenset("""
a about above across after again against all almost alone along already also although always
am among an and another any anyone anything are around as at away back be because been before
behind being below beneath beside besides between beyond both but by can cannot could did do
does doing done down during each either else even ever every few for from further had has have
having he her here hers herself him himself his how however i if in inside into is it its itself
just least less like many may me might mine more most much must my myself near neither never
no nobody none nor not nothing now of off often on once one only onto or other others our ours
ourselves out over own past perhaps please quite rather really same shall she should since so
some someone something still such than that the their theirs them themselves then there these
they this those though through thus till to too toward towards under until up upon us very was
we were what whatever when where whether which while who whom whose why will with within without
would yet you your yours yourself yourselves i'm i've i'd i'll it's don't can't won't isn't
aren't wasn't didn't doesn't let's that's there's what's you're you've we're they're he's she's
oh ah yes say says said get gets got go goes going went gone come comes came make makes made
first last next whole instead
""".split())

Row = Dict[str, Any]


# ---------------------------------------------------------------------------------------------
# Text and keywords

def normalize_text(lines: Sequence[str]) -> str:
  """The dataset's `text` for a haiku: lowercase words, no punctuation, lines by " / ".

  Args:
    lines: sequence of str, the haiku's lines as written.
  Returns:
    str, e.g. ['An old, silent pond...', 'A frog'] -> 'an old silent pond / a frog'.
  """
  return haiku_phonetics.LINE_SEP.join(' '.join(haiku_phonetics.words(line)) for line in lines)


def extract_keywords(text: str, max_keywords: int = 2) -> str:
  """Topic words of a haiku; a simple stand-in for the KeyBERT topics of `statworx/haiku`.

  Picks content words (not in STOP_WORDS, at least 3 letters, no apostrophe) by frequency,
  then length, then position, and writes them in the order they first occur.

  Args:
    text: str, the haiku (any line separators).
    max_keywords: int, at most this many keywords.
  Returns:
    str, space-separated keywords, e.g. 'pond frog'; the longest word when no content word.
  """
  tokens = haiku_phonetics.words(text)
  first: Dict[str, int] = {}
  counts: Dict[str, int] = {}
  for i, token in enumerate(tokens):
    if len(token) >= 3 and token.isalpha() and token not in STOP_WORDS:
      first.setdefault(token, i)
      counts[token] = counts.get(token, 0) + 1
  if not first:
    return max(tokens, key=len) if tokens else ''
  ranked = sorted(first, key=lambda w: (-counts[w], -len(w), first[w]))[:max_keywords]
  return ' '.join(sorted(ranked, key=first.get))


# ---------------------------------------------------------------------------------------------
# Raw formats: parquet, plain text, CSV

def _check_columns(path: str, names: Iterable[str]) -> None:
  """Raises ValueError naming `path` and the REQUIRED_COLUMNS missing from `names`."""
  missing = [c for c in REQUIRED_COLUMNS if c not in set(names)]
  if missing:
    raise ValueError(
        f'{path}: missing column(s) {", ".join(missing)}; a statworx/haiku parquet has '
        f'{", ".join(DATASET_COLUMNS)}. Build one from text or CSV with `t5x prep haiku`.')


def _read_table(path: str, columns: Optional[Sequence[str]] = None) -> pa.Table:
  """Reads a local or gs:// parquet after checking REQUIRED_COLUMNS; errors name the file."""
  if not gfile.exists(path):
    raise FileNotFoundError(f'{path}: no such haiku parquet; set haiku.data_path.path or '
                            f'${DATA_ENV}, or build one with `t5x prep haiku`.')
  # Whole file into memory: the dataset is a few MB, and GFile is no pyarrow file.
  with gfile.open(path, 'rb') as f:
    data = pa.BufferReader(f.read())
  try:
    parquet = pq.ParquetFile(data)
  except (OSError, pa.ArrowException) as e:
    raise ValueError(f'{path}: not a readable parquet file ({e})') from e
  _check_columns(path, parquet.schema_arrow.names)
  return parquet.read(columns=list(columns) if columns else None)


def read_parquet(path: str) -> List[Row]:
  """Rows of a `statworx/haiku`-style parquet with the four fields the tasks use.

  Rows with an empty or null field are skipped (the formats need all four).

  Args:
    path: str, the parquet file.
  Returns:
    list of dict with keys REQUIRED_COLUMNS (str values), in file order.
  Raises:
    ValueError: naming the file, when it is not parquet or lacks a required column.
  """
  table = _read_table(path, REQUIRED_COLUMNS)
  rows = table.to_pylist()
  return [r for r in rows if all(isinstance(r[c], str) and r[c].strip() for c in REQUIRED_COLUMNS)]


def _haiku_lines(path: str, where: str, lines: Sequence[str]) -> List[str]:
  """Checks a haiku has three non-empty lines; the error names the file and line/row."""
  lines = [line.strip() for line in lines]
  if len(lines) != 3 or not all(lines):
    raise ValueError(
        f'{path}:{where}: expected a haiku of three non-empty lines, got {len(lines)} '
        f'line(s) {lines!r}; fix or delete it.')
  return lines


def read_text(path: str) -> List[List[str]]:
  """Haiku from plain text: one per line, " / " between its lines; blank lines skipped.

  Args:
    path: str, a UTF-8 text file.
  Returns:
    list of [line1, line2, line3].
  Raises:
    ValueError: naming the file and line, for a line that is not three " / "-separated lines.
  """
  haiku = []
  for number, line in jsonl.lines(path):  # errors name path:line; a BOM is accepted
    if line.strip():
      haiku.append(_haiku_lines(path, f'line {number}', re.split(r'\s+/\s+', line.strip())))
  return haiku


def _header_columns(row: Sequence[str]) -> Optional[Tuple[List[int], Optional[int]]]:
  """Positions of the line columns (and of `source`) if `row` is a header, else None.

  A header names the line columns '0', '1', '2' (as pandas writes them, possibly after an
  unnamed index column) or 'line1', 'line2', 'line3', in any position.
  """
  names = [cell.strip().lower() for cell in row]
  source = names.index('source') if 'source' in names else None
  for wanted in (['0', '1', '2'], ['line1', 'line2', 'line3']):
    if all(w in names for w in wanted):
      return [names.index(w) for w in wanted], source
  return None


def read_csv(path: str) -> List[Tuple[List[str], Optional[str]]]:
  """Haiku from CSV: columns 0, 1, 2 hold the lines (or the columns a header names so).

  Args:
    path: str, a UTF-8 CSV file; extra columns are ignored except a header's `source`.
  Returns:
    list of ([line1, line2, line3], source or None).
  Raises:
    ValueError: naming the file and row, for a row without three non-empty lines.
  """
  haiku = []
  reader = csv.reader(text for _, text in jsonl.lines(path))  # bad UTF-8 names path:line
  columns, source = [0, 1, 2], None
  for index, row in enumerate(reader):
    if not any(cell.strip() for cell in row):
      continue
    if index == 0:
      header = _header_columns(row)
      if header is not None:
        columns, source = header
        continue
    where = f'row {reader.line_num}'
    if len(row) <= max(columns):
      raise ValueError(f'{path}:{where}: expected columns {columns} with the three lines, '
                       f'got {len(row)} column(s) {row!r}; fix or delete the row.')
    lines = _haiku_lines(path, where, [row[c] for c in columns])
    row_source = row[source].strip() if source is not None and source < len(row) else ''
    haiku.append((lines, row_source or None))
  return haiku


# ---------------------------------------------------------------------------------------------
# prep: text / CSV -> the dataset's parquet

def make_row(lines: Sequence[str], source: str, max_keywords: int = 2) -> Row:
  """One dataset row (all DATASET_COLUMNS) for a haiku given as its three lines.

  Args:
    lines: sequence of str, the lines as written.
    source: str, the `source` value.
    max_keywords: int, passed to extract_keywords().
  Returns:
    dict keyed by DATASET_COLUMNS; gruen_score is None.
  """
  text = normalize_text(lines)
  keywords = extract_keywords(text, max_keywords)
  return {
      'source': source,
      'text': text,
      'text_phonemes': haiku_phonetics.phonemize(text),
      'keywords': keywords,
      'keyword_phonemes': haiku_phonetics.phonemize(keywords),
      'gruen_score': None,
      'text_punc': haiku_phonetics.LINE_SEP.join(line.strip() for line in lines),
  }


def _passthrough_table(path: str) -> pa.Table:
  """A parquet's table with the dataset's columns; absent optional columns become null."""
  table = _read_table(path)
  columns = [table.column(name) if name in table.column_names
             else pa.nulls(table.num_rows, SCHEMA.field(name).type) for name in DATASET_COLUMNS]
  try:
    return pa.Table.from_arrays(columns, names=list(DATASET_COLUMNS)).cast(SCHEMA)
  except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as e:
    raise ValueError(f'{path}: columns do not have the dataset types {SCHEMA} ({e})') from e


def prep(input_path: str, source: Optional[str] = None, max_keywords: int = 2) -> pa.Table:
  """Converts haiku text, CSV or parquet into a `statworx/haiku`-style table ("t5x prep haiku"
  writes it as parquet, atomically, with t5x.fs_utils).

  Args:
    input_path: str; .txt (one haiku per line, " / " between lines), .csv (columns 0, 1, 2)
      or .parquet (checked and passed through with the dataset's columns).
    source: str or None, the `source` of every row; default a CSV row's own `source`
      column, else the input file's stem.
    max_keywords: int, keywords per haiku.
  Returns:
    pa.Table with SCHEMA's columns, one row per haiku.
  Raises:
    ValueError: naming the file and line/row of bad input, or an unknown extension.
  """
  ext = os.path.splitext(input_path)[1].lower()
  default_source = source or os.path.splitext(os.path.basename(input_path))[0]
  if ext == '.parquet':
    table = _passthrough_table(input_path)
  elif ext in ('.txt', '.csv'):
    if ext == '.txt':
      haiku = [(lines, None) for lines in read_text(input_path)]
    else:
      haiku = read_csv(input_path)
    rows = [make_row(lines, source or row_source or default_source, max_keywords)
            for lines, row_source in haiku]
    table = pa.Table.from_pylist(rows, schema=SCHEMA)
  else:
    raise ValueError(f'{input_path}: unknown extension {ext!r}; prep reads .txt (one haiku per '
                     'line, " / " between lines), .csv (lines in columns 0, 1, 2) or .parquet')
  return table

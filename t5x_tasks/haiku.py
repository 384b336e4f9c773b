"""Deep Haiku: the `statworx/haiku` data, its four multitask formats, and the 5-7-5 metric.

Deep Haiku teaches a language model the 5-7-5 form by showing each haiku four ways
(the formats of the seed's model cards, fabianmmueller/deep-haiku-gpt-2 and -gpt-j-6b-8bit,
copied character for character):

  haiku_topic2graphemes     (keywords = text)
  haiku_topic2phonemes      <keyword_phonemes = text_phonemes>
  haiku_graphemes2phonemes  [text = text_phonemes]
  haiku_phonemes2graphemes  {text_phonemes = text}

The seed trained decoder-only models on the full strings and prompted with `(dog rain =`.
For T5 each string is cut after ` =`: the encoder gets the opening bracket, the source
field and `=`; the decoder target is the other field plus the closing bracket, with no
leading space (`encode()`). So the prompt `(dog rain =` yields `<haiku>)`. The mixture
`haiku_multitask` samples the four tasks at equal rates.

Note for T5's own vocabulary: it has no piece for `<`, `{` or `}` (C4 dropped pages with
braces), so those brackets tokenize to <unk> and decode as ` ⁇ `. The formats are kept as
the seed wrote them; the tasks still differ by content (keyword vs. haiku phonemes) and the
postprocessor strips a trailing ` ⁇` as it strips a closing bracket.

Data. `statworx/haiku` is one parquet (train.parquet) with columns `source`, `text` (the
haiku, lines joined by " / "), `text_phonemes`, `keywords` (KeyBERT topics), `keyword_phonemes`,
`gruen_score` (GRUEN text quality) and `text_punc` (the text with punctuation restored).
The tasks read, when a dataset is built (not at import), the parquet named by the gin
binding `haiku.data_path.path`, else by the environment variable HAIKU_DATA, else the
bundled sample t5x_tasks/data/haiku_sample.parquet; local or gs:// (through tf.io.gfile).
Splits: the dataset has only a train file, so `split_of()` puts a haiku in `validation` when
the first 8 bytes of SHA-256 of its `text`, as an integer, are 0-4 mod 100 (about 5%),
else in `train`: stable across runs, machines and Python versions, unlike hash().

Phoneme format (`phonemize()`), following the description of the dataset's `text_phonemes`
(we could not inspect its rows here): lowercase ARPAbet phones without stress digits; the
phones of one syllable written together; syllables joined by "|"; words by spaces; lines by
" / ". "an old silent pond" -> "aen owld say|lahnt paand".
Pronunciations are CMUdict's first (pronouncing.phones_for_word). Syllable rule: one syllable
per vowel phone; a lone consonant between two vowels starts the next syllable; in a longer
cluster the first consonant closes the previous syllable and the rest start the next;
consonants before the first vowel / after the last belong to the first / last syllable.
Fallback for words CMUdict lacks: the letters themselves are the phones. They are split by
the same rule with each run of vowel letters (a e i o u y) as one nucleus, then adjacent
pieces are merged from the end (silent e), or the longest piece halved, until there are
syllapy.count(word) pieces: "blorptastic" -> "blor|ptas|tic". Tokens without letters
(digits) are dropped from the phonemes and count 0 syllables: write numbers as words.

`prep(input_path, out_path)` ("t5x prep haiku") turns one haiku per line (" / " between its
lines, .txt) or a CSV whose columns 0, 1, 2 are the lines (.csv) into a parquet with the
dataset's columns; a .parquet is checked and passed through. `text` is the haiku lowercased
with punctuation other than in-word apostrophes removed, `text_punc` the haiku as written.
`keywords` come from `extract_keywords()`, a stand-in for the dataset's KeyBERT: the (by
default two) content words, outside a stop-word list and at least 3 letters long, that occur
most often, the longer first, the earlier first; written in the order they occur. `gruen_score`
is left null (GRUEN needs a model); `source` is the given one, else a CSV's own `source`
column, else the input file's stem.

Metric (`score()`, `score_file()`): the percent of generations whose lines count exactly
5, 7, 5 syllables (CMUdict's first pronunciation, syllapy for unknown words; punctuation
stripped; hyphenated words count as their parts), and, with topics, the percent whose words
include every topic keyword (case-insensitive whole words).

Vocabulary. Tasks are registered on import with the project's shared
`vocabularies.TaskVocabulary()`: T5's public vocabulary unless gin binds
`vocabularies.task_vocabulary` (e.g. `.name = 'quickstart'`); its file is read at first use,
so importing loads nothing. `register(vocabulary)` re-registers all tasks and the mixture
with another seqio.Vocabulary (tests, notebooks).

The bundled sample is 50 haiku written for this project (t5x_tasks/data/haiku_sample.txt),
built by `python data_prep/make_haiku_sample.py`, i.e. prep() on the txt.
"""
import csv
import functools
import hashlib
import json
import os
import re
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import gin
import pronouncing
import pyarrow as pa
import pyarrow.parquet as pq
import seqio
import syllapy
import tensorflow as tf

from t5x_tasks import vocabularies

DATA_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), 'data')
SAMPLE_TXT = os.path.join(DATA_DIR, 'haiku_sample.txt')
SAMPLE_PARQUET = os.path.join(DATA_DIR, 'haiku_sample.parquet')
DATA_ENV = 'HAIKU_DATA'

DATASET_COLUMNS = ('source', 'text', 'text_phonemes', 'keywords', 'keyword_phonemes',
                   'gruen_score', 'text_punc')
REQUIRED_COLUMNS = ('text', 'text_phonemes', 'keywords', 'keyword_phonemes')
SCHEMA = pa.schema([(name, pa.float64() if name == 'gruen_score' else pa.string())
                    for name in DATASET_COLUMNS])

LINE_SEP = ' / '
SPLITS = ('train', 'validation')
VALIDATION_PERCENT = 5
FORM = (5, 7, 5)

# name: (opening bracket, source column, target column, closing bracket)
FORMATS = {
    'topic2graphemes': ('(', 'keywords', 'text', ')'),
    'topic2phonemes': ('<', 'keyword_phonemes', 'text_phonemes', '>'),
    'graphemes2phonemes': ('[', 'text', 'text_phonemes', ']'),
    'phonemes2graphemes': ('{', 'text_phonemes', 'text', '}'),
}
TASK_PREFIX = 'haiku_'
MIXTURE_NAME = 'haiku_multitask'
PHONEME_TARGETS = ('topic2phonemes', 'graphemes2phonemes')
UNK_SURFACE = '⁇'  # what SentencePiece decodes <unk> to

VOWEL_PHONES = frozenset('aa ae ah ao aw ay eh er ey ih iy ow oy uh uw'.split())
VOWEL_LETTERS = 'aeiouy'

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
# Words, syllables, phonemes

def words(text: str) -> List[str]:
  """Lowercase words of `text`: punctuation stripped, in-word apostrophes kept, hyphens split.

  Args:
    text: str, any text (one line or several).
  Returns:
    list[str], e.g. "Snow-covered, isn't it?" -> ['snow', 'covered', "isn't", 'it'].
  """
  text = text.lower().replace('\u2019', "'")
  return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text)


def split_lines(haiku: str) -> List[str]:
  """The non-empty lines of `haiku`, split on " / " or newlines.

  Args:
    haiku: str, e.g. 'an old silent pond / a frog jumps into the pond / splash silence again'.
  Returns:
    list[str], stripped lines.
  """
  parts = re.split(r'\s+/\s+|\s*\n\s*', haiku.strip())
  return [p.strip() for p in parts if p.strip()]


def _cmu_phones(word: str) -> Optional[List[str]]:
  """Lowercase, stress-free phones of CMUdict's first pronunciation of `word`, or None."""
  pronunciations = pronouncing.phones_for_word(word)
  if not pronunciations:
    return None
  return [re.sub(r'\d', '', p).lower() for p in pronunciations[0].split()]


def word_syllable_count(word: str) -> int:
  """Syllables of one word: vowel phones of CMUdict's first pronunciation, else syllapy.

  Args:
    word: str, a lowercase word as `words()` returns it.
  Returns:
    int; 0 for tokens without letters (digits).
  """
  phones = _cmu_phones(word)
  if phones is not None:
    return sum(p in VOWEL_PHONES for p in phones)
  if not re.search('[a-z]', word):
    return 0
  return max(1, syllapy.count(word))


def syllable_counts(haiku: str) -> List[int]:
  """Syllables per line of a haiku in letters (lines split on " / " or newlines).

  Args:
    haiku: str, e.g. 'an old silent pond / a frog jumps into the pond / splash silence again'.
  Returns:
    list[int], one count per line: [5, 7, 5] for the example.
  """
  return [sum(word_syllable_count(w) for w in words(line)) for line in split_lines(haiku)]


def phoneme_syllable_counts(haiku_phonemes: str) -> List[int]:
  """Syllables per line of a haiku in the phoneme format: each word has its "|" count + 1.

  Args:
    haiku_phonemes: str, e.g. 'aen owld say|lahnt paand / ...'.
  Returns:
    list[int], one count per line.
  """
  return [sum(w.count('|') + 1 for w in line.split() if re.search('[a-z]', w))
          for line in split_lines(haiku_phonemes)]


def is_575(haiku: str, phonemes: bool = False) -> bool:
  """Whether `haiku` has exactly three lines of 5, 7 and 5 syllables.

  Args:
    haiku: str, lines separated by " / " or newlines.
    phonemes: bool, True when `haiku` is in the phoneme format.
  Returns:
    bool.
  """
  counts = phoneme_syllable_counts(haiku) if phonemes else syllable_counts(haiku)
  return tuple(counts) == FORM


def _syllabify(units: Sequence[str], is_vowel: Callable[[str], bool]) -> List[List[str]]:
  """Groups `units` into syllables around their vowel units (the rule in the module doc)."""
  nuclei = [i for i, unit in enumerate(units) if is_vowel(unit)]
  if not nuclei:
    return [list(units)] if units else []
  starts = [0]
  for prev, nxt in zip(nuclei, nuclei[1:]):
    between = nxt - prev - 1
    # No consonant: split between the vowels; one: it starts the next syllable;
    # more: the first closes the previous syllable, the rest start the next.
    starts.append(nxt if between == 0 else nxt - 1 if between == 1 else prev + 2)
  ends = starts[1:] + [len(units)]
  return [list(units[s:e]) for s, e in zip(starts, ends)]


def _fit_pieces(pieces: List[str], count: int) -> List[str]:
  """Merges the last two pieces, or halves the longest, until there are `count` pieces."""
  pieces = list(pieces)
  while len(pieces) > count:
    pieces[-2:] = [pieces[-2] + pieces[-1]]
  while len(pieces) < count:
    longest = max(range(len(pieces)), key=lambda i: len(pieces[i]))
    piece = pieces[longest]
    if len(piece) < 2:
      break  # nothing left to halve: fewer letters than syllapy's count
    half = len(piece) // 2
    pieces[longest:longest + 1] = [piece[:half], piece[half:]]
  return pieces


def _letter_syllables(word: str) -> List[str]:
  """Pseudo-syllables of a word CMUdict lacks: its letters, split as the module doc says."""
  letters = re.sub('[^a-z]', '', word)
  if not letters:
    return []
  units = re.findall(f'[{VOWEL_LETTERS}]+|[^{VOWEL_LETTERS}]', letters)
  pieces = [''.join(s) for s in _syllabify(units, lambda u: u[0] in VOWEL_LETTERS)]
  return _fit_pieces(pieces, max(1, syllapy.count(word)))


def word_phonemes(word: str) -> str:
  """One word in the phoneme format: syllables of concatenated phones joined by "|".

  Args:
    word: str, a lowercase word as `words()` returns it.
  Returns:
    str, e.g. 'silent' -> 'say|lahnt'; '' for tokens without letters.
  """
  phones = _cmu_phones(word)
  if phones is None:
    return '|'.join(_letter_syllables(word))
  return '|'.join(''.join(s) for s in _syllabify(phones, lambda p: p in VOWEL_PHONES))


def phonemize(text: str) -> str:
  """Text (one or more lines) in the phoneme format: words by spaces, lines by " / ".

  Args:
    text: str, e.g. 'an old silent pond / a frog jumps into the pond'.
  Returns:
    str, e.g. 'aen owld say|lahnt paand / ah fraag jhahmps ihn|tuw dhah paand'.
  """
  lines = []
  for line in split_lines(text):
    lines.append(' '.join(p for p in (word_phonemes(w) for w in words(line)) if p))
  return LINE_SEP.join(lines)


def normalize_text(lines: Sequence[str]) -> str:
  """The dataset's `text` for a haiku: lowercase words, no punctuation, lines by " / ".

  Args:
    lines: sequence of str, the haiku's lines as written.
  Returns:
    str, e.g. ['An old, silent pond...', 'A frog'] -> 'an old silent pond / a frog'.
  """
  return LINE_SEP.join(' '.join(words(line)) for line in lines)


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
  tokens = words(text)
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
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path}: no such haiku parquet; set haiku.data_path.path or '
                            f'${DATA_ENV}, or build one with `t5x prep haiku`.')
  # Whole file into memory: the dataset is a few MB, and GFile is no pyarrow file.
  with tf.io.gfile.GFile(path, 'rb') as f:
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
  with open(path, encoding='utf-8-sig') as f:
    for number, line in enumerate(f, start=1):
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
  with open(path, encoding='utf-8-sig', newline='') as f:
    reader = csv.reader(f)
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
      'text_phonemes': phonemize(text),
      'keywords': keywords,
      'keyword_phonemes': phonemize(keywords),
      'gruen_score': None,
      'text_punc': LINE_SEP.join(line.strip() for line in lines),
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


def write_parquet_atomic(table: pa.Table, out_path: str) -> None:
  """Writes `table` to `out_path` via a temporary file in the same folder and os.replace.

  A failure leaves any earlier `out_path` untouched and no temporary file behind.
  """
  out_dir = os.path.dirname(os.path.abspath(out_path))
  os.makedirs(out_dir, exist_ok=True)
  tmp = os.path.join(out_dir, f'.{os.path.basename(out_path)}.tmp-{os.getpid()}')
  try:
    pq.write_table(table, tmp)
    os.replace(tmp, out_path)
  finally:
    if os.path.exists(tmp):
      os.remove(tmp)


def prep(input_path: str, out_path: str, source: Optional[str] = None,
         max_keywords: int = 2) -> int:
  """Converts haiku text, CSV or parquet into a `statworx/haiku`-style parquet ("t5x prep haiku").

  Args:
    input_path: str; .txt (one haiku per line, " / " between lines), .csv (columns 0, 1, 2)
      or .parquet (checked and passed through with the dataset's columns).
    out_path: str, the parquet to write (atomically: temporary file, then rename).
    source: str or None, the `source` of every row; default a CSV row's own `source`
      column, else the input file's stem.
    max_keywords: int, keywords per haiku.
  Returns:
    int, the number of rows written.
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
  write_parquet_atomic(table, out_path)
  return table.num_rows


# ---------------------------------------------------------------------------------------------
# Formats, splits, seqio tasks

def encode(row: Row, fmt: str) -> Dict[str, str]:
  """The encoder input and decoder target of `row` in multitask format `fmt`.

  Args:
    row: dict with the REQUIRED_COLUMNS fields.
    fmt: str, a key of FORMATS, e.g. 'topic2graphemes'.
  Returns:
    {'inputs': '(dog rain =', 'targets': 'an old ... again)'}: their join with one space
    is the seed's full string `(keywords = text)`.
  """
  opening, source, target, closing = FORMATS[fmt]
  return {'inputs': f'{opening}{row[source]} =', 'targets': f'{row[target]}{closing}'}


def split_of(text: str) -> str:
  """'validation' for about VALIDATION_PERCENT% of haiku by a stable hash of `text`, else 'train'.

  Args:
    text: str, the haiku's `text`.
  Returns:
    str, 'train' or 'validation'.
  """
  digest = hashlib.sha256(text.encode('utf-8')).digest()
  return 'validation' if int.from_bytes(digest[:8], 'big') % 100 < VALIDATION_PERCENT else 'train'


@gin.configurable(module='haiku')
def data_path(path: Optional[str] = None) -> str:
  """The parquet the tasks read: the gin binding, else $HAIKU_DATA, else the bundled sample."""
  return path or os.environ.get(DATA_ENV) or SAMPLE_PARQUET


@functools.lru_cache(maxsize=4)
def _cached_rows(path: str, mtime_ns: int, size: int) -> Tuple[Row, ...]:
  """read_parquet(path), cached per file version (the four tasks read the same file)."""
  del mtime_ns, size  # only part of the cache key
  return tuple(read_parquet(path))


def split_rows(split: str, path: Optional[str] = None) -> List[Row]:
  """Rows of `split` from `path` (default data_path()).

  Args:
    split: str, 'train' or 'validation'.
    path: str or None.
  Returns:
    list of row dicts, in file order.
  """
  if split not in SPLITS:
    raise ValueError(f'Deep Haiku tasks have splits {SPLITS}, not {split!r}')
  path = path or data_path()
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path}: no such haiku parquet; set haiku.data_path.path or '
                            f'${DATA_ENV}, or build one with `t5x prep haiku`.')
  stat = tf.io.gfile.stat(path)
  return [r for r in _cached_rows(path, stat.mtime_nsec, stat.length)
          if split_of(r['text']) == split]


def _dataset_fn_for(fmt: str) -> Callable[..., tf.data.Dataset]:
  """A seqio dataset_fn yielding {'inputs', 'targets'} strings of format `fmt`."""
  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
    # One file, nothing to shuffle at file level; seqio's buffer shuffles examples.
    del shuffle_files, seed
    examples = [encode(r, fmt) for r in split_rows(split)]
    return tf.data.Dataset.from_tensor_slices({
        key: tf.constant([e[key] for e in examples], dtype=tf.string, shape=[len(examples)])
        for key in ('inputs', 'targets')})
  dataset_fn.__name__ = f'haiku_{fmt}_dataset_fn'
  return dataset_fn


def clean_generation(text: str) -> str:
  """A generation without its format brackets, ready to score.

  Drops a seed-style prefix ("(dog rain = ...") and a trailing closing bracket, or the
  ` ⁇` that T5's vocabulary decodes `>` and `}` to.

  Args:
    text: str, a decoded prediction.
  Returns:
    str.
  """
  text = text.strip()
  if text[:1] in '([<{' and ' = ' in text:
    text = text.split(' = ', 1)[1]
  for closing in (UNK_SURFACE, ')', ']', '>', '}'):
    if text.endswith(closing):
      return text[:-len(closing)].rstrip()
  return text


def postprocess(output: Union[str, bytes], example: Any = None, is_target: bool = False) -> str:
  """seqio postprocess_fn of the haiku tasks: clean_generation() on predictions and targets.

  seqio's evaluator passes targets as the pretokenized bytes, predictions as decoded str.
  """
  del example, is_target
  if isinstance(output, bytes):
    output = output.decode('utf-8')
  return clean_generation(output)


def task_names() -> List[str]:
  """The four task names, in FORMATS order."""
  return [TASK_PREFIX + fmt for fmt in FORMATS]


def register(vocabulary: Optional[seqio.Vocabulary] = None) -> List[seqio.Task]:
  """Registers (or re-registers) the four haiku tasks and `haiku_multitask`.

  Args:
    vocabulary: seqio.Vocabulary for inputs and targets; default the shared
      vocabularies.TaskVocabulary() (T5's unless gin binds vocabularies.task_vocabulary).
  Returns:
    list of the four seqio.Task, in FORMATS order.
  """
  vocabulary = vocabulary or vocabularies.TaskVocabulary()
  features = {'inputs': seqio.Feature(vocabulary, add_eos=True),
              'targets': seqio.Feature(vocabulary, add_eos=True)}
  # Re-importing or re-registering (tests, notebooks, reload) must not hit duplicate names.
  seqio.MixtureRegistry.remove(MIXTURE_NAME)
  tasks = []
  for fmt, name in zip(FORMATS, task_names()):
    seqio.TaskRegistry.remove(name)
    metric = seqio_phoneme_metric if fmt in PHONEME_TARGETS else seqio_metric
    tasks.append(seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(dataset_fn=_dataset_fn_for(fmt), splits=SPLITS),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        postprocess_fn=postprocess,
        output_features=features,
        metric_fns=[metric]))
  seqio.MixtureRegistry.add(MIXTURE_NAME, task_names(), default_rate=1.0)
  return tasks


# ---------------------------------------------------------------------------------------------
# Metric

def _topic_words(topic: Union[str, Sequence[str], None]) -> List[str]:
  """The keywords of a topic given as a string ('dog rain') or a list of strings."""
  if topic is None:
    return []
  if not isinstance(topic, str):
    topic = ' '.join(topic)
  return words(topic)


def score(generations: Sequence[str], topics: Optional[Sequence[Any]] = None,
          phonemes: bool = False) -> Dict[str, float]:
  """Share of 5-7-5 generations and, given topics, of generations using every topic word.

  Args:
    generations: sequence of str, haiku (format brackets are stripped by clean_generation).
    topics: optional sequence, one topic per generation: 'dog rain' or ['dog', 'rain'].
      Generations with an empty topic are left out of the inclusion share.
    phonemes: bool, True when the generations are in the phoneme format.
  Returns:
    {'count': n, 'percent_575': percent of generations with lines [5, 7, 5]} plus, with
    topics, 'percent_topic_words': percent containing each keyword as a whole word
    (case-insensitive). Percentages are 0.0 when there is nothing to count.
  """
  cleaned = [clean_generation(g) for g in generations]
  count = len(cleaned)
  hits = sum(is_575(g, phonemes) for g in cleaned)
  result = {'count': count, 'percent_575': 100.0 * hits / count if count else 0.0}
  if topics is not None:
    if len(topics) != count:
      raise ValueError(f'{count} generations but {len(topics)} topics')
    pairs = [(set(words(g)), _topic_words(t)) for g, t in zip(cleaned, topics)]
    pairs = [(found, wanted) for found, wanted in pairs if wanted]
    included = sum(set(wanted) <= found for found, wanted in pairs)
    result['percent_topic_words'] = 100.0 * included / len(pairs) if pairs else 0.0
  return result


def seqio_metric(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """seqio metric_fn of the grapheme tasks: score() of the predictions."""
  del targets  # the metric judges the form of each prediction, not its match to the target
  return score(predictions)


def seqio_phoneme_metric(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """seqio metric_fn of the phoneme tasks: score() of phoneme predictions ("|" syllables)."""
  del targets
  return score(predictions, phonemes=True)


def _read_jsonl(path: str, lines: Sequence[str]) -> Tuple[List[str], Optional[List[Any]]]:
  """Generations and topics from JSON Lines; errors name the file and line."""
  generations, topics = [], []
  for number, line in enumerate(lines, start=1):
    if not line.strip():
      continue
    try:
      record = json.loads(line)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}:line {number}: not valid JSON ({e})') from e
    if not isinstance(record, dict):
      raise ValueError(f'{path}:line {number}: expected a JSON object, got {type(record).__name__}')
    generation = record.get('prediction', record.get('generation'))
    if not isinstance(generation, str):
      raise ValueError(f'{path}:line {number}: needs a string field "prediction" or '
                       f'"generation"; has {sorted(record)}')
    generations.append(generation)
    topics.append(record.get('topic', record.get('keywords')))
  return generations, (topics if any(t for t in topics) else None)


def score_file(path: str, phonemes: bool = False) -> Dict[str, float]:
  """score() of a predictions file ("t5x score haiku FILE").

  Args:
    path: str; JSON Lines (.jsonl/.json, or a first line starting with "{") of objects with
      "prediction" (or "generation") and optional "topic" (or "keywords"), or plain text
      with one haiku per line (" / " between its lines).
    phonemes: bool, True when the predictions are in the phoneme format.
  Returns:
    dict, as score().
  Raises:
    ValueError: naming the file (and line) when it is malformed or holds no generation.
  """
  with open(path, encoding='utf-8-sig') as f:
    lines = f.read().splitlines()
  first = next((line for line in lines if line.strip()), '')
  if path.endswith(('.jsonl', '.json')) or first.lstrip().startswith('{'):
    generations, topics = _read_jsonl(path, lines)
  else:
    generations, topics = [line for line in lines if line.strip()], None
  if not generations:
    raise ValueError(f'{path}: no generations to score')
  return score(generations, topics, phonemes=phonemes)


register()

"""Deep Haiku SeqIO tasks: the four multitask formats, the hash split and `haiku_multitask`.

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

Data (columns, readers, prep: haiku_data). The tasks read, when a dataset is built (not at
import), the parquet named by the gin binding `haiku.data_path.path`, else by the environment
variable HAIKU_DATA, else the bundled sample t5x_tasks/data/haiku_sample.parquet; local or
gs:// (through tf.io.gfile). Splits: the dataset has only a train file, so `split_of()` puts
a haiku in `validation` when the first 8 bytes of SHA-256 of its `text`, as an integer, are
0-4 mod 100 (about 5%), else in `train`: stable across runs, machines and Python versions,
unlike hash(). Metrics: haiku_metrics.seqio_metric, or seqio_phoneme_metric for the tasks
with phoneme targets.

Vocabulary. Tasks are registered on import with the project's shared
`vocabularies.TaskVocabulary()`: T5's public vocabulary unless gin binds
`vocabularies.task_vocabulary` (e.g. `.name = 'quickstart'`); its file is read at first use,
so importing loads nothing. `register(vocabulary)` re-registers all tasks and the mixture
with another seqio.Vocabulary (tests, notebooks).
"""
import functools
import hashlib
import os
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import gin
import seqio
import tensorflow as tf

from t5x_tasks import haiku_data, haiku_metrics, vocabularies

SPLITS = ('train', 'validation')
VALIDATION_PERCENT = 5

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


def encode(row: haiku_data.Row, fmt: str) -> Dict[str, str]:
  """The encoder input and decoder target of `row` in multitask format `fmt`.

  Args:
    row: dict with the haiku_data.REQUIRED_COLUMNS fields.
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
  return path or os.environ.get(haiku_data.DATA_ENV) or haiku_data.SAMPLE_PARQUET


@functools.lru_cache(maxsize=4)
def _cached_rows(path: str, mtime_ns: int, size: int) -> Tuple[haiku_data.Row, ...]:
  """haiku_data.read_parquet(path), cached per file version (the four tasks read the same file)."""
  del mtime_ns, size  # only part of the cache key
  return tuple(haiku_data.read_parquet(path))


def split_rows(split: str, path: Optional[str] = None) -> List[haiku_data.Row]:
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
                            f'${haiku_data.DATA_ENV}, or build one with `t5x prep haiku`.')
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


def postprocess(output: Union[str, bytes], example: Any = None, is_target: bool = False) -> str:
  """seqio postprocess_fn of the haiku tasks: clean_generation() on predictions and targets.

  seqio's evaluator passes targets as the pretokenized bytes, predictions as decoded str.
  """
  del example, is_target
  if isinstance(output, bytes):
    output = output.decode('utf-8')
  return haiku_metrics.clean_generation(output)


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
    metric = (haiku_metrics.seqio_phoneme_metric if fmt in PHONEME_TARGETS
              else haiku_metrics.seqio_metric)
    tasks.append(seqio.TaskRegistry.add(
        name,
        source=seqio.FunctionDataSource(dataset_fn=_dataset_fn_for(fmt), splits=SPLITS),
        preprocessors=[seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim],
        postprocess_fn=postprocess,
        output_features=features,
        metric_fns=[metric]))
  seqio.MixtureRegistry.add(MIXTURE_NAME, task_names(), default_rate=1.0)
  return tasks


register()

"""The New Yorker caption contest benchmark ("Do Androids Laugh at Electric Sheep?", Hessel
et al., ACL 2023), from-description setting, as SeqIO tasks.

Tasks, for each cross-validation split K in 0-4 (hub config `matching` is split 0,
`matching_K` split K), each with train, validation and test splits:

    caption_matching_splitK     input: from_description; target: the letter (A-E) of the
                                caption that was written for the cartoon
    caption_ranking_splitK      target: the letter (A/B) of the funnier caption
    caption_explanation_splitK  target: the explanation of the joke

The input is the hub row's `from_description` as is (no task prefix), e.g. "scene: a bar
description: ... uncanny: ... entities: Bar_joke, .... choices A: ... B: ... E: ...".
Examples also carry `instance_id` (a string feature, not tokenized), the key of the
official `{instance_id: prediction}` files that caption_contest_metrics.score() reads.
The paper reports the mean over the five splits' test sets.

The data folder (layout and formats: caption_contest_data) is, first match wins, the gin
binding `caption_contest.data_dir.path`, the environment variable CAPTION_CONTEST_DATA, or the
bundled sample t5x_tasks/data/caption_contest_sample/: 16 cartoons of our own invention
(8 train, 4 validation, 4 test rows per task, split 0 only, JSON Lines) and one original-format
file, contest_matching_split=0_cleaned.json. Tasks register on import.
"""
from typing import Optional

import gin
import seqio
import tensorflow as tf

from t5x_tasks import caption_contest_data, caption_contest_metrics, vocabularies

data_dir = caption_contest_data.data_dir  # gin: caption_contest.data_dir.path
ENV_VAR = caption_contest_data.ENV_VAR
SAMPLE_DIR = caption_contest_data.SAMPLE_DIR
KINDS = caption_contest_data.KINDS
NUM_FOLDS = caption_contest_data.NUM_FOLDS


@gin.configurable(module='caption_contest')
def task_name(kind: str, fold: int) -> str:
  """'caption_matching_split0' for kind 'matching' and cross-validation split 0.

  Gin-configurable so that experiment files can choose the split with a variable:
  MIXTURE_OR_TASK_NAME = @caption_contest.task_name(); caption_contest.task_name.fold = %SPLIT.
  """
  return f'caption_{kind}_split{fold}'


TASK_NAMES = tuple(task_name(k, f) for k in KINDS for f in range(NUM_FOLDS))


def _dataset_fn(kind: str, fold: int):
  """A seqio dataset_fn over the rows of (kind, fold), read when the dataset is built."""
  def dataset_fn(split: str, shuffle_files: bool, seed: Optional[int] = None) -> tf.data.Dataset:
    del shuffle_files, seed  # one file per split; seqio shuffles the examples
    rows = caption_contest_data.load_rows(kind, fold, split)
    return tf.data.Dataset.from_tensor_slices({
        'inputs': tf.constant([r['from_description'] for r in rows], tf.string),
        'targets': tf.constant([r['label'] for r in rows], tf.string),
        'instance_id': tf.constant([r['instance_id'] for r in rows], tf.string)})
  return dataset_fn


def _text(output, example=None, is_target=False) -> str:
  """Postprocessor: the decoded text, stripped."""
  del example, is_target
  return (output.decode('utf-8') if isinstance(output, bytes) else str(output)).strip()


def _features():
  vocab = vocabularies.TaskVocabulary()
  return {'inputs': seqio.Feature(vocab, add_eos=True),
          'targets': seqio.Feature(vocab, add_eos=True)}


_PREPROCESSORS = [seqio.preprocessors.tokenize, seqio.preprocessors.append_eos_after_trim]
_METRICS = {'matching': [caption_contest_metrics.seqio_accuracy],
            'ranking': [caption_contest_metrics.seqio_accuracy],
            'explanation': [caption_contest_metrics.seqio_bleu_rouge]}


def register() -> None:
  """Registers the 15 tasks (again, replacing them, if already registered)."""
  for kind in KINDS:
    for fold in range(NUM_FOLDS):
      name = task_name(kind, fold)
      seqio.TaskRegistry.remove(name)
      seqio.TaskRegistry.add(
          name,
          source=seqio.FunctionDataSource(_dataset_fn(kind, fold),
                                          splits=caption_contest_data.SPLITS),
          preprocessors=_PREPROCESSORS, output_features=_features(),
          postprocess_fn=_text, metric_fns=_METRICS[kind])


register()

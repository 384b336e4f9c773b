"""SentencePiece vocabularies the tasks share.

Tasks are registered when their module is imported, which in a gin file happens before
any binding is read. So the tasks hold a `TaskVocabulary`, whose SentencePiece file is
looked up when it is first used: by then gin has bound `vocabularies.task_vocabulary`.

    from t5x_tasks import vocabularies
    vocabularies.task_vocabulary.name = 'quickstart'             # a named vocabulary, or
    vocabularies.task_vocabulary.sentencepiece_model_file = '/path/spiece.model'

Without a binding the tasks use T5's public vocabulary (32000 pieces + 100 sentinels),
as the papers did; on a machine without network access point it at a local copy.
"""
import os
from typing import Optional

import gin
import seqio

QUICKSTART_SPM = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'data', 'copoet_sample', 'spiece.model')
"""The quickstart's bundled 320-piece unigram model (pad 0, eos 1, unk 2, no bos)."""

# name -> (SentencePiece model file, extra ids)
NAMED = {
    't5': ('gs://t5-data/vocabs/cc_all.32000.100extra/sentencepiece.model', 100),
    'mt5': ('gs://t5-data/vocabs/mc4.250000.100extra/sentencepiece.model', 100),
    'quickstart': (QUICKSTART_SPM, 0),
}


def quickstart_vocabulary() -> seqio.SentencePieceVocabulary:
  """The quickstart's vocabulary: QUICKSTART_SPM with no extra (sentinel) ids."""
  return seqio.SentencePieceVocabulary(QUICKSTART_SPM, extra_ids=0)


@gin.configurable(module='vocabularies')
def task_vocabulary(name: str = 't5', sentencepiece_model_file: Optional[str] = None,
                    extra_ids: Optional[int] = None) -> tuple[str, int]:
  """(model file, extra ids) the registered tasks tokenize with.

  `name` picks one of NAMED; an explicit file (and extra_ids, default 100) wins.
  """
  if sentencepiece_model_file:
    return sentencepiece_model_file, 100 if extra_ids is None else extra_ids
  if name not in NAMED:
    raise ValueError(f'vocabularies.task_vocabulary.name={name!r}; known: {sorted(NAMED)}, or set '
                     'vocabularies.task_vocabulary.sentencepiece_model_file')
  path, default_extra = NAMED[name]
  return path, default_extra if extra_ids is None else extra_ids


class TaskVocabulary(seqio.SentencePieceVocabulary):
  """A SentencePieceVocabulary whose file and extra ids come from `task_vocabulary()`
  at first use rather than at task registration."""

  def __init__(self):
    super().__init__(sentencepiece_model_file='', extra_ids=0)

  # seqio reads these two attributes when it loads the model and counts ids; resolving
  # them on every read keeps the vocabulary in step with gin.
  @property
  def _sentencepiece_model_file(self) -> str:
    return task_vocabulary()[0]

  @_sentencepiece_model_file.setter
  def _sentencepiece_model_file(self, value) -> None:
    del value

  @property
  def _extra_ids(self) -> int:
    return task_vocabulary()[1]

  @_extra_ids.setter
  def _extra_ids(self, value) -> None:
    del value

  def __getstate__(self):
    # seqio compares vocabularies by this state (T5X checks a task's against its model's):
    # give the resolved file and extra ids, which the properties above keep out of it.
    state = super().__getstate__()
    state.update(_sentencepiece_model_file=self._sentencepiece_model_file,
                 _extra_ids=self._extra_ids)
    return state

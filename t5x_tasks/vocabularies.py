"""SentencePiece vocabularies the tasks share.

For now only the quickstart's: a 320-piece unigram model with T5's special ids
(pad 0, eos 1, unk 2, no bos), bundled with the package next to its sample data.
"""
import os

import seqio

QUICKSTART_SPM = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), 'data', 'copoet_sample', 'spiece.model')
"""Path of the quickstart's bundled SentencePiece model (t5x_tasks/data/copoet_sample)."""


def quickstart_vocabulary() -> seqio.SentencePieceVocabulary:
  """Returns the quickstart's vocabulary: QUICKSTART_SPM with no extra (sentinel) ids."""
  return seqio.SentencePieceVocabulary(QUICKSTART_SPM, extra_ids=0)

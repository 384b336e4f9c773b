"""Deep Haiku metric: the share of 5-7-5 generations and of those using every topic word.

`score()` (and `score_file()`, "t5x score haiku FILE") gives the percent of generations whose
lines count exactly 5, 7, 5 syllables (haiku_phonetics.syllable_counts(), or "|"-syllables for
the phoneme format) and, with topics, the percent whose words include every topic keyword
(case-insensitive whole words). `clean_generation()` first strips the task format brackets.
`seqio_metric` and `seqio_phoneme_metric` are the seqio metric_fns of the haiku tasks.
"""
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from t5x_tasks import haiku_phonetics, jsonl

FORM = (5, 7, 5)
UNK_SURFACE = '⁇'  # what SentencePiece decodes <unk> to


def is_575(haiku: str, phonemes: bool = False) -> bool:
  """Whether `haiku` has exactly three lines of 5, 7 and 5 syllables.

  Args:
    haiku: str, lines separated by " / " or newlines.
    phonemes: bool, True when `haiku` is in the phoneme format.
  Returns:
    bool.
  """
  counts = (haiku_phonetics.phoneme_syllable_counts(haiku) if phonemes
            else haiku_phonetics.syllable_counts(haiku))
  return tuple(counts) == FORM


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


def _topic_words(topic: Union[str, Sequence[str], None]) -> List[str]:
  """The keywords of a topic given as a string ('dog rain') or a list of strings."""
  if topic is None:
    return []
  if not isinstance(topic, str):
    topic = ' '.join(topic)
  return haiku_phonetics.words(topic)


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
    pairs = [(set(haiku_phonetics.words(g)), _topic_words(t)) for g, t in zip(cleaned, topics)]
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


def _read_jsonl(path: str) -> Tuple[List[str], Optional[List[Any]]]:
  """Generations and topics from JSON Lines; errors name the file and line."""
  generations, topics = [], []
  for number, record in jsonl.records(path):
    generation = record.get('prediction', record.get('generation'))
    if not isinstance(generation, str):
      raise ValueError(f'{path}:{number}: needs a string field "prediction" or '
                       f'"generation"; has {sorted(record)}')
    generations.append(generation)
    topic = record.get('topic', record.get('keywords'))
    if topic is not None and not isinstance(topic, str) and not (
        isinstance(topic, list) and all(isinstance(t, str) for t in topic)):
      raise ValueError(f'{path}:{number}: field "topic" (or "keywords") is {topic!r}; it must '
                       'be a string of topic words or a list of them.')
    topics.append(topic)
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
  lines = jsonl.read_text(path).splitlines()
  first = next((line for line in lines if line.strip()), '')
  if jsonl.is_jsonl_name(path) or path.endswith('.json') or first.lstrip().startswith('{'):
    generations, topics = _read_jsonl(path)
  else:
    generations, topics = [line for line in lines if line.strip()], None
  if not generations:
    raise ValueError(f'{path}: no generations to score')
  return score(generations, topics, phonemes=phonemes)

"""Super-NaturalInstructions scoring: the leaderboard's exact match and ROUGE-L.

Files (JSON Lines): predictions `{"id", "prediction"}`; references (`t5x prep ni` writes
OUT/references.jsonl) `{"id", "task_id", "task_category", "references", "track"}`.

- Exact match: prediction and reference lowercased, punctuation (string.punctuation)
  removed, white space collapsed; articles are kept (unlike SQuAD).
- ROUGE-L: the F-measure of rouge_score's RougeScorer(['rougeL'], use_stemmer=True), its
  default tokenizer with Porter stemming. The `xlingual` track tokenizes with GPT-2's
  tokenizer instead (pieces with their leading "Ġ" removed, no stemming), as the official
  evaluation does; give it a local tokenizer folder (`tokenizer=`, `--tokenizer`), as
  nothing here downloads one.
- Each instance scores the max over its references; scores are means x 100.

`score()` reports overall, per task, per category, and the official metric of each of the
twelve categories the Tk-Instruct paper reports (OFFICIAL_METRICS). `baseline_predictions()`
gives Tk-Instruct's copy_input / copy_demo baselines (the paper: 14.20 and 28.54 ROUGE-L
on the full English test set).
"""
import collections
import string
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Union

from rouge_score import rouge_scorer

from t5x_tasks import jsonl

METRICS = ('exact_match', 'rougeL')
OFFICIAL_METRICS = {
    'Textual Entailment': 'exact_match',
    'Cause Effect Classification': 'exact_match',
    'Coreference Resolution': 'exact_match',
    'Dialogue Act Recognition': 'exact_match',
    'Answerability Classification': 'exact_match',
    'Word Analogy': 'exact_match',
    'Overlap Extraction': 'rougeL',
    'Keyword Tagging': 'rougeL',
    'Question Rewriting': 'rougeL',
    'Title Generation': 'rougeL',
    'Data to Text': 'rougeL',
    'Grammar Error Correction': 'rougeL',
}
BASELINES = ('copy_input', 'copy_demo')
TOKENIZER_OPTION = 'tokenizer (--tokenizer): a local folder with the GPT-2 tokenizer'
_PUNCTUATION = frozenset(string.punctuation)


def normalize_answer(text: str) -> str:
  """Lowercase, drop punctuation, collapse white space (articles stay)."""
  return ' '.join(''.join(ch for ch in text.lower() if ch not in _PUNCTUATION).split())


def exact_match(prediction: str, reference: str) -> float:
  """1.0 when the normalized texts are equal, else 0.0."""
  return float(normalize_answer(prediction) == normalize_answer(reference))


class GPT2Tokenizer:
  """The xlingual track's tokenizer for rouge_score: GPT-2 pieces without the "Ġ" marker.

  Args:
    path: str, a local folder (or file layout) AutoTokenizer.from_pretrained accepts.
  """

  def __init__(self, path: str):
    try:  # only the xlingual track needs transformers (the `hf` extra)
      from transformers import AutoTokenizer
    except ImportError as e:
      raise ImportError('the xlingual track reads a GPT-2 tokenizer with transformers: '
                        'pip install -e ".[hf]"') from e
    try:  # local files only: a hub name would mean a download nothing here can reach
      self.tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
      raise ValueError(f'{path}: cannot load a GPT-2 tokenizer from it ({e}); pass '
                       f'{TOKENIZER_OPTION}') from e

  def tokenize(self, text: str) -> List[str]:
    # Byte-level BPE glues the preceding space to a word ("Ġword"); the first word has
    # none, so the marker is removed for pieces to compare equal wherever they occur.
    return [piece.lstrip('Ġ') for piece in self.tokenizer.tokenize(text)]


_DEFAULT_SCORER = rouge_scorer.RougeScorer(['rougeL'], use_stemmer=True)


def rouge_scorer_for(track: str = 'default', tokenizer: Any = None) -> rouge_scorer.RougeScorer:
  """The RougeScorer of a track.

  Args:
    track: str, 'default' or 'xlingual'.
    tokenizer: None, a local GPT-2 tokenizer folder (str) or an object with .tokenize();
      required for 'xlingual'.
  Raises:
    ValueError: naming the option, for xlingual without a tokenizer or an unknown track.
  """
  if track == 'default':
    return _DEFAULT_SCORER
  if track != 'xlingual':
    raise ValueError(f'unknown track {track!r}; Super-NaturalInstructions has default and '
                     'xlingual')
  if tokenizer is None:
    raise ValueError(f'the xlingual track tokenizes with GPT-2; pass {TOKENIZER_OPTION} '
                     '(e.g. a copy of the Hugging Face "gpt2" files), none is downloaded')
  if isinstance(tokenizer, str):
    tokenizer = GPT2Tokenizer(tokenizer)
  return rouge_scorer.RougeScorer(['rougeL'], tokenizer=tokenizer)


def rouge_l(prediction: str, reference: str,
            scorer: Optional[rouge_scorer.RougeScorer] = None) -> float:
  """ROUGE-L F-measure in [0, 1] (default track scorer unless `scorer` is given)."""
  scores = (scorer or _DEFAULT_SCORER).score(target=reference, prediction=prediction)
  return scores['rougeL'].fmeasure


def max_over_references(metric: Callable[[str, str], float], prediction: str,
                        references: Sequence[str]) -> float:
  """The best score of `prediction` against any of `references`."""
  return max(metric(prediction, reference) for reference in references)


def _means(rows: List[Dict[str, float]]) -> Dict[str, float]:
  return {m: 100.0 * sum(r[m] for r in rows) / len(rows) for m in METRICS}


def category_key(category: str) -> str:
  """Tk-Instruct's key for a category: 'Word Analogy' -> 'word_analogy'."""
  return '_'.join(category.lower().split())


def check_ids(prediction_ids: Iterable[str], reference_ids: Iterable[str],
              predictions_name: str = 'predictions',
              references_name: str = 'references') -> None:
  """Raises ValueError saying how many ids are missing or extra, and which (first five)."""
  predicted, expected = list(prediction_ids), list(reference_ids)
  expected_set, predicted_set = set(expected), set(predicted)
  missing = [i for i in expected if i not in predicted_set]
  extra = [i for i in predicted if i not in expected_set]
  if missing or extra:
    parts = []
    if missing:
      parts.append(f'{len(missing)} id(s) of {references_name} have no prediction '
                   f'(first: {", ".join(missing[:5])})')
    if extra:
      parts.append(f'{len(extra)} predicted id(s) are not in {references_name} '
                   f'(first: {", ".join(extra[:5])})')
    raise ValueError(f'{predictions_name}: ids do not match the references: '
                     + '; '.join(parts))


def score(predictions: Mapping[str, str], references: Sequence[Mapping[str, Any]],
          track: str = 'default', tokenizer: Any = None) -> Dict[str, Any]:
  """Scores predictions by id against leaderboard references of one track.

  Args:
    predictions: mapping id -> predicted text; must cover exactly the references' ids.
    references: dicts with id, references (list of str), and optionally task_id,
      task_category.
    track: str, 'default' or 'xlingual' (needs `tokenizer`).
    tokenizer: see rouge_scorer_for().
  Returns:
    dict: track, count, exact_match, rougeL (overall, x100); per_task: {task: {category,
    count, exact_match, rougeL, official_metric, official}}; per_category: {category:
    {count, exact_match, rougeL}}; official: {category: {metric, value}} for the
    OFFICIAL_METRICS categories present.
  """
  scorer = rouge_scorer_for(track, tokenizer)
  check_ids(predictions, [r['id'] for r in references])
  if not references:
    raise ValueError(f'no references of track {track!r} to score')
  by_task: Dict[str, List[Dict[str, float]]] = collections.defaultdict(list)
  by_category: Dict[str, List[Dict[str, float]]] = collections.defaultdict(list)
  task_category: Dict[str, str] = {}
  rows = []
  for ref in references:
    prediction = predictions[ref['id']]
    row = {'exact_match': max_over_references(exact_match, prediction, ref['references']),
           'rougeL': max_over_references(lambda p, r: rouge_l(p, r, scorer), prediction,
                                         ref['references'])}
    rows.append(row)
    task = ref.get('task_id', '')
    category = ref.get('task_category', '')
    task_category[task] = category
    by_task[task].append(row)
    by_category[category].append(row)
  per_task = {}
  for task in sorted(by_task):
    metric = OFFICIAL_METRICS.get(task_category[task])
    values = _means(by_task[task])
    per_task[task] = {'category': task_category[task], 'count': len(by_task[task]), **values,
                      'official_metric': metric, 'official': values[metric] if metric else None}
  per_category = {c: {'count': len(by_category[c]), **_means(by_category[c])}
                  for c in sorted(by_category)}
  official = {c: {'metric': m, 'value': per_category[c][m]}
              for c, m in OFFICIAL_METRICS.items() if c in per_category}
  return {'track': track, 'count': len(rows), **_means(rows), 'per_task': per_task,
          'per_category': per_category, 'official': official}


def read_predictions(path: str) -> Dict[str, str]:
  """{id: prediction} from a JSON Lines file; errors name the file, line and field."""
  predictions = {}
  for number, record in jsonl.records(path):
    for field in ('id', 'prediction'):
      if not isinstance(record.get(field), str):
        raise ValueError(f'{path}:{number}: field "{field}" is missing or not a string '
                         '(expected {"id": ..., "prediction": ...})')
    if record['id'] in predictions:
      raise ValueError(f'{path}:{number}: id {record["id"]!r} is predicted twice')
    predictions[record['id']] = record['prediction']
  return predictions


def read_references(path: str, track: Optional[str] = None) -> List[Dict[str, Any]]:
  """Leaderboard references (of `track`, if given; a line without track is 'default')."""
  references = []
  for number, record in jsonl.records(path):
    if not isinstance(record.get('id'), str):
      raise ValueError(f'{path}:{number}: field "id" is missing or not a string')
    refs = record.get('references')
    if not isinstance(refs, list) or not refs or not all(isinstance(r, str) for r in refs):
      raise ValueError(f'{path}:{number}: field "references" must be a non-empty list of '
                       'strings')
    if track is None or record.get('track', 'default') == track:
      references.append(record)
  return references


def score_files(predictions_path: str, references_path: str, track: str = 'default',
                tokenizer: Any = None) -> Dict[str, Any]:
  """score() for a predictions file against a references file (its lines of `track`).

  Raises:
    ValueError: bad lines (file:line and field), xlingual without a tokenizer, or ids that
      do not match (how many are missing or extra, and the first few).
  """
  rouge_scorer_for(track, tokenizer)  # refuse xlingual without a tokenizer before reading
  references = read_references(references_path, track)
  if not references:
    raise ValueError(f'{references_path}: no references of track {track!r}')
  predictions = read_predictions(predictions_path)
  check_ids(predictions, [r['id'] for r in references], predictions_path, references_path)
  result = score(predictions, references, track, tokenizer)
  result['predictions'], result['references'] = predictions_path, references_path
  return result


def baseline_predictions(test_path: str, method: str) -> List[Dict[str, str]]:
  """Tk-Instruct's baselines on a prep test.jsonl: copy_input or copy_demo.

  Args:
    test_path: str, `t5x prep ni`'s test.jsonl (it holds the inputs and demonstrations).
    method: str, 'copy_input' (the instance input) or 'copy_demo' (the first positive
      example's output).
  Returns:
    list of {'id', 'prediction'} in file order.
  """
  if method not in BASELINES:
    raise ValueError(f'unknown baseline {method!r}; choose one of {", ".join(BASELINES)}')
  predictions = []
  for number, record in jsonl.records(test_path):
    if method == 'copy_input':
      field, value = 'input', record.get('input')
    else:
      demos = record.get('positive_examples') or [{}]
      field, value = 'positive_examples[0].output', demos[0].get('output')
    if not isinstance(record.get('id'), str) or not isinstance(value, str):
      raise ValueError(f'{test_path}:{number}: field "id" or "{field}" is missing; is this a '
                       '`t5x prep ni` test.jsonl?')
    predictions.append({'id': record['id'], 'prediction': value})
  return predictions


def score_baseline(test_path: str, references_path: str, method: str,
                   track: str = 'default', tokenizer: Any = None) -> Dict[str, Any]:
  """score() of a baseline's predictions (see baseline_predictions())."""
  predictions = {p['id']: p['prediction'] for p in baseline_predictions(test_path, method)}
  references = read_references(references_path, track)
  check_ids(predictions, [r['id'] for r in references], f'{method} on {test_path}',
            references_path)
  result = score(predictions, references, track, tokenizer)
  result['baseline'] = method
  return result


def format_report(result: Mapping[str, Any]) -> str:
  """A plain-text report of score(): overall, official per category, per category, per task."""
  title = f'Super-NaturalInstructions, track {result["track"]}'
  if result.get('baseline'):
    title += f', baseline {result["baseline"]}'
  lines = [f'{title}: {result["count"]} instances',
           f'  exact_match {result["exact_match"]:.2f}   rougeL {result["rougeL"]:.2f}']
  names = [*result['per_category'], *result['per_task'], 'per category:']
  width = max(len(name) for name in names) + 2
  if result.get('official'):
    lines.append('official metric per category:')
    for category, entry in result['official'].items():
      lines.append(f'  {category:<{width}} {entry["metric"]:<12} {entry["value"]:6.2f}')
  lines.append(f'{"per category:":<{width + 2}} count  exact_match  rougeL')
  for category, entry in result['per_category'].items():
    lines.append(f'  {category or "(none)":<{width}} {entry["count"]:5d}  '
                 f'{entry["exact_match"]:11.2f}  {entry["rougeL"]:6.2f}')
  lines.append(f'{"per task:":<{width + 2}} count  exact_match  rougeL  official')
  for task, entry in result['per_task'].items():
    official = (f'{entry["official_metric"]} {entry["official"]:.2f}'
                if entry['official_metric'] else '-')
    lines.append(f'  {task or "(none)":<{width}} {entry["count"]:5d}  '
                 f'{entry["exact_match"]:11.2f}  {entry["rougeL"]:6.2f}  {official}')
  return '\n'.join(lines)


def seqio_metric(targets: Sequence[Union[Mapping[str, Any], Sequence[str], str]],
                 predictions: Sequence[str], tokenizer: Any = None) -> Dict[str, float]:
  """SeqIO metric: overall and per-category/per-task exact_match and rougeL (x100).

  Args:
    targets: per example a dict with `references` (and task_id, task_category, track, as
      ni.postprocess makes), or a list of references, or one reference string.
    predictions: decoded predictions, aligned with targets.
    tokenizer: for xlingual targets, see rouge_scorer_for().
  Returns:
    flat dict: exact_match, rougeL, and f'{metric}_for_{category_key}' and
    f'{metric}_for_{task}' as Tk-Instruct names its grouped metrics.
  """
  if len(targets) != len(predictions):
    raise ValueError(f'{len(predictions)} predictions for {len(targets)} targets')
  references = []
  for i, target in enumerate(targets):
    if isinstance(target, str):
      target = {'references': [target]}
    elif not isinstance(target, Mapping):
      target = {'references': list(target)}
    references.append({'task_id': '', 'task_category': '', **target, 'id': str(i)})
  tracks = {r.get('track', 'default') for r in references}
  if len(tracks) > 1:
    raise ValueError(f'targets mix tracks {sorted(tracks)}; score each track separately')
  result = score({str(i): p for i, p in enumerate(predictions)}, references,
                 tracks.pop() if tracks else 'default', tokenizer)
  flat = {m: result[m] for m in METRICS}
  for category, entry in result['per_category'].items():
    if category:
      flat.update({f'{m}_for_{category_key(category)}': entry[m] for m in METRICS})
  for task, entry in result['per_task'].items():
    if task:
      flat.update({f'{m}_for_{task}': entry[m] for m in METRICS})
  return flat

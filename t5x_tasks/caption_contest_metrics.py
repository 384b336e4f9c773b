"""New Yorker caption contest metrics and the scorer of official prediction files.

`score(task, predictions_files, data_dir, mode=...)` is "t5x score caption --task
matching|ranking|explanation --predictions FILE... --data DIR --mode paper|lenient". A
prediction file is the official `{instance_id: prediction}` JSON object (or `t5x infer`'s
JSON Lines). Results are percentages (0-100; the official script prints accuracies and
ROUGE-L as fractions, BLEU as a percentage).

Metrics:
  matching    accuracy. Random is 20% (5 choices); a Llama-2 70B QLoRA model reached
              78.98% on split 0's test set (n = 528).
  ranking     accuracy over all pairs; NYAcc over pairs whose funnier caption is an official
              New Yorker finalist (`winner_source` 'official_winner') and CrowdAcc over
              those where it won the crowd vote ('crowd_winner'). Random is 50%.
  explanation corpus BLEU-4 (sacrebleu.corpus_bleu with its defaults: 13a tokens, case kept,
              exp smoothing, one reference) and ROUGE-L F-measure (rouge_score, whose
              tokenizer lowercases and splits on anything but a-z0-9). Both run offline.

Modes:
  paper (default) reproduces the official eval_crossval.py of the corpus, quirks included:
    - all files are merged into one {id: prediction} map (a later file's prediction wins
      for an id given twice), whatever their names; each of the 5 splits is scored when the
      map holds all its reference ids and skipped (and listed, with the reason) otherwise.
      Ids in no scored split are ignored, as there; the result counts them (`n_unused`).
    - a prediction is right when it equals the label exactly: 'c' or 'C ' for 'C' is wrong.
    - an empty set of pairs gives nan (a split without official winners has NYAcc nan),
      and nan carries into the mean over splits.
    - explanation: a split with any empty ('') prediction is skipped. ROUGE-L is `evaluate`'s
      'rouge' default: no stemming, and the 'mid' (median) of rouge_score's
      BootstrapAggregator: 1000 resamples of the examples, the median of their mean
      F-measures. Its draws come from numpy's global generator, which the script seeds
      with 1 but then walks the examples in Python set order, which hash randomisation
      changes on every run, so the official value itself moves by the bootstrap's noise
      (a standard deviation of 0.04 points on a simulated 130-example split). Here each
      split is resampled from seed 1 in reference order, so the value is reproducible.
  lenient is this project's earlier scorer:
    - one file per split: a file whose name contains `split=K`, `split_K`, `split-K` or
      `splitK` (any case) is split K, any other file is split i, its 0-based position among
      the files; its ids must be exactly its split's reference ids, else an error says how
      many, and which, are missing and extra.
    - a prediction is read as a letter after stripping spaces and case, also when followed
      by ')', '.' or ':' ("c", " C) Stop me..." are 'C').
    - an empty set of pairs gives None, and the mean leaves it out.
    - explanation: empty predictions are scored (as 0) and counted (`n_empty`); ROUGE-L is
      the plain mean over examples with Porter stemming.
In both modes the mean is over the splits scored (the official script prints none unless
all five are; the paper reports that one), and no split to score is an error (the official
script then prints an empty table).
"""
import json
import math
import os
import re
import statistics
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from t5x_tasks import caption_contest_data, gfile, jsonl

MODES = ('paper', 'lenient')
BOOTSTRAP_SEED = 1  # eval_crossval.py's np.random.seed(1)
_SPLIT_IN_NAME = re.compile(r'split[=_-]?(\d)', re.IGNORECASE)
_SHOW = 5  # ids listed in an id-mismatch message


def _check_mode(mode: str) -> None:
  if mode not in MODES:
    raise ValueError(f'unknown mode {mode!r}; modes: {", ".join(MODES)}.')


def normalize_choice(prediction: str, letters: str = 'ABCDE') -> str:
  """The answer letter of a prediction: ' c ' -> 'C', 'C) Stop me' -> 'C'; else the text."""
  text = prediction.strip()
  head = text[:1].upper()
  if head and head in letters and (len(text) == 1 or text[1] in ').:'):
    return head
  return text


def accuracy(labels: Sequence[str], predictions: Sequence[str],
             mode: str = 'paper') -> Optional[float]:
  """Percent of predictions equal to their label.

  paper: the raw prediction must equal the label; nan when there are no pairs.
  lenient: compared after normalize_choice; None when there are no pairs.
  """
  _check_mode(mode)
  if len(labels) != len(predictions):
    raise ValueError(f'{len(labels)} labels but {len(predictions)} predictions.')
  if not labels:
    return math.nan if mode == 'paper' else None
  if mode == 'paper':
    hits = sum(p == l for l, p in zip(labels, predictions))
  else:
    hits = sum(normalize_choice(p) == l for l, p in zip(labels, predictions))
  return 100.0 * hits / len(labels)


def bleu(references: Sequence[str], predictions: Sequence[str]) -> float:
  """Corpus BLEU-4 (0-100) of predictions against one reference each (sacrebleu defaults,
  as `evaluate`'s 'sacrebleu' computes it; the same in both modes)."""
  try:
    import sacrebleu
  except ImportError:
    raise ImportError('explanation BLEU needs sacrebleu: pip install sacrebleu') from None
  return sacrebleu.corpus_bleu(list(predictions), [list(references)]).score


def rouge_l(references: Sequence[str], predictions: Sequence[str],
            mode: str = 'paper') -> float:
  """ROUGE-L F-measure (0-100) of predictions against one reference each.

  paper: `evaluate`'s 'rouge' defaults, no stemming, the median of rouge_score's 1000
    bootstrap means (BootstrapAggregator 'mid'), drawn from seed BOOTSTRAP_SEED; nan when
    there are no examples.
  lenient: the mean over examples with Porter stemming; 0 when there are no examples.
  """
  _check_mode(mode)
  from rouge_score import rouge_scorer, scoring
  scorer = rouge_scorer.RougeScorer(['rougeL'], use_stemmer=mode == 'lenient')
  scores = [scorer.score(r, p) for r, p in zip(references, predictions)]
  if mode == 'lenient':
    return 100.0 * statistics.fmean(s['rougeL'].fmeasure for s in scores) if scores else 0.0
  if not scores:
    return math.nan
  aggregator = scoring.BootstrapAggregator()
  for s in scores:
    aggregator.add_scores(s)
  # The aggregator draws from numpy's global generator: seed it for a reproducible value,
  # then give the caller's generator state back.
  state = np.random.get_state()
  np.random.seed(BOOTSTRAP_SEED)
  try:
    return 100.0 * float(aggregator.aggregate()['rougeL'].mid.fmeasure)
  finally:
    np.random.set_state(state)


def seqio_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """SeqIO metric of the matching and ranking tasks: {'accuracy': percent}, lenient: the
  decoded text passes through the vocabulary (which may drop capitals), so this is
  model-selection feedback; the paper's figure is `t5x score caption` on prediction files."""
  return {'accuracy': accuracy(list(targets), list(predictions), 'lenient') or 0.0}


def seqio_bleu_rouge(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """SeqIO metric of the explanation tasks: {'bleu': BLEU-4, 'rougeL': ROUGE-L F}, lenient
  (stemmed mean, no bootstrap noise between evals); the paper's figure is `t5x score
  caption`."""
  return {'bleu': bleu(targets, predictions),
          'rougeL': rouge_l(targets, predictions, 'lenient')}


def read_predictions(path: str) -> Dict[str, str]:
  """An official prediction file {instance_id: prediction}, or `t5x infer`'s JSON Lines
  ({"instance_id", "prediction", ...} per line). Errors name file and record."""
  if not gfile.exists(path):
    raise FileNotFoundError(f'{path}: no such prediction file.')
  if jsonl.is_jsonl_name(path):
    data = {}
    for number, record in jsonl.records(path):
      if not isinstance(record.get('instance_id'), str):
        raise ValueError(f'{path}:{number}: field "instance_id" is missing or not a string.')
      data[record['instance_id']] = record.get('prediction')
  else:
    data = _read_json(path)
  for key, value in data.items():
    if not isinstance(value, str):
      raise ValueError(f'{path}: record "{key}": the prediction is {type(value).__name__}; '
                       'expected a string (a letter, or the explanation).')
  return data


def _read_json(path: str):
  data = jsonl.load_json(path)  # a BOM allowed, errors name path:line
  if not isinstance(data, dict):
    raise ValueError(f'{path}: expected a JSON object {{instance_id: prediction}}, got '
                     f'{type(data).__name__}.')
  return data


def split_of(path: str, position: int) -> int:
  """The cross-validation split of a prediction file in lenient mode: `split=K` etc. in its
  name, else `position` (its 0-based place among the files given)."""
  match = _SPLIT_IN_NAME.search(os.path.basename(path))
  return int(match.group(1)) if match else position


def _first(ids: List[str]) -> str:
  more = f', ... ({len(ids) - _SHOW} more)' if len(ids) > _SHOW else ''
  return ', '.join(ids[:_SHOW]) + more


def check_ids(path: str, predictions: Dict[str, str], rows: List[dict], what: str) -> None:
  """Raises ValueError saying how many, and which, reference ids are missing or extra."""
  reference = [r['instance_id'] for r in rows]
  missing = [i for i in reference if i not in predictions]
  known = set(reference)
  extra = sorted(i for i in predictions if i not in known)
  if missing or extra:
    parts = []
    if missing:
      parts.append(f'{len(missing)} of {len(reference)} reference ids missing ({_first(missing)})')
    if extra:
      parts.append(f'{len(extra)} extra ids not in the references ({_first(extra)})')
    raise ValueError(f'{path}: ids do not match {what}: {"; ".join(parts)}. Name the file '
                     'with its split (split=K) or give the files in split order '
                     '(or use --mode paper, which takes any files covering the splits).')


def score_split(task: str, predictions: Dict[str, str], rows: List[dict],
                mode: str = 'paper') -> Dict[str, Any]:
  """Metrics of one split's predictions (ids already checked) against its reference rows."""
  _check_mode(mode)
  preds = [predictions[r['instance_id']] for r in rows]
  labels = [r['label'] for r in rows]
  if task == 'matching':
    return {'accuracy': accuracy(labels, preds, mode), 'n': len(rows)}
  if task == 'ranking':
    result = {'accuracy': accuracy(labels, preds, mode), 'n': len(rows)}
    for name, source in (('nyacc', 'official_winner'), ('crowdacc', 'crowd_winner')):
      pairs = [(l, p) for l, p, r in zip(labels, preds, rows) if r['winner_source'] == source]
      result[name] = accuracy([l for l, _ in pairs], [p for _, p in pairs], mode)
      result[f'n_{name[:-3]}'] = len(pairs)
    return result
  if task == 'explanation':
    empty = sum(not p for p in preds) if mode == 'paper' else sum(not p.strip() for p in preds)
    return {'bleu': bleu(labels, preds), 'rougeL': rouge_l(labels, preds, mode),
            'n': len(rows), 'n_empty': empty}
  raise ValueError(f'unknown task {task!r}; tasks: {", ".join(caption_contest_data.KINDS)}.')


def score(task: str, predictions_files: Sequence[str], data_dir: Optional[str] = None,
          eval_split: str = 'test', mode: str = 'paper') -> Dict[str, Any]:
  """Scores official prediction files (see the module docstring for the two modes).

  Args:
    task: str, 'matching', 'ranking' or 'explanation'.
    predictions_files: sequence of str, `{instance_id: prediction}` JSON (or JSON Lines)
      files. paper: merged, any split layout; lenient: one per split, the split of each
      from its name (split=K, splitK, ...) or else its position.
    data_dir: str, the data folder (caption_contest_data layout); default data_dir().
    eval_split: str, the split scored against ('test', as in the paper, or 'validation').
    mode: str, 'paper' (the official eval_crossval.py, default) or 'lenient'.
  Returns:
    {'task', 'eval_split', 'mode', 'files': {K: path(s)}, 'splits': {K: metrics},
    'skipped': {K: reason} (paper mode), 'n_unused' and 'n_overridden' (paper mode: ids in
    no scored split, ids given again with another prediction), 'mean': metrics averaged
    over the scored splits (counts `n*` summed), 'n_splits'}.
  Raises:
    ValueError when no split can be scored, or (lenient) a file's ids do not match.
  """
  if task not in caption_contest_data.KINDS:
    raise ValueError(f'unknown task {task!r}; tasks: {", ".join(caption_contest_data.KINDS)}.')
  _check_mode(mode)
  if not predictions_files:
    raise ValueError('no prediction files given.')
  if mode == 'paper':
    result = _score_merged(task, predictions_files, data_dir, eval_split)
  else:
    result = _score_per_file(task, predictions_files, data_dir, eval_split)
  result['mean'] = _mean(result['splits'], mode)
  result['n_splits'] = len(result['splits'])
  return result


def _score_per_file(task, predictions_files, data_dir, eval_split) -> Dict[str, Any]:
  """Lenient mode: file i is split K by name or position; ids must match exactly."""
  files: Dict[int, str] = {}
  for position, path in enumerate(predictions_files):
    fold = split_of(path, position)
    if fold in files:
      raise ValueError(f'{path} and {files[fold]} are both split {fold}.')
    files[fold] = path
  splits = {}
  for fold, path in sorted(files.items()):
    config = caption_contest_data.config_name(task, fold)
    rows = caption_contest_data.load_rows(task, fold, eval_split, data_dir)
    predictions = read_predictions(path)
    check_ids(path, predictions, rows, f'{config} {eval_split} (split {fold})')
    splits[fold] = score_split(task, predictions, rows, 'lenient')
  return {'task': task, 'eval_split': eval_split, 'mode': 'lenient', 'files': files,
          'splits': splits, 'skipped': {}}


def _score_merged(task, predictions_files, data_dir, eval_split) -> Dict[str, Any]:
  """Paper mode: one merged map; each of the 5 splits scored when it covers the split."""
  predictions: Dict[str, str] = {}
  source: Dict[str, str] = {}  # id -> the file its prediction came from
  overridden = 0
  for path in predictions_files:
    for key, value in read_predictions(path).items():
      if key in predictions and predictions[key] != value:
        overridden += 1
      predictions[key] = value
      source[key] = path
  files, splits, skipped, used = {}, {}, {}, set()
  for fold in range(caption_contest_data.NUM_FOLDS):
    config = caption_contest_data.config_name(task, fold)
    try:
      rows = caption_contest_data.load_rows(task, fold, eval_split, data_dir)
    except FileNotFoundError:
      skipped[fold] = (f'no {config} {eval_split} data in '
                       f'{data_dir or caption_contest_data.data_dir()}')
      continue
    ids = [r['instance_id'] for r in rows]
    missing = [i for i in ids if i not in predictions]
    if missing:
      skipped[fold] = (f'missing {len(missing)}/{len(ids)} predictions ({_first(missing)})')
      continue
    if task == 'explanation':
      empty = sum(not predictions[i] for i in ids)
      if empty:
        skipped[fold] = (f'{empty} empty predictions; the official script skips such a split '
                         '(--mode lenient scores them as 0)')
        continue
    splits[fold] = score_split(task, predictions, rows, 'paper')
    files[fold] = ', '.join(dict.fromkeys(source[i] for i in ids))  # in the order given
    used.update(ids)
  if not splits:
    reasons = '; '.join(f'split {k}: {v}' for k, v in skipped.items())
    hint = (f' Set {caption_contest_data.ENV_VAR} or --data to the data folder.'
            if any(v.startswith('no ') for v in skipped.values()) else '')
    raise ValueError(f'{", ".join(predictions_files)}: no {task} split could be scored: '
                     f'{reasons}. A split is scored when the files hold a prediction for '
                     f'each of its {eval_split} ids.{hint}')
  return {'task': task, 'eval_split': eval_split, 'mode': 'paper', 'files': files,
          'splits': splits, 'skipped': skipped,
          'n_unused': sum(k not in used for k in predictions), 'n_overridden': overridden}


def _mean(splits: Dict[int, Dict[str, Any]], mode: str) -> Dict[str, Any]:
  """Metrics averaged over splits, counts summed. paper: the plain mean, nan carried (as
  eval_crossval.py's np.mean); lenient: None values left out (None if all are)."""
  mean = {}
  for name in splits[min(splits)]:
    values = [s[name] for s in splits.values()]
    if _is_count(name):
      mean[name] = sum(values)
    elif mode == 'paper':
      mean[name] = statistics.fmean(values)
    else:
      values = [v for v in values if v is not None]
      mean[name] = statistics.fmean(values) if values else None
  return mean


def _is_count(name: str) -> bool:
  return name == 'n' or name.startswith('n_')


def to_json(result: Dict[str, Any]) -> str:
  """`score`'s result as JSON text; nan (paper mode's empty subsets) is written as null."""
  def clean(value):
    if isinstance(value, float) and math.isnan(value):
      return None
    if isinstance(value, dict):
      return {k: clean(v) for k, v in value.items()}
    return value
  return json.dumps(clean(result), indent=2, allow_nan=False)


def _metrics_line(metrics: Dict[str, Any]) -> str:
  parts = []
  for name, value in metrics.items():
    if _is_count(name):
      parts.append(f'{name}={value}')
    else:
      parts.append(f'{name}={value:.2f}' if value is not None else f'{name}=n/a')
  return '  '.join(parts)


def format_report(result: Dict[str, Any]) -> str:
  """The human-readable report of `score`: one line per split, then the mean."""
  lines = [f"New Yorker caption contest, {result['task']} ({result['eval_split']} sets; "
           f"percent; {result['mode']} mode)"]
  for fold, metrics in result['splits'].items():
    lines.append(f"split {fold}: {_metrics_line(metrics)}  [{result['files'][fold]}]")
  for fold, reason in result['skipped'].items():
    lines.append(f'split {fold}: skipped, {reason}')
  lines.append(f"mean over {result['n_splits']} split(s): {_metrics_line(result['mean'])}")
  if result['n_splits'] < caption_contest_data.NUM_FOLDS:
    lines.append('the paper reports the mean over all 5 cross-validation splits.')
  if result.get('n_unused'):
    lines.append(f"{result['n_unused']} predicted ids are in no scored split's references "
                 'and were ignored.')
  if result.get('n_overridden'):
    lines.append(f"{result['n_overridden']} ids were given again, with another prediction, "
                 'by a later file, whose prediction was used.')
  if result['task'] == 'explanation':
    lines.append('BLEU and ROUGE-L correlate only loosely with human judgments of explanations.')
  return '\n'.join(lines)

"""New Yorker caption contest metrics and the scorer of official prediction files.

`score(task, predictions_files, data_dir)` is "t5x score caption --task matching|ranking|
explanation --predictions FILE... --data DIR". A prediction file is the official
`{instance_id: prediction}` JSON object of one cross-validation split's test set. A file
whose name contains `split=K`, `split_K`, `split-K` or `splitK` (any case) is split K;
any other file is split i, its 0-based position among the files given. Each file's ids
must be exactly its split's reference ids; otherwise the error says how many are missing
and extra, and which (first few). The result has each split's metrics and their mean over
the splits given (the paper reports the mean over all five).

Metrics (percentages, 0-100):
  matching    accuracy. Random is 20% (5 choices); a Llama-2 70B QLoRA model reached
              78.98% on split 0's test set (n = 528).
  ranking     accuracy over all pairs; NYAcc over pairs whose funnier caption is an official
              New Yorker finalist (`winner_source` 'official_winner') and CrowdAcc over
              those where it won the crowd vote ('crowd_winner'), as the official
              eval_crossval.py splits them. Random is 50%.
  explanation corpus BLEU-4 (sacrebleu.corpus_bleu, its defaults: 13a tokens, exp
              smoothing, one reference) and ROUGE-L (rouge_score F-measure with Porter
              stemming, mean over examples). Both run offline. The official script loads
              them through `evaluate` (ROUGE-L without stemming, bootstrap median); empty
              predictions are scored here (as 0) where it skips the split; `n_empty` counts them.

A matching/ranking prediction is read as a letter after stripping spaces and case, also
when followed by ')', '.' or ':' ("C) Stop me..."); the official script compares raw strings,
which is the same for bare letters.
"""
import json
import os
import re
import statistics
from typing import Any, Dict, List, Optional, Sequence

import tensorflow as tf

from t5x_tasks import caption_contest_data, jsonl

_SPLIT_IN_NAME = re.compile(r'split[=_-]?(\d)', re.IGNORECASE)
_SHOW = 5  # ids listed in an id-mismatch message


def normalize_choice(prediction: str, letters: str = 'ABCDE') -> str:
  """The answer letter of a prediction: ' c ' -> 'C', 'C) Stop me' -> 'C'; else the text."""
  text = prediction.strip()
  head = text[:1].upper()
  if head and head in letters and (len(text) == 1 or text[1] in ').:'):
    return head
  return text


def accuracy(labels: Sequence[str], predictions: Sequence[str]) -> Optional[float]:
  """Percent of predictions (normalize_choice) equal to their label; None when empty."""
  if len(labels) != len(predictions):
    raise ValueError(f'{len(labels)} labels but {len(predictions)} predictions.')
  if not labels:
    return None
  hits = sum(normalize_choice(p) == l for l, p in zip(labels, predictions))
  return 100.0 * hits / len(labels)


def bleu(references: Sequence[str], predictions: Sequence[str]) -> float:
  """Corpus BLEU-4 (0-100) of predictions against one reference each (sacrebleu defaults)."""
  try:
    import sacrebleu
  except ImportError:
    raise ImportError('explanation BLEU needs sacrebleu: pip install sacrebleu') from None
  return sacrebleu.corpus_bleu(list(predictions), [list(references)]).score


def rouge_l(references: Sequence[str], predictions: Sequence[str], stem: bool = True) -> float:
  """Mean ROUGE-L F-measure (0-100) over examples (rouge_score, Porter stemming)."""
  from rouge_score import rouge_scorer
  scorer = rouge_scorer.RougeScorer(['rougeL'], use_stemmer=stem)
  scores = [scorer.score(r, p)['rougeL'].fmeasure for r, p in zip(references, predictions)]
  return 100.0 * statistics.fmean(scores) if scores else 0.0


def seqio_accuracy(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """SeqIO metric of the matching and ranking tasks: {'accuracy': percent}."""
  return {'accuracy': accuracy(list(targets), list(predictions)) or 0.0}


def seqio_bleu_rouge(targets: Sequence[str], predictions: Sequence[str]) -> Dict[str, float]:
  """SeqIO metric of the explanation tasks: {'bleu': BLEU-4, 'rougeL': ROUGE-L F}."""
  return {'bleu': bleu(targets, predictions), 'rougeL': rouge_l(targets, predictions)}


def read_predictions(path: str) -> Dict[str, str]:
  """An official prediction file {instance_id: prediction}, or `t5x infer`'s JSON Lines
  ({"instance_id", "prediction", ...} per line). Errors name file and record."""
  if not tf.io.gfile.exists(path):
    raise FileNotFoundError(f'{path}: no such prediction file.')
  if path.endswith('.jsonl'):
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
  with tf.io.gfile.GFile(path) as f:
    try:
      data = json.load(f)
    except json.JSONDecodeError as e:
      raise ValueError(f'{path}: not valid JSON ({e.msg}, line {e.lineno}).') from None
  if not isinstance(data, dict):
    raise ValueError(f'{path}: expected a JSON object {{instance_id: prediction}}, got '
                     f'{type(data).__name__}.')
  return data


def split_of(path: str, position: int) -> int:
  """The cross-validation split of a prediction file: `split=K` etc. in its name, else
  `position` (its 0-based place among the files given)."""
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
                     'with its split (split=K) or give the files in split order.')


def score_split(task: str, predictions: Dict[str, str], rows: List[dict]) -> Dict[str, Any]:
  """Metrics of one split's predictions (ids already checked) against its reference rows."""
  preds = [predictions[r['instance_id']] for r in rows]
  labels = [r['label'] for r in rows]
  if task == 'matching':
    return {'accuracy': accuracy(labels, preds), 'n': len(rows)}
  if task == 'ranking':
    result = {'accuracy': accuracy(labels, preds), 'n': len(rows)}
    for name, source in (('nyacc', 'official_winner'), ('crowdacc', 'crowd_winner')):
      pairs = [(l, p) for l, p, r in zip(labels, preds, rows) if r['winner_source'] == source]
      result[name] = accuracy([l for l, _ in pairs], [p for _, p in pairs])
      result[f'n_{name[:-3]}'] = len(pairs)
    return result
  if task == 'explanation':
    return {'bleu': bleu(labels, preds), 'rougeL': rouge_l(labels, preds), 'n': len(rows),
            'n_empty': sum(not p.strip() for p in preds)}
  raise ValueError(f'unknown task {task!r}; tasks: {", ".join(caption_contest_data.KINDS)}.')


def score(task: str, predictions_files: Sequence[str], data_dir: Optional[str] = None,
          eval_split: str = 'test') -> Dict[str, Any]:
  """Scores official prediction files, one per cross-validation split.

  Args:
    task: str, 'matching', 'ranking' or 'explanation'.
    predictions_files: sequence of str, `{instance_id: prediction}` JSON files; the split of
      each from its name (split=K, splitK, ...) or else its position.
    data_dir: str, the data folder (caption_contest_data layout); default data_dir().
    eval_split: str, the split scored against ('test', as in the paper, or 'validation').
  Returns:
    {'task', 'eval_split', 'files': {K: path}, 'splits': {K: metrics}, 'mean': metrics
    averaged over the splits given (None where no split has a value; counts `n*` summed),
    'n_splits'}.
  """
  if task not in caption_contest_data.KINDS:
    raise ValueError(f'unknown task {task!r}; tasks: {", ".join(caption_contest_data.KINDS)}.')
  if not predictions_files:
    raise ValueError('no prediction files given.')
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
    splits[fold] = score_split(task, predictions, rows)
  mean = {}
  for name in splits[min(splits)]:
    values = [s[name] for s in splits.values() if s[name] is not None]
    if _is_count(name):
      mean[name] = sum(values)  # counts add up over splits
    else:
      mean[name] = statistics.fmean(values) if values else None
  return {'task': task, 'eval_split': eval_split, 'files': files, 'splits': splits,
          'mean': mean, 'n_splits': len(splits)}


def _is_count(name: str) -> bool:
  return name == 'n' or name.startswith('n_')


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
           'percent)']
  for fold, metrics in result['splits'].items():
    lines.append(f"split {fold}: {_metrics_line(metrics)}  [{result['files'][fold]}]")
  lines.append(f"mean over {result['n_splits']} split(s): {_metrics_line(result['mean'])}")
  if result['n_splits'] < caption_contest_data.NUM_FOLDS:
    lines.append('the paper reports the mean over all 5 cross-validation splits.')
  if result['task'] == 'explanation':
    lines.append('BLEU and ROUGE-L correlate only loosely with human judgments of explanations.')
  return '\n'.join(lines)

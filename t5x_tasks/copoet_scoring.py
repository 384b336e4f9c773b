"""`t5x score copoet FILE...`: success rates of prediction files, per file and over runs.

Reads the paper's released `.output` files (JSON Lines; `generation` is scored against
`instruction`) and the project's own prediction files (JSON Lines with `prediction` and
an instruction under `instruction`, `inputs` or `translation.en1`), and the session logs
of `t5x serve` (a session file, or a folder of them read as one run: each chosen
suggestion against its instruction; see copoet_sessions). Several files are
several runs: the report gives each file's rate, per instruction type, and the mean over
runs with a 95% confidence interval (Student's t over the per-run rates).
"""
import glob
import math
import os
import statistics
from typing import Any, Sequence

from t5x_tasks import copoet_metrics, copoet_sessions, jsonl

# Two-sided 95% Student's t quantiles for 1..30 degrees of freedom; beyond, the normal 1.96.
_T95 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179,
        2.160, 2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064,
        2.060, 2.056, 2.052, 2.048, 2.045, 2.042)


def read_pairs(path: str) -> list[tuple[str, str]]:
  """(instruction, generation) pairs of one prediction file, session file or folder of
  session files; errors name file, line, field."""
  if os.path.isdir(path):
    files = sorted(glob.glob(os.path.join(path, '*.json')))
    sessions = [(f, copoet_sessions.load(f)) for f in files]
    pairs = [p for f, s in sessions if s is not None for p in copoet_sessions.chosen_pairs(s, f)]
    if not pairs:
      raise ValueError(f'{path}: no session file with a chosen suggestion among its '
                       f'{len(files)} .json files (a folder is read as `t5x serve` logs).')
    return pairs
  session = copoet_sessions.load(path)
  if session is not None:
    pairs = copoet_sessions.chosen_pairs(session, path)
    if not pairs:
      raise ValueError(f'{path}: this session chose no suggestion, so there is nothing to '
                       'score.')
    return pairs
  pairs = [(_field(record, path, number, _instruction), _field(record, path, number, _generation))
           for number, record in jsonl.records(path)]
  if not pairs:
    raise ValueError(f'{path}: no predictions.')
  return pairs


def _instruction(record: dict) -> Any:
  inputs = record.get('inputs')
  if isinstance(inputs, dict):  # t5x infer writes the example's features here
    inputs = inputs.get('inputs_pretokenized', inputs.get('inputs'))
  translation = record.get('translation')
  # A `translation` that is no object has no instruction: _field then names the line.
  en1 = translation.get('en1') if isinstance(translation, dict) else None
  return record.get('instruction') or inputs or en1


def _generation(record: dict) -> Any:
  return record.get('generation', record.get('prediction'))


def _field(record, path, number, getter) -> str:
  value = getter(record)
  if not isinstance(value, str):
    wanted = ('"instruction" (or "inputs", "translation.en1")' if getter is _instruction
              else '"generation" (or "prediction")')
    raise ValueError(f'{path}:{number}: field {wanted} is missing or not a string.')
  return value


def confidence_interval(rates: Sequence[float]) -> tuple[float, float]:
  """(mean, half-width of the 95% interval); the half-width is 0 for a single run."""
  mean = statistics.fmean(rates)
  if len(rates) < 2:
    return mean, 0.0
  df = len(rates) - 1
  t = _T95[df - 1] if df <= len(_T95) else 1.96
  return mean, t * statistics.stdev(rates) / math.sqrt(len(rates))


def score_files(paths: Sequence[str], mode: str = 'paper') -> dict:
  """{'mode', 'files': {path: score dict}, 'mean', 'ci95', 'runs'} over the files."""
  files = {path: copoet_metrics.score(read_pairs(path), mode) for path in paths}
  mean, half = confidence_interval([r['success_rate'] for r in files.values()])
  return {'mode': mode, 'files': files, 'runs': len(files), 'mean': mean, 'ci95': half}


def format_report(result: dict) -> str:
  """The human-readable report of `score_files`."""
  lines = [f"CoPoet success rate ({result['mode']} mode)"]
  if result['mode'] == 'strict':
    lines.append('strict mode fixes the paper scorer\'s quirks: words compared without '
                 'punctuation, every constraint checked, haiku as 5-7-5 lines, bare '
                 'continuations unscored.')
  for path, r in result['files'].items():
    unscored = f", {r['unscored']} unscored" if r['unscored'] else ''
    lines.append(f"{path}: {r['success_rate']:.1f}% ({r['successes']}/{r['scored']}{unscored})")
    for kind, t in r['per_type'].items():
      if t['scored']:
        lines.append(f"    {kind:<12} {t['success_rate']:5.1f}% ({t['successes']}/{t['scored']})")
      else:
        lines.append(f"    {kind:<12} unscored ({t['unscored']})")
  if result['runs'] > 1:
    lines.append(f"mean over {result['runs']} runs: {result['mean']:.1f}% "
                 f"± {result['ci95']:.1f} (95% CI)")
  return '\n'.join(lines)

"""Writing-session logs of `t5x serve`: one JSON file per poem, the user study's format
extended.

The paper's study logs (one JSON object per poem) hold `uid`, `poemtitle`, `poemsofar`,
`poem_submit`, `nlinstruction`, `rhymewithword`, `current_inst`, `instruction_count` and
`logs`, a Python-repr string of `[{'instruction': ..., 'output': [5 suggestions, 'None of
the above']}]`. A session file keeps all of these, with the same meaning and types, so
tools written for the study read it, and adds:

    format         "copoet-session/1"
    submitted      false for the autosaved draft, true once the writer submits
    created_at, saved_at, submitted_at   ISO 8601 UTC (saved_at, submitted_at: server)
    model          what was served (the checkpoint or Hugging Face folder)
    poem_lines     the poem as a list of lines
    interactions   one per instruction issued, in order:
        instruction, instruction_type (a builder type, or "free"), argument,
        suggestions (as shown), decode {n, temperature, top_k}, latency_ms,
        requested_at, answered_at,
        choice         index into suggestions; null with chosen_at set is "None of
                       the above", null without it a request left unanswered
        chosen_at      when the choice was made
        inserted_at_line   0-based line the chosen suggestion went to (or null)
        final_text     that line's text when the poem was saved (the writer's edits)

`chosen_pairs` gives the (instruction, chosen suggestion) pairs that `t5x score copoet`
scores: the model's line as suggested, not the writer's edit of it.
"""
import ast
import json
import uuid
from typing import Any, Optional

from t5x_tasks import jsonl

FORMAT = 'copoet-session/1'
NONE_OF_THE_ABOVE = 'None of the above'


def file_name(uid: str) -> str:
  """`<uid>.json` with the uid in canonical UUID form: nothing else can name a file."""
  return f'{uuid.UUID(str(uid))}.json'


def record(session: dict, *, model: str, saved_at: str,
           previous: Optional[dict] = None) -> dict:
  """The file content for a session.

  Args:
    session: {uid, title, lines: [str], submitted: bool, created_at,
      interactions: [{instruction, instruction_type, argument, suggestions, decode,
      latency_ms, requested_at, answered_at, choice, chosen_at, inserted_at_line,
      final_text}]}, as the page sends it (validated).
    model: what the server serves.
    saved_at: the server's time, ISO 8601.
    previous: the file's earlier content, if any: a submitted poem keeps its first
      `submitted_at`.
  """
  interactions = session['interactions']
  study_logs = [{'instruction': i['instruction'],
                 'output': list(i['suggestions']) + [NONE_OF_THE_ABOVE]} for i in interactions]
  last = interactions[-1] if interactions else None
  rhymes = [i['argument'] for i in interactions if i.get('instruction_type') == 'rhyme']
  submitted_at = None
  if session['submitted']:
    submitted_at = (previous or {}).get('submitted_at') or saved_at
  return {
      # The study's fields, same names and types.
      'poemsofar': '\n'.join(session['lines']),
      'poemtitle': session['title'],
      'poem_submit': 'poem_submit' if session['submitted'] else '',
      'nlinstruction': last['instruction'] if last else '',
      'rhymewithword': rhymes[-1] if rhymes else '',
      'uid': str(uuid.UUID(str(session['uid']))),
      'current_inst': (f"{last['instruction']}:{study_logs[-1]['output']!r}" if last else ''),
      'logs': repr(study_logs),
      'instruction_count': str(len(interactions)),
      # Ours.
      'format': FORMAT,
      'submitted': bool(session['submitted']),
      'created_at': session.get('created_at') or saved_at,
      'saved_at': saved_at,
      'submitted_at': submitted_at,
      'model': model,
      'poem_lines': list(session['lines']),
      'interactions': [dict(i) for i in interactions],
  }


def dumps(content: dict) -> str:
  """The file text of a session: indented JSON, non-ASCII kept, newline-terminated.

  Strict JSON only: a NaN or infinite number raises ValueError (Python's json would write
  the non-standard tokens NaN and Infinity). The serve app writes this text to
  `<log_dir>/<file_name(uid)>` with `t5x.fs_utils.write_atomic`.
  """
  return json.dumps(content, indent=1, ensure_ascii=False, allow_nan=False) + '\n'


def load(path: str) -> Optional[dict]:
  """A session file's content, or None when `path` holds something else."""
  try:
    content = jsonl.load_json(path)  # a BOM is accepted, as by every reader
  except (OSError, ValueError):
    return None
  return content if isinstance(content, dict) and content.get('format') == FORMAT else None


def chosen_pairs(content: dict, path: str = '<session>') -> list[tuple[str, str]]:
  """(instruction, chosen suggestion) of every interaction whose choice is a suggestion.

  Errors name the file and the interaction.
  """
  pairs = []
  interactions = content.get('interactions', [])
  if not isinstance(interactions, list):
    raise ValueError(f'{path}: field "interactions" is {interactions!r:.40}, not a list of '
                     'interaction objects.')
  for number, interaction in enumerate(interactions):
    where = f'{path}: interactions[{number}]'
    if not isinstance(interaction, dict):
      raise ValueError(f'{where} is {interaction!r:.40}, not an object with instruction, '
                       'suggestions and choice.')
    choice = interaction.get('choice')
    if choice is None:
      continue
    suggestions = interaction.get('suggestions', [])
    if not isinstance(suggestions, list) or not all(isinstance(s, str) for s in suggestions):
      raise ValueError(f'{where}.suggestions is {suggestions!r}; expected a list of strings.')
    if not isinstance(choice, int) or isinstance(choice, bool) or not 0 <= choice < len(
        suggestions):
      raise ValueError(f'{where}.choice={choice!r} is not an index into its '
                       f'{len(suggestions)} suggestions.')
    if not isinstance(interaction.get('instruction'), str):
      raise ValueError(f'{where}.instruction is missing or not a string.')
    pairs.append((interaction['instruction'], suggestions[choice]))
  return pairs


def study_logs(content: dict) -> list[dict[str, Any]]:
  """The study's `logs` field parsed: [{'instruction', 'output'}] (it is a Python repr)."""
  return ast.literal_eval(content['logs']) if content.get('logs') else []

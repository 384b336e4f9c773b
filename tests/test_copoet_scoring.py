"""`t5x score copoet` and `t5x prep copoet-instructions` from the command line."""
import json

import pytest

from t5x_cli import main as cli
from t5x_tasks import copoet_scoring


def test_paper_outputs_reproduce_the_published_mean(shared_dir, capsys):
  files = sorted((shared_dir / 'data' / 'copoet' / 'outputs' / 'T53B').glob('ki_ke_*.output'))
  assert cli.main(['score', 'copoet', '--json', *map(str, files)]) == 0
  result = json.loads(capsys.readouterr().out)
  assert round(result['mean'], 1) == 84.1 and result['runs'] == 5
  assert [r['successes'] for r in result['files'].values()] == [67, 67, 74, 69, 68]
  # 95% CI over 5 runs: t(4) = 2.776 times the standard error of the per-run rates
  # (counts 67, 67, 74, 69, 68 have sample variance 8.5; rates are counts / 82).
  assert result['ci95'] == pytest.approx(2.776 * (100 / 82) * (8.5 / 5) ** 0.5, rel=1e-9)
  assert cli.main(['score', 'copoet', *map(str, files)]) == 0
  report = capsys.readouterr().out
  assert 'mean over 5 runs: 84.1% ± 4.4 (95% CI)' in report and 'rhyme' in report


def test_project_prediction_files_and_strict_mode(tmp_path, capsys):
  path = tmp_path / 'predictions.jsonl'
  rows = [
      {'inputs': {'inputs_pretokenized': "Write a poetic sentence ending in 'night'"},
       'prediction': 'the stars go out at night.'},
      {'instruction': "Write a poetic sentence ending in 'night'", 'prediction': 'at night!'},
      {'translation': {'en1': "Write a next sentence in a poetry given the previous sentence "
                              "'the sea is calm'"}, 'generation': 'and so am I.'},
  ]
  path.write_text(''.join(json.dumps(r) + '\n' for r in rows))
  paper = copoet_scoring.score_files([str(path)])
  strict = copoet_scoring.score_files([str(path)], 'strict')
  # Paper: '.' is stripped but '!' is not, and a bare continuation fails (no argument).
  assert (paper['files'][str(path)]['successes'], paper['files'][str(path)]['scored']) == (1, 3)
  assert (strict['files'][str(path)]['successes'], strict['files'][str(path)]['scored'],
          strict['files'][str(path)]['unscored']) == (2, 2, 1)
  assert cli.main(['score', 'copoet', '--mode', 'strict', str(path)]) == 0
  out = capsys.readouterr().out
  assert 'strict mode fixes' in out and 'continuation unscored (1)' in out


def test_bad_prediction_line_names_file_line_and_field(tmp_path, capsys):
  path = tmp_path / 'p.jsonl'
  path.write_text('{"instruction": "Write a haiku about \'x\'"}\n')
  assert cli.main(['score', 'copoet', str(path)]) == 2
  assert f'{path}:1: field "generation"' in capsys.readouterr().err


def test_prep_writes_checked_instruction_pairs(tmp_path, capsys):
  src = tmp_path / 'lines.txt'
  src.write_text('The river carries light like a ribbon,\nand the night is a quiet door.\n')
  out = tmp_path / 'out' / 'pairs.json'
  assert cli.main(['prep', 'copoet-instructions', str(src), str(out), '--seed', '3']) == 0
  records = [json.loads(l) for l in out.read_text().splitlines()]
  assert records and all(set(r['translation']) == {'en1', 'en2'} for r in records)
  assert 'wrote' in capsys.readouterr().out

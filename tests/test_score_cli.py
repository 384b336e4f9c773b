"""`t5x prep ni`, `t5x score ni` and `t5x score caption` from the command line."""
import json

from t5x_cli import main as cli
from t5x_tasks import caption_contest_data, ni_metrics


def test_prep_and_score_ni(shared_dir, tmp_path, capsys):
  out = tmp_path / 'ni'
  assert cli.main(['prep', 'ni', '--data', str(shared_dir / 'data' / 'natural_instructions'),
                   '--out', str(out)]) == 0
  assert '500 test instances (5 tasks)' in capsys.readouterr().out
  refs = [json.loads(l) for l in (out / 'references.jsonl').read_text().splitlines()]
  # Perfect predictions score 100 on both metrics.
  preds = tmp_path / 'preds.jsonl'
  preds.write_text(''.join(json.dumps({'id': r['id'], 'prediction': r['references'][0]}) + '\n'
                           for r in refs))
  assert cli.main(['score', 'ni', '--predictions', str(preds), '--references',
                   str(out / 'references.jsonl'), '--json']) == 0
  result = json.loads(capsys.readouterr().out)
  assert result['exact_match'] == 100.0 and result['rougeL'] == 100.0 and result['count'] == 500
  # The copy_demo baseline equals scoring its own predictions through the library.
  assert cli.main(['score', 'ni', '--baseline', 'copy_demo', '--test', str(out / 'test.jsonl'),
                   '--references', str(out / 'references.jsonl'), '--json']) == 0
  baseline = json.loads(capsys.readouterr().out)
  direct = ni_metrics.score_baseline(str(out / 'test.jsonl'), str(out / 'references.jsonl'),
                                     'copy_demo')
  assert (baseline['exact_match'], baseline['rougeL']) == (direct['exact_match'], direct['rougeL'])
  assert 0 < baseline['rougeL'] < 100
  assert cli.main(['score', 'ni', '--references', str(out / 'references.jsonl')]) == 2
  assert '--predictions' in capsys.readouterr().err


def test_score_caption_matching(tmp_path, capsys):
  rows = caption_contest_data.load_rows('matching', 0, 'test')
  wrong = {r['instance_id']: ('A' if r['label'] != 'A' else 'B') for r in rows}
  wrong[rows[0]['instance_id']] = rows[0]['label']
  path = tmp_path / 'matching_split=0.json'
  path.write_text(json.dumps(wrong))
  assert cli.main(['score', 'caption', '--task', 'matching', '--predictions', str(path),
                   '--json']) == 0
  result = json.loads(capsys.readouterr().out)
  assert result['mean']['accuracy'] == 100.0 / len(rows)
  # The same predictions as `t5x infer` writes them: JSON Lines under T5X's shard name.
  lines = tmp_path / 'caption_matching_split0-predict.jsonl-00000-of-00001'
  lines.write_text(''.join(json.dumps({'instance_id': k, 'prediction': v}) + '\n'
                           for k, v in wrong.items()))
  assert cli.main(['score', 'caption', '--task', 'matching', '--predictions', str(lines),
                   '--json']) == 0
  assert json.loads(capsys.readouterr().out)['mean'] == result['mean']

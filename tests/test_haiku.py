"""Deep Haiku: the four formats, splits, syllable metric, raw-format errors, prep, tasks."""
import errno
import json
import os

import gin
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import seqio

from t5x import fs_utils
from t5x_cli import main as cli
from t5x_tasks import haiku, haiku_data, haiku_metrics, haiku_phonetics, vocabularies

BASHO = 'an old silent pond / a frog jumps into the pond / splash silence again'
ROW = {
    'text': BASHO,
    'text_phonemes': haiku_phonetics.phonemize(BASHO),
    'keywords': 'pond frog',
    'keyword_phonemes': 'paand fraag',
}
LENGTHS = {'inputs': 512, 'targets': 512}


@pytest.fixture(autouse=True)
def offline_tasks(monkeypatch):
  """Tasks on the bundled sample and the quickstart vocabulary (T5's needs the network)."""
  monkeypatch.delenv(haiku_data.DATA_ENV, raising=False)
  gin.clear_config()
  gin.bind_parameter('vocabularies.task_vocabulary.name', 'quickstart')
  haiku.register()
  yield
  gin.clear_config()
  haiku.register()


def test_phoneme_format_of_a_known_line():
  assert ROW['text_phonemes'] == ('aen owld say|lahnt paand / ah fraag jhahmps ihn|tuw dhah paand'
                                  ' / splaesh say|lahns ah|gehn')
  assert haiku_phonetics.phonemize('pond frog') == 'paand fraag'


def test_four_encodings_exactly():
  expected = {
      'topic2graphemes': ('(pond frog =', BASHO + ')'),
      'topic2phonemes': ('<paand fraag =', ROW['text_phonemes'] + '>'),
      'graphemes2phonemes': ('[' + BASHO + ' =', ROW['text_phonemes'] + ']'),
      'phonemes2graphemes': ('{' + ROW['text_phonemes'] + ' =', BASHO + '}'),
  }
  for fmt, (inputs, targets) in expected.items():
    assert haiku.encode(ROW, fmt) == {'inputs': inputs, 'targets': targets}
  # Joined with one space, input and target are the seed's full training string.
  example = haiku.encode(ROW, 'topic2graphemes')
  assert example['inputs'] + ' ' + example['targets'] == f'(pond frog = {BASHO})'


def test_split_is_deterministic_and_about_95_5():
  texts = [f'synthetic haiku number {i} / line two / line three' for i in range(1000)]
  splits = [haiku.split_of(t) for t in texts]
  assert splits == [haiku.split_of(t) for t in texts]
  assert set(splits) == {'train', 'validation'}
  assert splits.count('validation') == 60  # SHA-256 based: the same on every machine
  assert 30 <= splits.count('validation') <= 70
  assert haiku.split_of(BASHO) == 'train'


def test_syllable_counts_from_cmudict():
  assert haiku_phonetics.syllable_counts(BASHO) == [5, 7, 5]
  written = 'An old, silent pond...\nA frog jumps into the pond —\nsplash! Silence again.'
  assert haiku_phonetics.syllable_counts(written) == [5, 7, 5]
  assert haiku_phonetics.syllable_counts('cherry blossoms fall / morning') == [5, 2]
  assert haiku_phonetics.word_syllable_count('silence') == 2
  # CMUdict's first pronunciation: F AY1 ER0
  assert haiku_phonetics.word_syllable_count('fire') == 2
  assert haiku_metrics.is_575(BASHO)
  assert not haiku_metrics.is_575('an old silent pond / a frog jumps in')


def test_fallback_for_a_made_up_word():
  assert haiku_phonetics.pronouncing.phones_for_word('blorptastic') == []
  assert haiku_phonetics.word_syllable_count('blorptastic') == 3  # syllapy
  assert haiku_phonetics.word_phonemes('blorptastic') == 'blor|ptas|tic'
  assert haiku_phonetics.word_phonemes('stone') == 'stown'
  assert haiku_phonetics.syllable_counts('blorptastic frog / x') == [4, 1]


def test_score_exact_values():
  generations = [
      BASHO + ')',  # a topic2graphemes prediction with its closing bracket
      'the dog sleeps in rain / the wet dog dreams of a bone / the rain never stops',
      'too short / for a haiku / really',
      'Rain on the tin roof / the whole barn hums like a drum / the horses don\'t mind}',
  ]
  assert haiku_metrics.score(generations) == {'count': 4, 'percent_575': 75.0}
  topics = ['pond frog', ['dog', 'rain'], 'rain', 'horse rain']
  # 'horse' is not a whole word of 'horses': only the first two include every keyword.
  assert haiku_metrics.score(generations, topics) == {
      'count': 4, 'percent_575': 75.0, 'percent_topic_words': 50.0}
  assert haiku_metrics.score(['Pond FROG / x / y'], ['frog pond'])['percent_topic_words'] == 100.0
  assert haiku_metrics.seqio_metric(['ignored'], [BASHO]) == {'count': 1, 'percent_575': 100.0}
  assert haiku_metrics.seqio_phoneme_metric([''], [ROW['text_phonemes'] + ' ⁇']) == {
      'count': 1, 'percent_575': 100.0}


def test_score_file_jsonl_and_text(tmp_path):
  jsonl = tmp_path / 'predictions.jsonl'
  jsonl.write_text(json.dumps({'prediction': BASHO, 'topic': 'frog'}) + '\n' +
                   json.dumps({'generation': 'a / b / c', 'keywords': ['dog']}) + '\n')
  assert haiku_metrics.score_file(str(jsonl)) == {
      'count': 2, 'percent_575': 50.0, 'percent_topic_words': 50.0}
  text = tmp_path / 'predictions.txt'
  text.write_text(BASHO + '\n\nshort / poem / here\n')
  assert haiku_metrics.score_file(str(text)) == {'count': 2, 'percent_575': 50.0}
  bad = tmp_path / 'bad.jsonl'
  bad.write_text(json.dumps({'prediction': BASHO}) + '\n' + json.dumps({'text': 'x'}) + '\n')
  with pytest.raises(ValueError, match=r'bad\.jsonl:2: .*"prediction"'):
    haiku_metrics.score_file(str(bad))


def test_parquet_missing_column_names_file_and_column(tmp_path):
  path = tmp_path / 'partial.parquet'
  pq.write_table(pa.table({'text': [BASHO], 'keywords': ['pond']}), path)
  with pytest.raises(ValueError, match=r'partial\.parquet: missing column\(s\) text_phonemes, '
                                       r'keyword_phonemes'):
    haiku_data.read_parquet(str(path))


def test_malformed_csv_row_names_file_and_row(tmp_path):
  path = tmp_path / 'haiku.csv'
  path.write_text('0,1,2,source\nan old silent pond,a frog jumps in,splash,basho\n'
                  'only one line,,,me\n')
  with pytest.raises(ValueError, match=r'haiku\.csv:row 3: expected a haiku of three'):
    haiku_data.read_csv(str(path))
  short = tmp_path / 'short.csv'
  short.write_text('a,b,c\nd,e\n')
  with pytest.raises(ValueError, match=r'short\.csv:row 2: expected columns \[0, 1, 2\]'):
    haiku_data.read_csv(str(short))


def test_malformed_text_line_names_file_and_line(tmp_path):
  path = tmp_path / 'haiku.txt'
  path.write_text(BASHO + '\n\ntwo lines / only\n')
  with pytest.raises(ValueError, match=r'haiku\.txt:line 3: expected a haiku of three'):
    haiku_data.read_text(str(path))


def test_prep_round_trips_and_writes_atomically(tmp_path, monkeypatch, capsys):
  source = tmp_path / 'mine.csv'
  source.write_text('0,1,2,source\n"An old, silent pond...",A frog jumps into the pond,'
                    'splash! Silence again.,basho\n')
  out = tmp_path / 'out' / 'haiku.parquet'
  assert haiku_data.prep(str(source)).num_rows == 1 and not out.parent.exists()  # no writes
  replaced = []
  real_replace = os.replace
  monkeypatch.setattr(fs_utils.os, 'replace', lambda a, b: (replaced.append((a, b)),
                                                           real_replace(a, b)))
  assert cli.main(['prep', 'haiku', str(source), str(out)]) == 0
  assert capsys.readouterr().out.strip() == (
      f'wrote {out}: 1 haiku with phonemes and keywords')
  (tmp, final), = replaced
  assert final == str(out) and os.path.dirname(tmp) == str(out.parent) and tmp != final
  table = pq.read_table(out)
  assert table.schema == haiku_data.SCHEMA
  assert table.to_pylist() == [{
      'source': 'basho', 'text': BASHO, 'text_phonemes': ROW['text_phonemes'],
      'keywords': 'pond silence', 'keyword_phonemes': 'paand say|lahns', 'gruen_score': None,
      'text_punc': 'An old, silent pond... / A frog jumps into the pond / splash! Silence again.'}]
  assert haiku_data.read_parquet(str(out))[0]['text'] == BASHO
  # Passing the parquet through keeps it; bad input leaves the old output untouched.
  assert haiku_data.prep(str(out)).equals(table)
  assert cli.main(['prep', 'haiku', str(out), str(tmp_path / 'copy.parquet')]) == 0
  assert pq.read_table(tmp_path / 'copy.parquet').equals(table)
  bad = tmp_path / 'bad.txt'
  bad.write_text(BASHO + '\nnot a haiku\n')
  with pytest.raises(ValueError, match=r'bad\.txt:line 2'):
    haiku_data.prep(str(bad))
  capsys.readouterr()
  assert cli.main(['prep', 'haiku', str(bad), str(out)]) == 2
  assert 'bad.txt:line 2' in capsys.readouterr().err
  assert pq.read_table(out).equals(table)
  assert sorted(os.listdir(out.parent)) == ['haiku.parquet']
  with pytest.raises(ValueError, match=r'unknown extension'):
    haiku_data.prep(str(tmp_path / 'x.json'))


def test_a_torn_parquet_write_keeps_the_old_file(tmp_path, monkeypatch, capsys):
  text = tmp_path / 'h.txt'
  text.write_text(BASHO + '\n')
  out = tmp_path / 'h.parquet'
  assert cli.main(['prep', 'haiku', str(text), str(out)]) == 0
  before = out.read_bytes()
  text.write_text(BASHO + '\n' + BASHO + '\n')

  def full(fd):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(fs_utils.os, 'fsync', full)
  capsys.readouterr()
  assert cli.main(['prep', 'haiku', str(text), str(out)]) == 2
  assert capsys.readouterr().err.strip().endswith(f'{out}: No space left on device')
  assert out.read_bytes() == before and sorted(os.listdir(tmp_path)) == ['h.parquet', 'h.txt']


def test_bundled_sample_matches_its_text_and_is_mostly_575():
  rows = pq.read_table(haiku_data.SAMPLE_PARQUET).to_pylist()
  with open(haiku_data.SAMPLE_TXT, encoding='utf-8') as f:
    lines = [line.strip() for line in f if line.strip()]
  assert [r['text_punc'] for r in rows] == lines
  assert [r['text'] for r in rows] == [haiku_data.normalize_text(line.split(' / '))
                                        for line in lines]
  assert [r['text_phonemes'] for r in rows] == [haiku_phonetics.phonemize(r['text']) for r in rows]
  assert haiku_metrics.score([r['text'] for r in rows])['percent_575'] == 96.0
  assert [haiku.split_of(r['text']) for r in rows].count('validation') == 3


def test_tasks_load_from_bundled_sample():
  vocab = vocabularies.quickstart_vocabulary()
  assert haiku.data_path() == haiku_data.SAMPLE_PARQUET
  task = seqio.get_mixture_or_task('haiku_topic2graphemes')
  examples = list(task.get_dataset(LENGTHS, split='validation', shuffle=False).as_numpy_iterator())
  assert len(examples) == 3
  assert all(ex['targets'][-1] == 1 for ex in examples)  # EOS
  # The quickstart vocabulary has no '(' or '=' (they decode as ⁇) but keeps the words.
  assert vocab.decode(examples[0]['inputs'].tolist()).strip() == '⁇ bookshop asleep  ⁇'
  train = task.get_dataset(LENGTHS, split='train', shuffle=False)
  assert sum(1 for _ in train) == 47
  mixture = seqio.get_mixture_or_task('haiku_multitask')
  assert sorted(t.name for t in mixture.tasks) == sorted(haiku.task_names())
  assert {mixture.get_rate(t) for t in mixture.tasks} == {1.0}


def test_tasks_inputs_start_with_their_bracket():
  # A byte vocabulary is lossless, so the decoded strings show the brackets exactly.
  vocab = seqio.ByteVocabulary()
  haiku.register(vocab)
  for fmt, (opening, _, _, closing) in haiku.FORMATS.items():
    task = seqio.get_mixture_or_task(haiku.TASK_PREFIX + fmt)
    example = next(task.get_dataset(LENGTHS, split='validation', shuffle=False).as_numpy_iterator())
    inputs = vocab.decode(example['inputs'].tolist())
    targets = vocab.decode(example['targets'].tolist())
    assert inputs.startswith(opening) and inputs.endswith(' =')
    assert targets.endswith(closing) and not targets.startswith(' ')
    assert task.postprocess_fn(targets) == targets[:-1]
    assert task.postprocess_fn(targets.encode(), is_target=True) == targets[:-1]
  assert inputs == ('{kway|aht buhk|shaap kaet / ahs|liyp aan dhah pow|aht|riy /'
                    ' now wahn bayz ah buhk =')


def test_data_path_from_environment(tmp_path, monkeypatch):
  path = tmp_path / 'mine.parquet'
  text = tmp_path / 'mine.txt'
  text.write_text('\n'.join(f'haiku number {i} / a frog jumps in / the pond' for i in range(40)))
  assert cli.main(['prep', 'haiku', str(text), str(path)]) == 0
  monkeypatch.setenv(haiku_data.DATA_ENV, str(path))
  assert haiku.data_path() == str(path)
  task = seqio.get_mixture_or_task('haiku_graphemes2phonemes')
  counts = {split: sum(1 for _ in task.get_dataset(LENGTHS, split=split, shuffle=False))
            for split in haiku.SPLITS}
  assert sum(counts.values()) == 40

"""CoPoet instruction generator: every pair passes the strict checker, by type."""
import errno
import json
import os
import pathlib
import random
import re

import pytest
import syllapy

from t5x import fs_utils
from t5x_cli import main as cli
from t5x_tasks import copoet_instructions as ci
from t5x_tasks import copoet_metrics as cm

SAMPLE = pathlib.Path(ci.__file__).parent / 'data' / 'poem_lines_sample.txt'


@pytest.fixture(scope='module')
def lines():
  """The bundled sample, read once."""
  return ci.read_poem_lines(SAMPLE)


@pytest.fixture(scope='module')
def pairs(lines):
  """Typed pairs generated from the sample with the default seed."""
  return ci.generate_pairs(lines, seed=0)


def _quoted(instruction, key):
  """The argument quoted after `key` in an instruction."""
  return re.search(key + r" '([^']*)'", instruction).group(1)


def _words(text):
  """Lower-cased words, edge punctuation stripped."""
  return [w for w in (t.strip(ci._PUNCT).lower() for t in text.split()) if w]


# --- the bundled sample --------------------------------------------------------


def test_sample_has_poems_and_haiku(lines):
  entries = [line for line in lines if line]
  haiku = [line for line in entries if ci._haiku_lines(line)]
  assert len(entries) == 150
  assert lines.count(ci.POEM_BREAK) >= 15  # 10 poems and 10 one-entry haiku
  assert len(haiku) == 10
  for entry in haiku:  # 5-7-5 by syllapy, the checker's counter
    counts = [sum(syllapy.count(w) for w in _words(part)) for part in entry.split(' / ')]
    assert counts == [5, 7, 5], entry


# --- the guarantee ------------------------------------------------------------


def test_every_pair_passes_strict_checker(pairs):
  results = [cm.satisfies(p.instruction, p.target, mode='strict') for p in pairs]
  scored = [r for r in results if r is not None]
  unscored = [p for p, r in zip(pairs, results) if r is None]
  # None is allowed only for bare continuations, which strict mode leaves out.
  assert all(p.kind == 'continuation' for p in unscored)
  assert len(unscored) == sum(p.kind == 'continuation' for p in pairs) == 130
  assert len(scored) == len(pairs) - len(unscored) == 677
  assert all(r is True for r in scored)
  assert cm.score([(p.instruction, p.target) for p in pairs], 'strict')['success_rate'] == 100.0


def test_counts_per_type_on_sample(pairs):
  assert ci.count_types(pairs) == {
      'subject': 140, 'subject_end': 140, 'end': 140, 'start': 140, 'rhyme': 80,
      'simile': 15, 'metaphor': 12, 'haiku': 10, 'continuation': 130}


def test_every_type_appears_and_matches_the_checker(pairs):
  assert {p.kind for p in pairs} == set(ci.TYPES)
  expected = {'subject': 'subject', 'subject_end': 'end', 'end': 'end',
              'start': 'start', 'rhyme': 'rhyme', 'simile': 'simile',
              'metaphor': 'metaphor', 'haiku': 'haiku', 'continuation': 'continuation'}
  for pair in pairs:
    assert cm.classify(pair.instruction) == expected[pair.kind], pair


def test_failing_candidates_are_dropped():
  # "o'er" cannot be quoted, so it is never an end word; a previous sentence
  # holding "haiku" makes the paper's classifier call the continuation a haiku
  # prompt, which the strict checker fails, so that continuation is dropped.
  poem = ["The wind goes o'er", 'I wrote a haiku for you', 'and you replied in kind']
  pairs = ci.generate_pairs(poem)
  assert not any("o'er" in p.instruction for p in pairs if p.kind != 'continuation')
  assert [p.target for p in pairs if p.kind == 'continuation'] == ['I wrote a haiku for you']
  assert all(ci.passes(p) for p in pairs)
  assert not ci.passes(ci.Pair('end', "Write a poetic sentence ending in 'night'", 'day'))
  bare = "Write a next sentence in a poetry given the previous sentence 'Hi'"
  assert ci.passes(ci.Pair('continuation', bare, 'Hello'))
  assert not ci.passes(ci.Pair('subject', bare, 'Hello'))


# --- arguments come from the line ---------------------------------------------


def test_end_start_and_rhyme_arguments(pairs):
  for pair in pairs:
    words = _words(pair.target)
    if pair.kind in ('end', 'subject_end'):
      assert _quoted(pair.instruction, 'ending in').lower() == words[-1]
    if pair.kind == 'start':
      assert _quoted(pair.instruction, 'the word').lower() == words[0]
    if pair.kind == 'rhyme':
      rhyme = _quoted(pair.instruction, 'rhymes with')
      assert rhyme != words[-1]  # never the last word itself
      assert words[-1] in cm.rhymes(rhyme)


def test_subjects_are_content_words_of_the_line(pairs):
  for pair in pairs:
    if pair.kind in ('subject', 'subject_end', 'simile', 'metaphor', 'haiku'):
      topic = re.findall(r"'([^']*)'", pair.instruction)[0]
      assert topic.lower() not in ci.STOP_WORDS
      assert topic.lower() in [re.sub(r"'s$", '', w) for w in _words(pair.target)]


def test_forms_only_where_the_line_has_them(lines, pairs):
  for pair in pairs:
    is_haiku = bool(ci._haiku_lines(pair.target))
    assert (pair.kind == 'haiku') == is_haiku, pair
    if pair.kind in ('simile', 'metaphor'):
      assert any(f' {p} ' in f" {' '.join(_words(pair.target))} "
                 for p in cm.COMPARISON_PHRASES)
  similes = {p.target: p.instruction for p in pairs if p.kind == 'simile'}
  assert similes['A taxi drifts like a lantern on a river,'].endswith("'taxi'")
  metaphors = {p.target: p.instruction for p in pairs if p.kind == 'metaphor'}
  assert metaphors['Above the roofs the moon is a silver coin'].endswith("'moon'")


def test_continuations_pair_neighbours_within_a_poem(lines, pairs):
  neighbours = {(a, b) for a, b in zip(lines, lines[1:]) if a and b}
  continuations = [p for p in pairs if p.kind == 'continuation']
  for pair in continuations:
    previous = re.search(r"previous sentence '(.*)'$", pair.instruction).group(1)
    assert (previous, pair.target) in neighbours
  # 150 entries in 10 poems of 140 lines plus 10 haiku: 140 - 10 neighbours.
  assert len(continuations) == 130


# --- determinism and format ----------------------------------------------------


def test_deterministic_for_a_seed(lines):
  first = ci.generate(lines, seed=0)
  random.seed(12345)  # the global generator plays no part
  assert ci.generate(lines, seed=0) == first
  assert ci.generate(list(lines), seed=0) == first
  other = ci.generate(lines, seed=1)
  assert other != first


def test_records_are_copoet_raw_format(lines, pairs):
  records = ci.generate(lines)
  assert len(records) == len(pairs)
  for item, pair in zip(records, pairs):
    assert item == {'translation': {'en1': pair.instruction, 'en2': pair.target}}


# --- files --------------------------------------------------------------------


def test_prep_returns_records_and_counts_and_writes_nothing(tmp_path, lines):
  records, counts = ci.prep(SAMPLE, seed=3)
  assert records == ci.generate(lines, seed=3)
  assert counts == ci.count_types(ci.generate_pairs(lines, seed=3))
  assert sum(counts.values()) == len(records)


def test_the_command_writes_a_file_that_round_trips(tmp_path, lines, capsys):
  out = tmp_path / 'out' / 'copoet.jsonl'
  assert cli.main(['prep', 'copoet-instructions', str(SAMPLE), str(out), '--seed', '3']) == 0
  with out.open(encoding='utf-8') as f:
    written = [json.loads(line) for line in f]
  assert written == ci.generate(lines, seed=3)
  assert f'wrote {out}: {len(written)} pairs ' in capsys.readouterr().out
  assert sorted(p.name for p in out.parent.iterdir()) == ['copoet.jsonl']


def test_a_failed_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch, capsys):
  out = tmp_path / 'copoet.jsonl'
  out.write_text('old\n')

  def full(fd):  # the disk fills up as the data is synced
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

  monkeypatch.setattr(fs_utils.os, 'fsync', full)
  assert cli.main(['prep', 'copoet-instructions', str(SAMPLE), str(out)]) == 2
  assert capsys.readouterr().err.strip().endswith(f'{out}: No space left on device')
  assert out.read_text() == 'old\n'
  assert [p.name for p in tmp_path.iterdir()] == ['copoet.jsonl']


def test_bad_utf8_names_file_and_line(tmp_path, capsys):
  bad = tmp_path / 'bad.txt'
  bad.write_bytes(b'first line\n\nsecond poem\nbroken \xff\xfe line\n')
  with pytest.raises(ValueError, match=r'bad\.txt:4: not valid UTF-8'):
    ci.read_poem_lines(bad)
  with pytest.raises(ValueError, match=r'bad\.txt:4'):
    ci.prep(bad)
  assert cli.main(['prep', 'copoet-instructions', str(bad), str(tmp_path / 'out.jsonl')]) == 2
  assert 'bad.txt:4: not valid UTF-8' in capsys.readouterr().err
  assert not (tmp_path / 'out.jsonl').exists()


def test_read_poem_lines_breaks_and_whitespace(tmp_path):
  path = tmp_path / 'poems.txt'
  path.write_bytes('\ufeff\n  One   line \r\ntwo\n\n\n\nthree\n\n'.encode('utf-8'))
  assert ci.read_poem_lines(path) == ['One line', 'two', ci.POEM_BREAK, 'three']


def test_prep_rejects_an_empty_file(tmp_path):
  empty = tmp_path / 'empty.txt'
  empty.write_text('\n\n')
  with pytest.raises(ValueError, match='no poem lines'):
    ci.prep(empty)

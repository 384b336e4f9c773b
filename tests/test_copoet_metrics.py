"""CoPoet success rate: the paper's published numbers, and each check by hand."""
import json
import math

import pytest

from t5x_tasks import copoet_metrics as cm

RUNS = range(1, 6)

# Published success rates (percent, mean of 5 runs, one decimal).
PUBLISHED = [
    ('T53B', 'ki_ke', 84.1), ('T53B', 'ki_ue', 42.2), ('T53B', 'compositional', 36.7),
    ('T03B', 'ki_ke', 82.9), ('T03B', 'ki_ue', 42.9), ('T03B', 'compositional', 32.3),
]

RHYME_KILL = "Write a poetic sentence that ends in a word which rhymes with 'kill'"
HAIKU = "Write a haiku about 'autumn moon'"
SIMILE = "Write a simile about 'love'"
METAPHOR = "Write a metaphor about 'time'"
END = "Write a poetic sentence ending in 'night'"
START = "Generate a poetic sentence that starts with the word 'Silence'"
SUBJECT = "Write a poetic sentence about 'art'"
CONTINUATION = "Write a next sentence in a poetry given the previous sentence 'The moon is high'"


def _pairs(shared_dir, model, test_set, run):
  """(instruction, generation) pairs of one released output file, read in place."""
  path = shared_dir / 'data' / 'copoet' / 'outputs' / model / f'{test_set}_{run}.output'
  with path.open() as f:
    rows = [json.loads(line) for line in f if line.strip()]
  return [(row['instruction'], row['generation']) for row in rows]


# --- the paper's numbers ------------------------------------------------------


@pytest.mark.parametrize('model,test_set,published', PUBLISHED)
def test_reproduces_published_mean(shared_dir, model, test_set, published):
  rates = [cm.score(_pairs(shared_dir, model, test_set, run))['success_rate']
           for run in RUNS]
  assert round(sum(rates) / len(rates), 1) == published


def test_t53b_ki_ke_per_run_successes(shared_dir):
  results = [cm.score(_pairs(shared_dir, 'T53B', 'ki_ke', run)) for run in RUNS]
  assert [r['successes'] for r in results] == [67, 67, 74, 69, 68]
  assert [r['total'] for r in results] == [82] * 5


def test_strict_leaves_bare_continuations_unscored_on_real_data(shared_dir):
  pairs = _pairs(shared_dir, 'T53B', 'ki_ue', 1)
  paper, strict = cm.score(pairs), cm.score(pairs, 'strict')
  assert paper['unscored'] == 0 and paper['scored'] == 82
  assert strict['unscored'] == 15 and strict['scored'] == 67
  assert strict['per_type']['continuation']['scored'] == 0


# --- classification and arguments ----------------------------------------------


@pytest.mark.parametrize('instruction,kind', [
    (RHYME_KILL, 'rhyme'),
    ("Write a haiku about 'magic' and ending in a word which rhymes with 'city'", 'rhyme'),
    ("Write a haiku about 'gave her tulips' and ending in 'grave'", 'haiku'),
    ("Write a simile about 'death' and ending in 'life'", 'simile'),
    ("Write a metaphor about 'church' and ending in 'pure'", 'metaphor'),
    ("Write a poetic sentence that starts with the word 'Maybe' and ending in 'void'", 'end'),
    (START, 'start'),
    (SUBJECT, 'subject'),
    ("Write a poetic sentence starting with the word 'I walked' and containing "
     "the word 'chlorine'", 'subject'),  # 'starting with' is not 'starts with'
    (CONTINUATION, 'continuation'),
])
def test_classify_follows_paper_precedence(instruction, kind):
  assert cm.classify(instruction) == kind


@pytest.mark.parametrize('instruction,args', [
    (RHYME_KILL, ['kill']),
    ("Write a poetic sentence that contains the word 'soul' and ending in 'yellow''", ['yellow']),
    ("Write a poetic sentence that includes the word 'solitude' and ending in 'doubt'''", ['doubt']),
    ("Write a poetic sentence that contains the word 'Raindrops' and ending in a word "
     "which rhymes with 'apology", []),  # unclosed quote: the paper finds nothing
    ("Generate a poetic sentence ending in 'seeks.", []),
    ("Write a simile about 'happiness' and containing the word 'christmas'",
     ['happiness', 'christmas']),
    ("Write a poetic sentence about 'sorrow' and including the word 'palace'", ['sorrow', 'palace']),
    ("Write a poetic sentence that speaks of 'sand' and ending in 'premium'", ['premium']),
    (CONTINUATION, []),
])
def test_arguments_match_paper_extraction(instruction, args):
  assert cm.arguments(instruction) == args


def test_strict_constraints_cover_every_clause():
  assert cm.constraints(
      "Write a poetic sentence about 'food' that ends in a word that rhymes with "
      "'wheeze' and has a simile for 'hungry'") == [
          ('rhyme_end', 'wheeze'), ('contains', 'food'), ('contains', 'hungry'),
          ('simile', '')]
  assert cm.constraints(
      "Write a poetic sentence that starts with a word that rhymes with 'hi' and "
      "has a metaphor about 'bravery'") == [
          ('rhyme_start', 'hi'), ('contains', 'bravery'), ('metaphor', '')]
  assert cm.constraints(
      "Write a next sentence in a poetry given the previous sentence 'Pain is worth "
      "when you hit bull's eye'") == []
  assert cm.constraints(
      "Write a poetic sentence that contains the word 'Raindrops' and ending in a "
      "word which rhymes with 'apology") == [
          ('rhyme_end', 'apology'), ('contains', 'Raindrops')]


def test_rhyme_lookup_is_cached_and_keeps_capitalised_self_rhyme():
  cm.rhymes.cache_clear()
  kill = cm.rhymes('kill')
  assert 'hill' in kill and 'kill' not in kill
  assert cm.rhymes('kill') is kill
  assert cm.rhymes.cache_info().hits == 1
  assert 'kill' in cm.rhymes('Kill')  # pronouncing only drops the exact input


# --- each check, both modes ---------------------------------------------------


@pytest.mark.parametrize('instruction,generation,paper,strict', [
    # rhyme: lenient two-way substring on the raw, case-sensitive last token
    (RHYME_KILL, 'The night is dark and still.', True, True),
    (RHYME_KILL, 'The swans slept on the millpond.', True, False),  # 'mill' in 'millpond.'
    (RHYME_KILL, 'The night is dark and STILL', False, True),
    (RHYME_KILL, 'The night is dark and cold.', False, False),
    # haiku: total 15..19 syllables (paper) vs 5-7-5 lines (strict)
    (HAIKU, 'autumn moon rises / over the silent river / the heron waits there', True, True),
    (HAIKU, 'autumn moon rises over / the silent river / the heron waits there', True, False),
    (HAIKU, 'autumn moon rises\nover the silent river\nthe heron waits there', True, True),
    (HAIKU, 'the moon rises / over the silent river / the heron waits there', False, False),
    (HAIKU, 'autumn moon', False, False),
    # simile / metaphor: a comparison phrase, case-sensitive substring in the paper
    (SIMILE, 'My love is like a red rose.', True, True),
    (SIMILE, 'Like a red rose, my love blooms.', False, True),
    (SIMILE, 'My love, unlike anything, blooms.', True, False),  # 'like a' in 'unlike anything'
    (SIMILE, 'My heart is like a red rose.', False, False),
    (METAPHOR, 'Time is a thief.', True, True),
    (METAPHOR, 'Time flies.', False, False),
    # end: only '.' and ',' removed in the paper
    (END, 'I walked alone into the night.', True, True),
    (END, 'I walked alone into the night!', False, True),
    (END, 'I walked alone into the nightfall.', False, False),
    (END, 'I walked into the night, my love', False, False),
    # start: first token, '.' and ',' removed in the paper
    (START, 'Silence, my old friend, returns.', True, True),
    (START, '"Silence" was all she said.', False, True),
    (START, 'The silence returns.', False, False),
    # subject: substring in the paper, whole word in strict
    (SUBJECT, 'Art is long, and life is short.', True, True),
    (SUBJECT, "The painter's art's long shadow.", True, True),
    (SUBJECT, 'My heart is heavy.', True, False),
    (SUBJECT, 'My soul is heavy.', False, False),
])
def test_single_constraint_checks(instruction, generation, paper, strict):
  assert cm.satisfies(instruction, generation) is paper
  assert cm.satisfies(instruction, generation, mode='strict') is strict


@pytest.mark.parametrize('instruction,generation,paper,strict', [
    # The paper checks only the end word; 'rays' is never looked for.
    ("Write a poetic sentence that contains the word 'rays' and ending in 'color'",
     'In the smoky shack, a color.', True, False),
    ("Write a poetic sentence that contains the word 'rays' and ending in 'color'",
     'The rays of dusk, a color.', True, True),
    # The paper checks only the rhyme.
    ("Write a poetic sentence that contains the word 'bees' and ending in a word "
     "which rhymes with 'bloom'", 'The wasps hum in the room.', True, False),
    ("Write a poetic sentence that contains the word 'bees' and ending in a word "
     "which rhymes with 'bloom'", 'The bees hum in the room.', True, True),
    # Stray closing quote; the paper cannot end-match a token with a quote on it.
    ("Write a poetic sentence that starts with the word 'Maybe' and ending in 'void'''",
     "Maybe 'tis not the void'.", False, True),
    # A multi-word end can never equal one paper token.
    ("Write a poetic sentence ending in 'bitter and cruel'",
     'The tumult of the blood, bitter and cruel.', False, True),
    # Unclosed quote: the paper finds no argument and fails the item.
    ("Generate a poetic sentence ending in 'seeks.", 'A dream that seeks.', False, True),
    # Haiku form and its end word both count in strict mode.
    # (the paper's haiku check only asks that 'there' appear somewhere).
    ("Write a haiku about 'autumn moon' and ending in 'there'",
     'autumn moon rises / over the silent river / there the heron waits', True, False),
    # A continuation scored on its extra constraint; the previous sentence is context.
    ("Write a next sentence in a poetry given the previous sentence 'It flashed in "
     "the sun as I kissed her' and ending in 'air'", 'And we danced in the open air.', True, True),
])
def test_compositional_checks(instruction, generation, paper, strict):
  assert cm.satisfies(instruction, generation) is paper
  assert cm.satisfies(instruction, generation, mode='strict') is strict


def test_bare_continuation_fails_in_paper_and_is_unscored_in_strict():
  generation = 'And the stars come down to the sea.'
  assert cm.satisfies(CONTINUATION, generation) is False
  assert cm.satisfies(CONTINUATION, generation, mode='strict') is None


def test_unknown_mode_is_an_error():
  with pytest.raises(ValueError, match='mode'):
    cm.satisfies(END, 'night', mode='lenient')


# --- aggregation --------------------------------------------------------------

PAIRS = [
    (END, 'I walked alone into the night.'),  # both pass
    (END, 'I walked alone into the night!'),  # strict only
    (SUBJECT, 'My heart is heavy.'),  # paper only
    (CONTINUATION, 'And the stars come down to the sea.'),  # paper fail, strict None
]


def test_score_paper_counts_every_item():
  result = cm.score(PAIRS)
  assert (result['successes'], result['scored'], result['unscored'], result['total']) == (2, 4, 0, 4)
  assert result['success_rate'] == 50.0
  assert result['per_type']['end'] == {
      'success_rate': 50.0, 'successes': 1, 'scored': 2, 'unscored': 0}
  assert result['per_type']['continuation']['success_rate'] == 0.0


def test_score_strict_excludes_unscored_items():
  result = cm.score(PAIRS, mode='strict')
  assert (result['successes'], result['scored'], result['unscored'], result['total']) == (2, 3, 1, 4)
  assert result['success_rate'] == pytest.approx(200 / 3)
  assert result['per_type']['end']['success_rate'] == 100.0
  assert math.isnan(result['per_type']['continuation']['success_rate'])


def test_seqio_metric_accepts_strings_bytes_and_dicts():
  targets = [END, END.encode(), {'instruction': SUBJECT}, {'inputs_pretokenized': CONTINUATION}]
  predictions = [g for _, g in PAIRS]
  assert cm.seqio_metric(targets, predictions) == {'success_rate': 50.0}
  assert cm.seqio_metric(targets, predictions, mode='strict')['success_rate'] == pytest.approx(200 / 3)
  with pytest.raises(KeyError, match='instruction'):
    cm.seqio_metric([{'targets': 'x'}], ['y'])
  with pytest.raises(ValueError, match='predictions'):
    cm.seqio_metric([END], [])

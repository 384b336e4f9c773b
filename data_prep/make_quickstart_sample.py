"""Generates the quickstart's bundled sample: CoPoet-style poetry instructions and a vocabulary.

The text is our own: instructions follow CoPoet's instruction format ("Write a poetic
sentence about 'sea'", rhyme, compositional, simile and haiku instructions), and each
target line is filled from templates in this file so that it visibly depends on the
quoted words (it contains the topic, ends in a true rhyme, ends in the asked word).
That templated, repetitive structure is deliberate: a tiny T5 must learn it within a
few CPU minutes in the quickstart.

Everything is deterministic: a seeded `random.Random` draws the examples, and
SentencePiece trains single-threaded on every sentence in a fixed order.

  python data_prep/make_quickstart_sample.py [--out_dir t5x_tasks/data/copoet_sample]

writes, in CoPoet's raw format (JSON Lines of {"translation": {"en1": instruction,
"en2": line}}), train.json and validation.json, three small test sets
test_sets/{ki_ke,ki_ue,compositional}.json (format samples: the KI-KE/KI-UE distinction
of the paper does not apply to this templated text), and spiece.model, trained on the
train and validation text. `make_splits()` and `make_test_sets()` return the same
examples without writing anything.
"""
import argparse
import io
import os
import random
from typing import Callable, Dict, List, Sequence

from t5x import fs_utils
from t5x_tasks import jsonl

SEED = 20240611
NUM_TRAIN = 2000
NUM_VALIDATION = 200
# Unigram training on this small corpus supports at most ~356 pieces; 320 leaves margin
# and keeps the frequent words single pieces.
VOCAB_SIZE = 320
DEFAULT_OUT_DIR = os.path.join(
    os.path.dirname(os.path.abspath(__file__)), os.pardir, 't5x_tasks', 'data',
    'copoet_sample')

Example = Dict[str, str]

# Word lists. Every noun works after "the" and as a sentence subject, so any
# template slot can take any noun without breaking the grammar.
TOPICS = (
    'sea', 'moon', 'rain', 'river', 'forest', 'winter', 'fire', 'stone', 'garden',
    'wind', 'autumn', 'morning', 'mountain', 'ocean', 'candle', 'meadow', 'city',
    'harbor', 'lantern', 'willow', 'orchard', 'desert', 'storm', 'silence',
    'memory', 'summer', 'thunder', 'valley', 'island', 'cloud', 'love', 'time',
    'hope', 'sorrow', 'childhood', 'home', 'spring', 'evening', 'frost', 'dust')
ADJECTIVES = (
    'silver', 'quiet', 'golden', 'gentle', 'restless', 'ancient', 'pale', 'tender',
    'lonely', 'distant', 'broken', 'wild', 'soft', 'hollow', 'bright', 'secret',
    'endless', 'weary', 'crimson', 'sleepy')
VERBS = (
    'sleeps', 'sings', 'drifts', 'burns', 'wanders', 'trembles', 'whispers',
    'glows', 'falls', 'dances', 'waits', 'shines', 'dreams', 'rests', 'weeps',
    'listens')
PLACES = (
    'hills', 'waves', 'trees', 'roofs', 'fields', 'stars', 'clouds', 'shadows',
    'bridges', 'gardens', 'rivers', 'valleys')
THINGS = (
    'bird', 'child', 'song', 'letter', 'prayer', 'ghost', 'flame', 'feather',
    'mirror', 'ribbon', 'lullaby', 'sailor', 'wolf', 'painted door', 'heartbeat',
    'kite')
TIMES = ('at dawn', 'at dusk', 'at midnight', 'in june', 'in the cold', 'at noon',
         'after rain', 'in the dark')

# Small groups of nouns that rhyme with each other (all nouns, for the same reason
# as above). A rhyme instruction names one word; the line ends in another.
RHYME_GROUPS = (
    ('light', 'night', 'flight', 'sight', 'height', 'kite'),
    ('day', 'way', 'bay', 'ray', 'clay', 'spray'),
    ('sea', 'tree', 'bee', 'key', 'melody'),
    ('rain', 'lane', 'chain', 'plain', 'grain', 'pane'),
    ('sky', 'eye', 'lullaby', 'butterfly', 'sigh'),
    ('moon', 'tune', 'noon', 'dune', 'lagoon', 'spoon'),
    ('heart', 'art', 'cart', 'start', 'part'),
    ('fire', 'desire', 'spire', 'wire', 'choir', 'lyre'),
    ('song', 'gong', 'throng', 'prong'),
    ('stone', 'bone', 'throne', 'cone', 'zone'),
    ('stream', 'dream', 'beam', 'gleam', 'seam'),
    ('snow', 'glow', 'crow', 'bow', 'doe'),
    ('gold', 'fold', 'cold', 'marigold', 'old'),
    ('breeze', 'trees', 'seas', 'keys', 'bees', 'knees'),
    ('rose', 'snows', 'crows', 'toes', 'prose'),
    ('shore', 'door', 'floor', 'oar', 'core', 'roar'),
    ('bell', 'well', 'shell', 'spell', 'dell'),
    ('star', 'jar', 'scar', 'guitar', 'bar'),
    ('hill', 'mill', 'sill', 'chill', 'daffodil'),
    ('wing', 'spring', 'ring', 'king', 'string'),
)
# Words a compositional instruction asks the line to end in.
END_WORDS = tuple(sorted({w for group in RHYME_GROUPS for w in group[:3]}))

# CoPoet's instructions begin with either verb.
OPENERS = ('Write', 'Generate')


def _article(word: str) -> str:
  """'an' before a vowel, else 'a' (enough for our word lists)."""
  return 'an' if word[0] in 'aeiou' else 'a'


def _about(rng: random.Random) -> Example:
  """"Write a poetic sentence about 'X'": the line has X as its subject."""
  topic = rng.choice(TOPICS)
  adj, verb, place = rng.choice(ADJECTIVES), rng.choice(VERBS), rng.choice(PLACES)
  target = rng.choice((
      f'the {topic} {verb} beneath the {adj} {place}.',
      f'o {adj} {topic}, you {verb[:-1]} above the {place}.',
      f'and the {topic} {verb} like a {adj} dream.',
  ))
  return {'inputs': f"{rng.choice(OPENERS)} a poetic sentence about '{topic}'",
          'targets': target}


def _rhyme(rng: random.Random) -> Example:
  """Rhyme instruction: the line ends in a different word of the same rhyme group."""
  group = rng.choice(RHYME_GROUPS)
  cue, end = rng.sample(group, 2)
  adj, verb, noun = rng.choice(ADJECTIVES), rng.choice(VERBS), rng.choice(TOPICS)
  target = rng.choice((
      f'the {adj} {noun} {verb} toward the {end}.',
      f'my {adj} heart {verb} beside the {end}.',
      f'and every {noun} {verb} for the {end}.',
  ))
  return {'inputs': (f'{rng.choice(OPENERS)} a poetic sentence that ends in a word '
                     f"which rhymes with '{cue}'"),
          'targets': target}


def _compositional(rng: random.Random) -> Example:
  """Contains-and-ends instruction: the line holds the first word and ends in the second."""
  word, end = rng.choice(TOPICS), rng.choice(END_WORDS)
  adj, verb = rng.choice(ADJECTIVES), rng.choice(VERBS)
  target = rng.choice((
      f'the {word} {verb} softly into the {adj} {end}.',
      f'a {adj} {word} {verb} until the {end}.',
      f'where the {word} {verb}, I find the {end}.',
  ))
  return {'inputs': (f"{rng.choice(OPENERS)} a poetic sentence that contains the word "
                     f"'{word}' and ending in '{end}'"),
          'targets': target}


def _simile(rng: random.Random) -> Example:
  """Simile instruction: "the X is like a ..." with X the quoted topic."""
  topic, thing = rng.choice(TOPICS), rng.choice(THINGS)
  adj, verb, place = rng.choice(ADJECTIVES), rng.choice(VERBS), rng.choice(PLACES)
  target = rng.choice((
      f'the {topic} is like {_article(adj)} {adj} {thing} among the {place}.',
      f'the {topic} {verb} like {_article(thing)} {thing} {rng.choice(TIMES)}.',
  ))
  return {'inputs': f"{rng.choice(OPENERS)} a simile about '{topic}'", 'targets': target}


def _haiku(rng: random.Random) -> Example:
  """Haiku instruction: three short phrases on one line, separated by ' / '."""
  topic, adj, verb = rng.choice(TOPICS), rng.choice(ADJECTIVES), rng.choice(VERBS)
  target = (f'{topic} {rng.choice(TIMES)} / the {adj} {rng.choice(PLACES)} / '
            f'a {rng.choice(THINGS)} {verb}')
  return {'inputs': f"{rng.choice(OPENERS)} a haiku about '{topic}'", 'targets': target}


# Weights follow CoPoet's emphasis on topic, rhyme and compositional instructions.
KINDS: Sequence[Callable[[random.Random], Example]] = (
    _about, _rhyme, _compositional, _simile, _haiku)
WEIGHTS = (3, 3, 3, 1, 1)


def make_splits(seed: int = SEED, num_train: int = NUM_TRAIN,
                num_validation: int = NUM_VALIDATION) -> Dict[str, List[Example]]:
  """Returns {'train': [...], 'validation': [...]} of {'inputs', 'targets'} dicts.

  Examples are distinct; no validation pair appears in train. Same seed, same output.
  """
  rng = random.Random(seed)
  seen = set()
  examples: List[Example] = []
  while len(examples) < num_train + num_validation:
    kind = rng.choices(KINDS, weights=WEIGHTS)[0]
    ex = kind(rng)
    key = (ex['inputs'], ex['targets'])
    if key not in seen:
      seen.add(key)
      examples.append(ex)
  return {'train': examples[:num_train], 'validation': examples[num_train:]}


NUM_TEST = 40
TEST_KINDS = {
    'ki_ke': (_about, _rhyme, _simile, _haiku),
    'ki_ue': (_about, _rhyme, _simile, _haiku),
    'compositional': (_compositional,),
}


def make_test_sets(seed: int = SEED) -> Dict[str, List[Example]]:
  """{'ki_ke' | 'ki_ue' | 'compositional': [...]}: NUM_TEST examples each, none of
  them in train or validation, drawn after the splits from their own seeded stream."""
  taken = {(ex['inputs'], ex['targets']) for exs in make_splits(seed).values() for ex in exs}
  sets = {}
  for offset, (name, kinds) in enumerate(TEST_KINDS.items(), 1):
    rng = random.Random(seed + offset)
    examples: List[Example] = []
    while len(examples) < NUM_TEST:
      ex = rng.choice(kinds)(rng)
      key = (ex['inputs'], ex['targets'])
      if key not in taken:
        taken.add(key)
        examples.append(ex)
    sets[name] = examples
  return sets


def _write_raw(path: str, examples: Sequence[Example]) -> None:
  """CoPoet's raw JSON Lines format, written atomically (t5x.fs_utils)."""
  records = ({'translation': {'en1': ex['inputs'], 'en2': ex['targets']}} for ex in examples)
  with fs_utils.atomic_file(path) as f:
    f.writelines(jsonl.dump_lines(records))


def train_vocabulary(sentences: Sequence[str], vocab_size: int = VOCAB_SIZE) -> bytes:
  """Trains a unigram SentencePiece model with T5's special ids; returns its bytes.

  Single-threaded, on all sentences in the given order, so the model is reproducible.
  """
  import sentencepiece as spm  # only needed to write files, not for make_splits()
  # Unigram seeds its candidate pieces from substrings followed by more than one
  # character. In templated text a word like "sentence" is always followed by a
  # space, so it never becomes a candidate and ends up split into fragments. Adding
  # each distinct word once as its own line gives it a second follower (end of line).
  words = sorted({word for sentence in sentences for word in sentence.split()})
  model = io.BytesIO()
  spm.SentencePieceTrainer.train(
      sentence_iterator=iter(list(sentences) + words), model_writer=model,
      model_type='unigram', vocab_size=vocab_size, character_coverage=1.0,
      pad_id=0, eos_id=1, unk_id=2, bos_id=-1,
      num_threads=1, input_sentence_size=0, shuffle_input_sentence=False,
      minloglevel=2)
  return model.getvalue()


def write_sample(out_dir: str = DEFAULT_OUT_DIR) -> None:
  """Writes train.json, validation.json, test_sets/ and spiece.model to `out_dir`."""
  splits = make_splits()  # fs_utils makes the folders as needed
  for split, examples in splits.items():
    _write_raw(os.path.join(out_dir, f'{split}.json'), examples)
  for name, examples in make_test_sets().items():
    _write_raw(os.path.join(out_dir, 'test_sets', f'{name}.json'), examples)
  sentences = [ex[key] for split in ('train', 'validation') for ex in splits[split]
               for key in ('inputs', 'targets')]
  fs_utils.write_atomic(os.path.join(out_dir, 'spiece.model'), train_vocabulary(sentences))


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
  parser.add_argument('--out_dir', default=DEFAULT_OUT_DIR)
  write_sample(os.path.normpath(parser.parse_args().out_dir))


if __name__ == '__main__':
  main()

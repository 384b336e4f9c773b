"""CoPoet training instructions derived from poem lines.

"Help me write a poem" (Chakrabarty, Padmakumar, He; EMNLP 2022) trains on
(instruction, poem line) pairs whose instruction is a template filled with
arguments taken from the target line itself, so every pair is correct by
construction. This module rebuilds that data from any poem corpus; it backs
`t5x prep copoet-instructions POEM_LINES OUT`.

Input: a UTF-8 text file, one poem line per line, poems separated by blank
lines. A haiku is one entry whose three lines are joined by " / ".
`read_poem_lines` keeps each poem break as an empty string (POEM_BREAK) so that
`generate` knows which lines follow each other within a poem.

Output: JSON Lines in CoPoet's raw format, `{"translation": {"en1":
<instruction>, "en2": <poem line>}}`, nothing else.

Instruction types (TYPES), the wording taken from the paper's test sets:

* subject:      "Write a poetic sentence about 'X'" (or "that contains the
                word", "that includes the word", "that speaks of"), X a
                content word of the line;
* subject_end:  the same followed by " and ending in 'Y'", Y the last word (a
                known instruction in the paper's KI-KE test set);
* end:          "... a poetic sentence ending in 'Y'";
* start:        "... a poetic sentence that starts with the word 'W'";
* rhyme:        "... a poetic sentence that ends in a word which rhymes with
                'R'", R a CMUdict rhyme (pronouncing.rhymes) of the last word,
                never the word itself or a homophone of it, and a word of the
                corpus (CMUdict alone offers mostly names and rare words);
                lines whose last word has no such rhyme get none;
* simile / metaphor: "... a simile about 'X'" / "... a metaphor about 'X'"
                (and the paper's other phrasings), only for lines the checker
                sees as comparisons: a `copoet_metrics.COMPARISON_PHRASES` entry
                as whole words. Phrases with "like" make a simile, the others
                ("is a", "is the", ...) a metaphor. "as ... as" similes are not
                recognised by the checker, so they get no simile instruction;
* haiku:        "... a haiku about 'X'" (and other phrasings), only for three-
                line " / " entries; haiku entries get no other type;
* continuation: "... a next sentence in a poetry given the previous sentence
                'PREV'" paired with the line after PREV in the same poem.

"Write" / "Generate" and the subject phrasing are drawn from random.Random(seed),
so the output is a pure function of (lines, seed). Arguments keep the line's
spelling, edge punctuation stripped ('Time', 'sheet'); words holding a quote
(o'er) are never arguments, since the checker reads a quoted argument up to the
next quote.

The guarantee, by construction: every candidate is scored with
`copoet_metrics.satisfies(instruction, line, mode='strict')` and kept only if
the result is True -- or, for the continuation type only, None. Continuations
are bare, as in the paper's training data (its KI-UE test set holds bare
"given the previous sentence" prompts as known instructions, while
"... and ending in 'X'" continuations appear only in the compositional set of
unseen combinations; generating those would leak the compositional test's
combinations into training). The strict scorer leaves a bare continuation
unscored (None), so None counts as not-a-failure for that type alone; a
continuation whose previous sentence confuses the parser (a stray
"' and ..." inside it) does not score None and is dropped.
"""
import functools
import os
import random
import re
import string
from typing import Callable, Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

import pronouncing

from t5x_tasks import copoet_metrics

# Separates poems in the list read_poem_lines returns and generate takes.
POEM_BREAK = ''

TYPES = ('subject', 'subject_end', 'end', 'start', 'rhyme', 'simile',
         'metaphor', 'haiku', 'continuation')

# Template pieces, as worded in the paper's test sets.
VERBS = ('Write', 'Generate')
SENTENCE_SUBJECTS = ('about', 'that contains the word', 'that includes the word',
                     'that speaks of')
SIMILE_SUBJECTS = ('about', 'for')
METAPHOR_SUBJECTS = ('about', 'that speaks of', 'that contains the word',
                     'that includes the word')
HAIKU_SUBJECTS = ('about', 'that speaks of', 'that contains the word',
                  'that includes the word')
HAIKU_SEPARATOR = ' / '

# The instruction builder of `t5x serve`'s writing page: one template per type, worded
# as above, '{}' where the argument goes; `argument` says what the writer fills in.
BUILDER_TYPES = (
    {'type': 'continuation', 'label': 'Next line',
     'template': "Write a next sentence in a poetry given the previous sentence '{}'",
     'argument': 'the previous line'},
    {'type': 'subject', 'label': 'Contains a word',
     'template': "Write a poetic sentence that contains the word '{}'", 'argument': 'a word'},
    {'type': 'about', 'label': 'About a topic',
     'template': "Write a poetic sentence about '{}'", 'argument': 'a topic'},
    {'type': 'rhyme', 'label': 'Rhymes with',
     'template': "Write a poetic sentence that ends in a word which rhymes with '{}'",
     'argument': 'a word to rhyme with'},
    {'type': 'end', 'label': 'Ends with',
     'template': "Write a poetic sentence ending in '{}'", 'argument': 'the last word'},
    {'type': 'start', 'label': 'Starts with',
     'template': "Write a poetic sentence that starts with the word '{}'",
     'argument': 'the first word'},
    {'type': 'metaphor', 'label': 'Metaphor', 'template': "Write a metaphor about '{}'",
     'argument': 'a topic'},
    {'type': 'simile', 'label': 'Simile', 'template': "Write a simile about '{}'",
     'argument': 'a topic'},
    {'type': 'haiku', 'label': 'Haiku', 'template': "Write a haiku about '{}'",
     'argument': 'a topic'},
)

# Function words (and poetry's archaic ones) never chosen as a subject.
STOP_WORDS = frozenset("""
a about above across after again against ah all almost along also although am
among an and another any anyone anything are around as at away back be became
because been before behind being below beneath beside besides between beyond
both but by can cannot could did do does doing done down during each either
else enough even ever every everyone everything few for from further had has
hath have having he her here hers herself him himself his how however if in
into is it its itself just least less let like many may me might mine more
most much must my myself near neither never no nobody none nor not nothing now
o of off oft oh on once one only onto or other others our ours ourselves out
over own per perhaps quite rather same shall she should since so some someone
something still such than that the thee their theirs them themselves then there
these they thine this those thou though through thus thy till to too toward
towards under until unto up upon us very was we were what whatever when where
whether which while who whom whose why will with within without would ye yet
you your yours yourself yourselves
""".split())

# Punctuation stripped from word edges, typographic marks included (the strict
# checker strips the same set before comparing words).
_PUNCT = string.punctuation + '\u2018\u2019\u201c\u201d\u2014\u2013\u2026'
_CONTENT_WORD = re.compile(r'[a-z]+(?:-[a-z]+)*')
_RHYME_WORD = re.compile(r'[a-z]+')
_POSSESSIVE = re.compile(r"['\u2019]s$", re.IGNORECASE)
_MIN_CONTENT_LENGTH = 3


class Pair(NamedTuple):
  """One generated (instruction, target line) pair and its instruction type."""
  kind: str
  instruction: str
  target: str


# ---------------------------------------------------------------------------
# Reading


def read_poem_lines(path) -> List[str]:
  """Poem lines of a UTF-8 text file, with POEM_BREAK ('') between poems.

  Runs of whitespace become one space (so " / " haiku separators are exact);
  runs of blank lines become one break, and none lead or trail. Raises
  ValueError naming the file and line for text that is not UTF-8.
  """
  lines: List[str] = []
  with open(path, 'rb') as f:
    for number, raw in enumerate(f, start=1):
      text = ' '.join(_decode(raw, path, number).split())
      if text:
        lines.append(text)
      elif lines and lines[-1] != POEM_BREAK:
        lines.append(POEM_BREAK)
  while lines and lines[-1] == POEM_BREAK:
    lines.pop()
  return lines


def _decode(raw: bytes, path, number: int) -> str:
  """One line's bytes as text; a BOM on the first line is dropped."""
  try:
    return raw.decode('utf-8-sig' if number == 1 else 'utf-8')
  except UnicodeDecodeError as err:
    raise ValueError(
        f'{os.fspath(path)}:{number}: not valid UTF-8 (byte {err.start + 1} of '
        f'the line: {err.reason}); re-save the file as UTF-8') from None


# ---------------------------------------------------------------------------
# Words of a line


def _tokens(text: str) -> List[str]:
  """Whitespace tokens with edge punctuation stripped, case kept, empties
  (a bare '/' or '--') dropped -- the words the strict checker compares."""
  tokens = (token.strip(_PUNCT) for token in text.split())
  return [token for token in tokens if token]


def _quotable(word: str) -> bool:
  """An argument must not hold a quote: the checker reads up to the next one."""
  return bool(word) and "'" not in word


def _content_words(text: str) -> List[str]:
  """Content words of `text` in order, first spelling of each, possessive 's
  dropped (the checker drops it too), stop words and short words skipped."""
  found: Dict[str, str] = {}
  for token in _tokens(text):
    word = _POSSESSIVE.sub('', token)
    key = word.lower()
    if (len(key) >= _MIN_CONTENT_LENGTH and _CONTENT_WORD.fullmatch(key)
        and key not in STOP_WORDS and key not in found):
      found[key] = word
  return list(found.values())


def _last_word(text: str) -> Optional[str]:
  """The line's last word, punctuation stripped; None if unusable."""
  tokens = _tokens(text)
  return tokens[-1] if tokens and _quotable(tokens[-1]) else None


def _first_word(text: str) -> Optional[str]:
  """The line's first word, punctuation stripped; None if unusable."""
  tokens = _tokens(text)
  return tokens[0] if tokens and _quotable(tokens[0]) else None


def _haiku_lines(text: str) -> Optional[List[str]]:
  """The three lines of a " / " haiku entry, or None for any other entry."""
  parts = [part.strip() for part in text.split(HAIKU_SEPARATOR)]
  return parts if len(parts) == 3 and all(_tokens(p) for p in parts) else None


# ---------------------------------------------------------------------------
# Comparisons (simile / metaphor)


def _phrase_at(words: Sequence[str], phrase: Sequence[str]) -> Optional[int]:
  """Index where `phrase` first occurs as a run of `words`, or None."""
  n = len(phrase)
  for i in range(len(words) - n + 1):
    if list(words[i:i + n]) == list(phrase):
      return i
  return None


def _comparison(text: str):
  """(form, index of the comparison, the phrase found) or None.

  A line is a comparison when the strict checker would see one: a
  COMPARISON_PHRASES entry as whole words. With "like" it is a simile,
  otherwise ("is a", "is the", ...) a metaphor.
  """
  words = [token.lower() for token in _tokens(text)]
  hits = []
  for phrase in copoet_metrics.COMPARISON_PHRASES:
    at = _phrase_at(words, phrase.split())
    if at is not None:
      hits.append((at, phrase))
  if not hits:
    return None
  form = 'simile' if any('like' in p.split() for _, p in hits) else 'metaphor'
  at, phrase = min(hits)
  return form, at, phrase


def _tenor(text: str, at: int, phrase: str, rng: random.Random) -> Optional[str]:
  """What the comparison is about, a content word of the line.

  Before "is ..." it is the copula's subject, the last content word ahead
  ("the moon is a coin" -> 'moon'); before a bare "like ..." the line's first
  content word ("A taxi drifts like a lantern" -> 'taxi'), as in the paper's
  simile items. With nothing ahead (a line opening "like a ...") one word is
  drawn from the line.
  """
  words = _content_words(text)
  if not words:
    return None
  ahead = _content_words(' '.join(_tokens(text)[:at]))
  # Draw either way, so one line's shape does not shift later lines' choices.
  drawn = rng.choice(words)
  if not ahead:
    return drawn
  return ahead[-1] if phrase.startswith('is ') else ahead[0]


# ---------------------------------------------------------------------------
# Rhymes


def _primary_rhyme(word: str) -> Optional[str]:
  """Rhyming part (last stressed vowel on) of the word's first CMUdict
  pronunciation, its usual one; None for a word CMUdict lacks."""
  phones = pronouncing.phones_for_word(word)
  return pronouncing.rhyming_part(phones[0]) if phones else None


def _rhyme_candidates(last: str, vocabulary: frozenset) -> List[str]:
  """Rhyme arguments for a line ending in `last`, best first.

  A candidate R must pass the strict check read the way it is written
  (`last` among pronouncing.rhymes(R)), differ from `last`, not be a
  homophone of it, and rhyme on both words' usual pronunciations -- CMUdict's
  variants otherwise make 'us' rhyme with 'chess' (as "U.S.") and 'knock'
  with 'walk'. R must be a word of the corpus itself: CMUdict is mostly names
  and rare words ('schilz', 'mgm'), while the paper's rhyme arguments are
  ordinary words, and a real corpus holds nearly every common rhyme. Content
  words come before stop words ('sand' before 'and').
  """
  target = _primary_rhyme(last) if _RHYME_WORD.fullmatch(last) else None
  if target is None:
    return []
  own = frozenset(pronouncing.phones_for_word(last))
  valid = [word for word in sorted(copoet_metrics.rhymes(last))
           if word != last and word in vocabulary and _RHYME_WORD.fullmatch(word)
           and _primary_rhyme(word) == target
           and not own & frozenset(pronouncing.phones_for_word(word))
           and last in copoet_metrics.rhymes(word)]
  content = [word for word in valid if word not in STOP_WORDS]
  return content or valid


# ---------------------------------------------------------------------------
# Instructions for one line


def _verb(rng: random.Random) -> str:
  """"Write" or "Generate", as the paper varies them."""
  return rng.choice(VERBS)


def _subject(text: str, rng: random.Random) -> Optional[Pair]:
  """"Write a poetic sentence about 'X'" (or another phrasing)."""
  verb, phrase, words = _verb(rng), rng.choice(SENTENCE_SUBJECTS), _content_words(text)
  if not words:
    return None
  return Pair('subject', f"{verb} a poetic sentence {phrase} '{rng.choice(words)}'", text)


def _subject_end(text: str, rng: random.Random) -> Optional[Pair]:
  """"Write a poetic sentence about 'X' and ending in 'Y'"."""
  verb, phrase, last = _verb(rng), rng.choice(SENTENCE_SUBJECTS), _last_word(text)
  if not last:
    return None
  # The subject is another word than the end word, as in the paper's data.
  words = [w for w in _content_words(text) if w.lower() != last.lower()]
  if not words:
    return None
  topic = rng.choice(words)
  return Pair('subject_end',
              f"{verb} a poetic sentence {phrase} '{topic}' and ending in '{last}'", text)


def _end(text: str, rng: random.Random) -> Optional[Pair]:
  """"Write a poetic sentence ending in 'Y'"."""
  verb, last = _verb(rng), _last_word(text)
  return Pair('end', f"{verb} a poetic sentence ending in '{last}'", text) if last else None


def _start(text: str, rng: random.Random) -> Optional[Pair]:
  """"Write a poetic sentence that starts with the word 'W'"."""
  verb, first = _verb(rng), _first_word(text)
  if not first:
    return None
  return Pair('start', f"{verb} a poetic sentence that starts with the word '{first}'",
              text)


def _rhyme(text: str, rng: random.Random,
           candidates: Callable[[str], List[str]]) -> Optional[Pair]:
  """"Write a poetic sentence that ends in a word which rhymes with 'R'"."""
  verb, last = _verb(rng), _last_word(text)
  options = candidates(last.lower()) if last else []
  if not options:
    return None
  return Pair('rhyme', f"{verb} a poetic sentence that ends in a word which rhymes "
              f"with '{rng.choice(options)}'", text)


def _figure(text: str, rng: random.Random) -> Optional[Pair]:
  """"Write a simile about 'X'" / "Write a metaphor about 'X'" for a line that
  is one; X is the comparison's tenor."""
  verb = _verb(rng)
  found = _comparison(text)
  if not found:
    return None
  form, at, found_phrase = found
  phrase = rng.choice(SIMILE_SUBJECTS if form == 'simile' else METAPHOR_SUBJECTS)
  topic = _tenor(text, at, found_phrase, rng)
  return Pair(form, f"{verb} a {form} {phrase} '{topic}'", text) if topic else None


def _haiku(text: str, rng: random.Random) -> Optional[Pair]:
  """"Write a haiku about 'X'" (or another phrasing) for a " / " entry."""
  verb, phrase, words = _verb(rng), rng.choice(HAIKU_SUBJECTS), _content_words(text)
  if not words:
    return None
  return Pair('haiku', f"{verb} a haiku {phrase} '{rng.choice(words)}'", text)


def _continuation(previous: str, text: str, rng: random.Random) -> Pair:
  """"Write a next sentence in a poetry given the previous sentence 'PREV'"."""
  return Pair('continuation', f"{_verb(rng)} a next sentence in a poetry given the "
              f"previous sentence '{previous}'", text)


def _line_candidates(text: str, rng: random.Random,
                     candidates: Callable[[str], List[str]]) -> List[Pair]:
  """Every instruction type that applies to one entry, in TYPES order."""
  if _haiku_lines(text):
    found = [_haiku(text, rng)]
  else:
    found = [_subject(text, rng), _subject_end(text, rng), _end(text, rng),
             _start(text, rng), _rhyme(text, rng, candidates), _figure(text, rng)]
  return [pair for pair in found if pair]


# ---------------------------------------------------------------------------
# The generator


def passes(pair: Pair) -> bool:
  """The strict checker's verdict on a pair: True, or None for a continuation
  (a bare continuation is unscored and counts as not-a-failure)."""
  result = copoet_metrics.satisfies(pair.instruction, pair.target, mode='strict')
  return result is None if pair.kind == 'continuation' else result is True


def _poems(lines: Sequence[str]) -> List[List[str]]:
  """Lines grouped into poems at POEM_BREAK (blank) entries."""
  poems: List[List[str]] = [[]]
  for line in lines:
    text = ' '.join(line.split())
    if text:
      poems[-1].append(text)
    elif poems[-1]:
      poems.append([])
  return [poem for poem in poems if poem]


def _vocabulary(poems: Sequence[Sequence[str]]) -> frozenset:
  """Lower-cased words of the corpus (rhyme arguments prefer them)."""
  return frozenset(token.lower() for poem in poems for line in poem
                   for token in _tokens(line))


def generate_pairs(lines: Sequence[str], seed: int = 0) -> List[Pair]:
  """Typed (instruction, line) pairs for a corpus; see the module docstring.

  `lines` as read_poem_lines returns them: blank entries separate poems, so a
  list without blanks is one poem. Deterministic for a seed; every pair kept
  passes `passes` (the strict checker), candidates that fail are dropped.
  """
  rng = random.Random(seed)
  poems = _poems(lines)
  candidates = functools.lru_cache(maxsize=None)(
      functools.partial(_rhyme_candidates, vocabulary=_vocabulary(poems)))
  pairs: List[Pair] = []
  for poem in poems:
    for i, text in enumerate(poem):
      found = _line_candidates(text, rng, candidates)
      previous = poem[i - 1] if i else None
      if previous and not _haiku_lines(previous) and not _haiku_lines(text):
        found.append(_continuation(previous, text, rng))
      pairs.extend(pair for pair in found if passes(pair))
  return pairs


def record(pair: Pair) -> dict:
  """A pair in CoPoet's raw format."""
  return {'translation': {'en1': pair.instruction, 'en2': pair.target}}


def generate(lines: Sequence[str], seed: int = 0) -> List[dict]:
  """CoPoet raw records `{"translation": {"en1": instruction, "en2": line}}`.

  Every record passes `copoet_metrics.satisfies(en1, en2, mode='strict')`:
  True, or None for bare next-sentence (continuation) records, which the
  strict scorer leaves unscored -- those count as not-a-failure.
  """
  return [record(pair) for pair in generate_pairs(lines, seed)]


def count_types(pairs: Iterable[Pair]) -> Dict[str, int]:
  """How many pairs of each type, every type in TYPES listed."""
  counts = {kind: 0 for kind in TYPES}
  for pair in pairs:
    counts[pair.kind] += 1
  return counts


def prep(poem_lines_path, seed: int = 0) -> Tuple[List[dict], Dict[str, int]]:
  """Reads poem lines and generates instruction records ("t5x prep copoet-instructions").

  Returns (records `{"translation": {"en1", "en2"}}` in order, for JSON Lines; the number
  of records per instruction type, every type in TYPES). The caller writes the records
  (t5x_cli: `t5x.fs_utils.atomic_file` + `jsonl.dump_lines`).
  Raises ValueError when the file holds no poem lines.
  """
  lines = read_poem_lines(poem_lines_path)
  if not lines:
    raise ValueError(f'{os.fspath(poem_lines_path)}: no poem lines found; expected a '
                     'UTF-8 text file with one poem line per line')
  pairs = generate_pairs(lines, seed)
  return [record(pair) for pair in pairs], count_types(pairs)

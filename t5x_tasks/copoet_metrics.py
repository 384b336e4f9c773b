"""CoPoet success rate: does a generated line satisfy its poetry instruction?

"Help me write a poem: Instruction Tuning as a Vehicle for Collaborative Poetry
Writing" (Chakrabarty, Padmakumar, He; EMNLP 2022) reports, for each test set
(KI-KE, KI-UE, compositional), the percentage of generations that satisfy their
instruction. This module reproduces that scorer (mode='paper') exactly, and
offers a corrected scorer (mode='strict').

Paper mode: one check per item
------------------------------
The instruction's type is picked by the first keyword it contains (a
case-sensitive substring test), in this order:

  'rhymes with' > 'haiku' > 'simile' > 'metaphor' > 'ending in' > 'starts with'
  > anything else ('subject'; 'continuation' when it asks for a next sentence).

Only that type's check runs, so a compositional instruction is judged on one of
its constraints. The checks:

* rhyme: the word quoted after "rhymes with" is looked up with
  `pronouncing.rhymes`; the item passes if the generation's last whitespace
  token, *unstripped and case-sensitive*, is a substring of some rhyme or some
  rhyme is a substring of it ("will." passes for 'kill' because "ill" is a
  rhyme; a one-letter rhyme such as "a" makes almost any line pass).
* haiku: every quoted argument is contained (case-insensitive substring) and
  the syllapy syllable total over whitespace tokens, skipping bare '/', lies in
  15..19. Line structure is not looked at.
* simile / metaphor: every quoted argument is contained and the raw generation
  contains one of COMPARISON_PHRASES as a case-sensitive substring ("Like a"
  at the start of a line does not count; "unlike any" does, via "like a").
* end: the argument after "ending in" is contained, and equals (ignoring case)
  the last token once every '.' and ',' is deleted -- other punctuation
  ('!', ';', '"', ...) stays, so "night!" does not end in 'night'; a multi-word
  argument can never equal one token.
* start: the argument after "starts with the word" equals the first token,
  with the same '.'/',' deletion.
* subject / continuation: every argument quoted after "about", "word",
  "ending in" or "contains" is contained (substring: 'art' is in 'heart').
* An item whose check finds no argument fails but still counts in the
  denominator: a missing closing quote ("rhymes with 'apology"), a bare
  continuation ("given the previous sentence '...'"), "speaks of 'sand'".

Arguments are the texts between a keyword's opening quote and the next quote
(regex `KEY '([^']*)'`), so stray trailing quotes (`'yellow''`) are harmless but
an unclosed quote loses the argument. The paper dedupes them with `set()` and
uses element 0 for rhyme/end/start; no test item has two distinct arguments
there, so first-in-order is equivalent and deterministic.

Strict mode: every constraint, words compared as words
------------------------------------------------------
* Words are lower-cased and stripped of leading/trailing punctuation (ASCII and
  typographic quotes/dashes) before any comparison, so "night." and "Night!"
  both end in 'night'; tokens that are only punctuation ('/', '--') vanish.
* Contained arguments are matched as whole words (a contiguous run of tokens,
  a possessive 's dropped), not as substrings: 'art' is not in "heart", but
  'house' is in "the house's door". Plurals and other inflections do not count.
* Every constraint of the instruction is checked: contained words (about /
  word / contains / includes / speaks of / for ...), end words/phrases, start
  words/phrases ("starts with the word", "starting in"), end rhymes ("ending in
  a word which rhymes with 'Z'") and start rhymes ("starts with a word that
  rhymes with 'Z'"), plus the form (haiku / simile / metaphor).
* Rhyme: the stripped last (or first) word must be one of
  `pronouncing.rhymes(target)` exactly -- no substring leniency, and a word
  does not rhyme with itself.
* An unclosed final quote still yields its argument ("rhymes with 'apology").
* Haiku: three lines (split on ' / ' or newlines) of 5, 7 and 5 syllables.
* Simile / metaphor: a COMPARISON_PHRASES entry as whole words, any case.
* Continuation: the quoted previous sentence is context, not an argument. A
  continuation with no further constraint returns None (unscored) and is left
  out of the rate; one with a constraint ("... and ending in 'air'") is scored
  on it.
"""
import functools
import re
import string
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import pronouncing
import syllapy

MODES = ('paper', 'strict')

# The paper's keyword precedence: (substring of the instruction, type).
PRECEDENCE = (
    ('rhymes with', 'rhyme'),
    ('haiku', 'haiku'),
    ('simile', 'simile'),
    ('metaphor', 'metaphor'),
    ('ending in', 'end'),
    ('starts with', 'start'),
)
TYPES = tuple(t for _, t in PRECEDENCE) + ('subject', 'continuation')

# The paper's fixed comparison phrases for similes and metaphors (the same list
# for both; "as ... as" similes are not recognised).
COMPARISON_PHRASES = ('is a', 'is like a', 'is an', 'is like an', 'is the',
                      'is like the', 'like a', 'like the', 'is like')

# The paper's haiku window: a total syllable count near 17.
HAIKU_TOTAL_RANGE = (15, 19)
HAIKU_LINES = (5, 7, 5)

# Which keyword's quoted argument each paper check reads. None = every quoted
# text in the instruction.
_PAPER_KEYS = {
    'rhyme': ('rhymes with',),
    'haiku': None,
    'simile': None,
    'metaphor': None,
    'end': ('ending in',),
    'start': ('starts with the word',),
    'subject': ('about', 'word', 'ending in', 'contains'),
    'continuation': ('about', 'word', 'ending in', 'contains'),
}

# Strict constraints, tried in order; a quote claimed by an earlier pattern is
# not re-read by a later one ("starts with the word 'X'" is a start, not a
# contained "word 'X'"). The argument runs to the next quote or the end of the
# instruction, so an unclosed final quote still counts.
_ARG = r"\s*'([^']*)"
_STRICT_PATTERNS = (
    ('rhyme_start',
     r"\bstart\w*\s+with\s+a\s+word\s+(?:which|that)\s+rhymes\s+with" + _ARG),
    ('rhyme_end', r"\brhymes?\s+with" + _ARG),
    ('end', r"\bend\w*\s+in" + _ARG),
    ('start', r"\bstart\w*\s+(?:with|in)(?:\s+the\s+word)?" + _ARG),
    ('contains',
     r"\b(?:about|word|contains?|containing|includes?|including|of|for)" + _ARG),
)
# A continuation's previous sentence: quoted, may hold apostrophes ("bull's"),
# and ends at a quote followed by " and ..." or the end of the instruction.
_PREVIOUS_SENTENCE = re.compile(
    r"(?:previous|given)\s+(?:the\s+)?(?:sentence|line)\s*'.*?'(?=\s+and\s|\s*$)",
    re.IGNORECASE)
_CONTINUATION_KEYS = ('next sentence', 'previous sentence', 'next line')

# Punctuation stripped from word edges in strict mode, typographic marks included.
_PUNCT = string.punctuation + '\u2018\u2019\u201c\u201d\u2014\u2013\u2026'


# ---------------------------------------------------------------------------
# Instruction parsing


def classify(instruction: str) -> str:
  """The instruction's type under the paper's keyword precedence.

  One of TYPES: 'rhyme', 'haiku', 'simile', 'metaphor', 'end', 'start', or, when
  no keyword matches, 'continuation' (a next-sentence prompt) or 'subject'.
  The paper scores 'continuation' exactly like 'subject'; it is split out so
  per-type rates show it and strict mode can leave it unscored.
  """
  for key, kind in PRECEDENCE:
    if key in instruction:  # case-sensitive, as in the paper
      return kind
  lowered = instruction.lower()
  if any(key in lowered for key in _CONTINUATION_KEYS):
    return 'continuation'
  return 'subject'


def _unique(items: Iterable[str]) -> List[str]:
  """Items without repeats, first occurrence first."""
  return list(dict.fromkeys(items))


def arguments(instruction: str) -> List[str]:
  """The quoted arguments the paper's check for this instruction reads.

  Each keyword's argument is the text between the quote that follows it and the
  next quote (`KEY '([^']*)'`); haiku/simile/metaphor read every quoted text.
  An unclosed quote yields nothing. Repeats are dropped, first one first.
  """
  keys = _PAPER_KEYS[classify(instruction)]
  if keys is None:
    return _unique(re.findall(r"'([^']*)'", instruction))
  found = []
  for key in keys:  # one findall per keyword, concatenated, as in the paper
    found += re.findall(key + r" '([^']*)'", instruction)
  return _unique(found)


def constraints(instruction: str) -> List[Tuple[str, str]]:
  """Every constraint strict mode checks, as (kind, argument) pairs.

  Kinds: 'contains', 'end', 'start', 'rhyme_end', 'rhyme_start' (argument = the
  quoted text) and 'haiku', 'simile', 'metaphor' (argument = ''). A
  continuation's previous sentence is removed first: it is context, not a
  constraint.
  """
  text = _PREVIOUS_SENTENCE.sub(' ', instruction)
  found, claimed = [], set()
  for kind, pattern in _STRICT_PATTERNS:
    for match in re.finditer(pattern, text, re.IGNORECASE):
      arg = match.group(1).strip()
      if match.start(1) in claimed or not _words(arg):
        continue
      claimed.add(match.start(1))
      found.append((kind, arg))
  lowered = text.lower()
  for form in ('haiku', 'simile', 'metaphor'):
    if form in lowered:
      found.append((form, ''))
  return _unique(found)


# ---------------------------------------------------------------------------
# Word-level helpers


@functools.lru_cache(maxsize=None)
def rhymes(word: str) -> frozenset:
  """CMUdict rhymes of `word` (pronouncing.rhymes), cached.

  Called with the argument as written: pronouncing drops only the exact input
  from its result, so rhymes('Kill') keeps 'kill' -- a paper quirk kept in
  paper mode.
  """
  return frozenset(pronouncing.rhymes(word))


def _words(text: str) -> List[str]:
  """Strict tokens: lower-cased, edge punctuation stripped, empty ones dropped."""
  tokens = (token.strip(_PUNCT) for token in text.lower().split())
  return [token for token in tokens if token]


def _paper_tokens(generation: str) -> List[str]:
  """Paper tokens: every '.' and ',' deleted, then split on whitespace."""
  return generation.replace('.', '').replace(',', '').split()


def _contains_all(args: Sequence[str], generation: str) -> bool:
  """Paper containment: each argument is a case-insensitive substring."""
  lowered = generation.lower()
  return all(arg.lower() in lowered for arg in args)


def _drop_possessive(word: str) -> str:
  """Drops a possessive 's: "heart's" still mentions 'heart'."""
  return re.sub(r"['\u2019]s$", '', word)


def _has_phrase(words: Sequence[str], phrase: Sequence[str]) -> bool:
  """True if `phrase` occurs as a contiguous run of `words`."""
  n = len(phrase)
  return any(list(words[i:i + n]) == list(phrase)
             for i in range(len(words) - n + 1))


def _syllables(words: Iterable[str]) -> int:
  """syllapy's total over words (syllapy strips punctuation itself)."""
  return sum(syllapy.count(word) for word in words)


def _haiku_lines(generation: str) -> List[str]:
  """Lines of a haiku written on one line (' / ') or on several."""
  lines = re.split(r'\s/\s|\n', generation)
  return [line for line in lines if _words(line)]


# ---------------------------------------------------------------------------
# Paper checks


def _paper_rhyme(target: str, generation: str) -> bool:
  """Two-way substring test between the raw last token and each rhyme."""
  last = generation.split()[-1]
  return any(last in word or word in last for word in rhymes(target))


def _paper_satisfies(instruction: str, generation: str) -> bool:
  """The paper's single check for the instruction's type."""
  kind, args = classify(instruction), arguments(instruction)
  if not args or not generation.split():
    return False
  if kind == 'rhyme':
    return _paper_rhyme(args[0], generation)
  if kind == 'haiku':
    count = _syllables(w for w in generation.split() if w != '/')
    low, high = HAIKU_TOTAL_RANGE
    return _contains_all(args, generation) and low <= count <= high
  if kind in ('simile', 'metaphor'):
    has_comparison = any(p in generation for p in COMPARISON_PHRASES)
    return _contains_all(args, generation) and has_comparison
  tokens = _paper_tokens(generation)
  if not tokens:  # a line of only '.' and ',' (the paper would crash here)
    return False
  if kind == 'end':
    return _contains_all(args, generation) and args[0].lower() == tokens[-1].lower()
  if kind == 'start':
    return _contains_all(args, generation) and args[0].lower() == tokens[0].lower()
  return _contains_all(args, generation)  # subject, continuation


# ---------------------------------------------------------------------------
# Strict checks


def _strict_check(kind: str, arg: str, generation: str) -> bool:
  """One strict constraint against the generation."""
  words, target = _words(generation), _words(arg)
  if not words:
    return False
  if kind == 'contains':
    return _has_phrase([_drop_possessive(w) for w in words],
                       [_drop_possessive(w) for w in target])
  if kind == 'end':
    return words[-len(target):] == target
  if kind == 'start':
    return words[:len(target)] == target
  if kind == 'rhyme_end':
    return words[-1] in rhymes(target[-1])
  if kind == 'rhyme_start':
    return words[0] in rhymes(target[-1])
  if kind == 'haiku':
    counts = tuple(_syllables(_words(line)) for line in _haiku_lines(generation))
    return counts == HAIKU_LINES
  if kind in ('simile', 'metaphor'):
    return any(_has_phrase(words, p.split()) for p in COMPARISON_PHRASES)
  raise ValueError(f'unknown strict constraint kind {kind!r}')


def _strict_satisfies(instruction: str, generation: str) -> Optional[bool]:
  """All constraints hold; None for a continuation that asks for nothing more."""
  found = constraints(instruction)
  if not found:
    return None if classify(instruction) == 'continuation' else False
  return all(_strict_check(kind, arg, generation) for kind, arg in found)


# ---------------------------------------------------------------------------
# Public scoring


def satisfies(instruction: str, generation: str,
              mode: str = 'paper') -> Optional[bool]:
  """Whether `generation` satisfies `instruction`.

  mode='paper' reproduces the paper (always a bool). mode='strict' checks every
  constraint and returns None for a continuation item with nothing to check.
  """
  if mode == 'paper':
    return _paper_satisfies(instruction, generation)
  if mode == 'strict':
    return _strict_satisfies(instruction, generation)
  raise ValueError(f'mode must be one of {MODES}, got {mode!r}')


def _rate(successes: int, scored: int) -> float:
  """Percentage; NaN when nothing was scored."""
  return 100.0 * successes / scored if scored else float('nan')


def score(pairs: Iterable[Tuple[str, str]], mode: str = 'paper') -> Dict[str, Any]:
  """Success rate over (instruction, generation) pairs.

  Returns {'success_rate': percent over scored items, 'successes', 'scored',
  'unscored' (strict-mode None items, excluded from the rate), 'total',
  'per_type': {type: {'success_rate', 'successes', 'scored', 'unscored'}}},
  with types from `classify`. In paper mode every item is scored, including
  those the paper fails for lack of an argument.
  """
  per_type: Dict[str, Dict[str, int]] = {}
  for instruction, generation in pairs:
    result = satisfies(instruction, generation, mode)
    counts = per_type.setdefault(
        classify(instruction), {'successes': 0, 'scored': 0, 'unscored': 0})
    if result is None:
      counts['unscored'] += 1
    else:
      counts['scored'] += 1
      counts['successes'] += int(result)
  totals = {key: sum(c[key] for c in per_type.values())
            for key in ('successes', 'scored', 'unscored')}
  return {
      'success_rate': _rate(totals['successes'], totals['scored']),
      **totals,
      'total': totals['scored'] + totals['unscored'],
      'per_type': {
          kind: {'success_rate': _rate(c['successes'], c['scored']), **c}
          for kind, c in sorted(per_type.items())
      },
  }


def _text(value: Any) -> str:
  """A str from str or bytes (SeqIO hands over bytes for string features)."""
  return value.decode('utf-8') if isinstance(value, bytes) else str(value)


def _instruction(target: Any) -> str:
  """The instruction held by a SeqIO target: the string itself, or a mapping's
  'instruction' (or, failing that, 'inputs_pretokenized') entry."""
  if isinstance(target, dict):
    for key in ('instruction', 'inputs_pretokenized'):
      if key in target:
        return _text(target[key])
    raise KeyError(
        f"copoet target dict has keys {sorted(target)}; it needs 'instruction' "
        "(or 'inputs_pretokenized') holding the instruction text")
  return _text(target)


def seqio_metric(targets: Sequence[Any], predictions: Sequence[Any],
                 mode: str = 'paper') -> Dict[str, float]:
  """SeqIO metric_fn: {'success_rate': percent} in the paper's scoring.

  `targets` must hold the *instructions*, not reference lines: either the
  instruction string (bytes allowed), or a dict with an 'instruction' or
  'inputs_pretokenized' key -- e.g. from a postprocess_fn that returns
  `{'instruction': example['inputs_pretokenized']}` when is_target=True.
  `predictions` are the generated lines. Use functools.partial(seqio_metric,
  mode='strict') for the strict rate.
  """
  if len(targets) != len(predictions):
    raise ValueError(f'{len(targets)} targets but {len(predictions)} predictions')
  pairs = [(_instruction(t), _text(p)) for t, p in zip(targets, predictions)]
  return {'success_rate': score(pairs, mode)['success_rate']}

"""Deep Haiku phonetics: words and lines, CMUdict syllable counts, and the phoneme format.

Syllables: the vowel phones of CMUdict's first pronunciation (pronouncing.phones_for_word),
syllapy for unknown words; punctuation stripped; hyphenated words count as their parts.

Phoneme format (`phonemize()`), following the description of the `statworx/haiku` column
`text_phonemes` (we could not inspect its rows here): lowercase ARPAbet phones without stress
digits; the phones of one syllable written together; syllables joined by "|"; words by
spaces; lines by " / ". "an old silent pond" -> "aen owld say|lahnt paand".
Syllable rule: one syllable per vowel phone; a lone consonant between two vowels starts the
next syllable; in a longer cluster the first consonant closes the previous syllable and the
rest start the next; consonants before the first vowel / after the last belong to the first /
last syllable.
Fallback for words CMUdict lacks: the letters themselves are the phones. They are split by
the same rule with each run of vowel letters (a e i o u y) as one nucleus, then adjacent
pieces are merged from the end (silent e), or the longest piece halved, until there are
syllapy.count(word) pieces: "blorptastic" -> "blor|ptas|tic". Tokens without letters
(digits) are dropped from the phonemes and count 0 syllables: write numbers as words.
"""
import re
from typing import Callable, List, Optional, Sequence

import pronouncing
import syllapy

LINE_SEP = ' / '
VOWEL_PHONES = frozenset('aa ae ah ao aw ay eh er ey ih iy ow oy uh uw'.split())
VOWEL_LETTERS = 'aeiouy'


def words(text: str) -> List[str]:
  """Lowercase words of `text`: punctuation stripped, in-word apostrophes kept, hyphens split.

  Args:
    text: str, any text (one line or several).
  Returns:
    list[str], e.g. "Snow-covered, isn't it?" -> ['snow', 'covered', "isn't", 'it'].
  """
  text = text.lower().replace('\u2019', "'")
  return re.findall(r"[a-z0-9]+(?:'[a-z0-9]+)*", text)


def split_lines(haiku: str) -> List[str]:
  """The non-empty lines of `haiku`, split on " / " or newlines.

  Args:
    haiku: str, e.g. 'an old silent pond / a frog jumps into the pond / splash silence again'.
  Returns:
    list[str], stripped lines.
  """
  parts = re.split(r'\s+/\s+|\s*\n\s*', haiku.strip())
  return [p.strip() for p in parts if p.strip()]


def _cmu_phones(word: str) -> Optional[List[str]]:
  """Lowercase, stress-free phones of CMUdict's first pronunciation of `word`, or None."""
  pronunciations = pronouncing.phones_for_word(word)
  if not pronunciations:
    return None
  return [re.sub(r'\d', '', p).lower() for p in pronunciations[0].split()]


def word_syllable_count(word: str) -> int:
  """Syllables of one word: vowel phones of CMUdict's first pronunciation, else syllapy.

  Args:
    word: str, a lowercase word as `words()` returns it.
  Returns:
    int; 0 for tokens without letters (digits).
  """
  phones = _cmu_phones(word)
  if phones is not None:
    return sum(p in VOWEL_PHONES for p in phones)
  if not re.search('[a-z]', word):
    return 0
  return max(1, syllapy.count(word))


def syllable_counts(haiku: str) -> List[int]:
  """Syllables per line of a haiku in letters (lines split on " / " or newlines).

  Args:
    haiku: str, e.g. 'an old silent pond / a frog jumps into the pond / splash silence again'.
  Returns:
    list[int], one count per line: [5, 7, 5] for the example.
  """
  return [sum(word_syllable_count(w) for w in words(line)) for line in split_lines(haiku)]


def phoneme_syllable_counts(haiku_phonemes: str) -> List[int]:
  """Syllables per line of a haiku in the phoneme format: each word has its "|" count + 1.

  Args:
    haiku_phonemes: str, e.g. 'aen owld say|lahnt paand / ...'.
  Returns:
    list[int], one count per line.
  """
  return [sum(w.count('|') + 1 for w in line.split() if re.search('[a-z]', w))
          for line in split_lines(haiku_phonemes)]


def _syllabify(units: Sequence[str], is_vowel: Callable[[str], bool]) -> List[List[str]]:
  """Groups `units` into syllables around their vowel units (the rule in the module doc)."""
  nuclei = [i for i, unit in enumerate(units) if is_vowel(unit)]
  if not nuclei:
    return [list(units)] if units else []
  starts = [0]
  for prev, nxt in zip(nuclei, nuclei[1:]):
    between = nxt - prev - 1
    # No consonant: split between the vowels; one: it starts the next syllable;
    # more: the first closes the previous syllable, the rest start the next.
    starts.append(nxt if between == 0 else nxt - 1 if between == 1 else prev + 2)
  ends = starts[1:] + [len(units)]
  return [list(units[s:e]) for s, e in zip(starts, ends)]


def _fit_pieces(pieces: List[str], count: int) -> List[str]:
  """Merges the last two pieces, or halves the longest, until there are `count` pieces."""
  pieces = list(pieces)
  while len(pieces) > count:
    pieces[-2:] = [pieces[-2] + pieces[-1]]
  while len(pieces) < count:
    longest = max(range(len(pieces)), key=lambda i: len(pieces[i]))
    piece = pieces[longest]
    if len(piece) < 2:
      break  # nothing left to halve: fewer letters than syllapy's count
    half = len(piece) // 2
    pieces[longest:longest + 1] = [piece[:half], piece[half:]]
  return pieces


def _letter_syllables(word: str) -> List[str]:
  """Pseudo-syllables of a word CMUdict lacks: its letters, split as the module doc says."""
  letters = re.sub('[^a-z]', '', word)
  if not letters:
    return []
  units = re.findall(f'[{VOWEL_LETTERS}]+|[^{VOWEL_LETTERS}]', letters)
  pieces = [''.join(s) for s in _syllabify(units, lambda u: u[0] in VOWEL_LETTERS)]
  return _fit_pieces(pieces, max(1, syllapy.count(word)))


def word_phonemes(word: str) -> str:
  """One word in the phoneme format: syllables of concatenated phones joined by "|".

  Args:
    word: str, a lowercase word as `words()` returns it.
  Returns:
    str, e.g. 'silent' -> 'say|lahnt'; '' for tokens without letters.
  """
  phones = _cmu_phones(word)
  if phones is None:
    return '|'.join(_letter_syllables(word))
  return '|'.join(''.join(s) for s in _syllabify(phones, lambda p: p in VOWEL_PHONES))


def phonemize(text: str) -> str:
  """Text (one or more lines) in the phoneme format: words by spaces, lines by " / ".

  Args:
    text: str, e.g. 'an old silent pond / a frog jumps into the pond'.
  Returns:
    str, e.g. 'aen owld say|lahnt paand / ah fraag jhahmps ihn|tuw dhah paand'.
  """
  lines = []
  for line in split_lines(text):
    lines.append(' '.join(p for p in (word_phonemes(w) for w in words(line)) if p))
  return LINE_SEP.join(lines)

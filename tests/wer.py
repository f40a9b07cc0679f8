"""Word error rate with Whisper-style English text normalisation.

A compact cousin of openai-whisper's `EnglishTextNormalizer`: both sides of a
comparison go through `normalize_text`, so what differs is what was said, not
how it was written ("Press 3!" and "press three" compare equal). Numbers are
spelt out as words (the direction that needs no parsing of word sequences),
common contractions are expanded, bracketed annotations and fillers dropped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

# Hesitations that transcripts write inconsistently or not at all.
FILLER_WORDS = frozenset({"um", "umm", "uh", "uhm", "er", "erm", "ah", "eh", "hmm", "hm", "mm", "mmm", "mhm"})

_ONES = (
    *("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    *("ten", "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen", "nineteen"),
)
_TENS = ("", "", "twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_SCALES = ((10**9, "billion"), (10**6, "million"), (10**3, "thousand"))
_IRREGULAR_ORDINALS = {
    "one": "first",
    "two": "second",
    "three": "third",
    "five": "fifth",
    "eight": "eighth",
    "nine": "ninth",
    "twelve": "twelfth",
}
# Longest first, so "won't" is not read as "wo" + "n't".
_CONTRACTIONS = (
    (r"\bwon't\b", "will not"),
    (r"\bcan't\b", "can not"),
    (r"\bcannot\b", "can not"),
    (r"\bshan't\b", "shall not"),
    (r"\bain't\b", "is not"),
    (r"\blet's\b", "let us"),
    (r"\by'all\b", "you all"),
    (r"\b(it|that|there|here|what|where|who|he|she)'s\b", r"\1 is"),
    (r"n't\b", " not"),
    (r"'re\b", " are"),
    (r"'ve\b", " have"),
    (r"'ll\b", " will"),
    (r"'m\b", " am"),
    (r"'d\b", " would"),
)
_ABBREVIATIONS = (
    (r"\bmr\.", "mister "),
    (r"\bmrs\.", "missus "),
    (r"\bdr\.", "doctor "),
    (r"\bvs\.?(?=\s)", "versus"),
    (r"&", " and "),
    (r"%", " percent "),
)


def number_to_words(number: int) -> str:
    """Spell out a non-negative integer: 1205 -> "one thousand two hundred five".

    Numbers of a trillion and more are read digit by digit.
    """
    if number < 0:
        raise ValueError(f"negative number: {number}")
    if number >= 10**12:
        return " ".join(_ONES[int(digit)] for digit in str(number))
    if number < 20:
        return _ONES[number]
    if number < 100:
        tens, ones = divmod(number, 10)
        return _TENS[tens] + (f" {_ONES[ones]}" if ones else "")
    if number < 1000:
        hundreds, rest = divmod(number, 100)
        return f"{_ONES[hundreds]} hundred" + (f" {number_to_words(rest)}" if rest else "")
    for scale, name in _SCALES:
        if number >= scale:
            head, rest = divmod(number, scale)
            return f"{number_to_words(head)} {name}" + (f" {number_to_words(rest)}" if rest else "")
    raise AssertionError("unreachable")


def ordinal_to_words(number: int) -> str:
    """Spell out an ordinal: 21 -> "twenty first", 40 -> "fortieth"."""
    *head, last = number_to_words(number).split()
    if last in _IRREGULAR_ORDINALS:
        last = _IRREGULAR_ORDINALS[last]
    elif last.endswith("y"):
        last = last[:-1] + "ieth"
    else:
        last += "th"
    return " ".join([*head, last])


def _spell_numbers(text: str) -> str:
    text = re.sub(r"(?<=\d),(?=\d{3}\b)", "", text)  # 1,000 -> 1000
    text = re.sub(r"\$(\d+)", r"\1 dollars ", text)
    text = re.sub(r"\b(\d+)(?:st|nd|rd|th)\b", lambda match: f" {ordinal_to_words(int(match[1]))} ", text)
    text = re.sub(
        r"(\d+)\.(\d+)",
        lambda match: (
            f" {number_to_words(int(match[1]))} point " + " ".join(_ONES[int(digit)] for digit in match[2]) + " "
        ),
        text,
    )
    return re.sub(r"\d+", lambda match: f" {number_to_words(int(match[0]))} ", text)


def normalize_text(text: str) -> str:
    """Normalise English text for scoring: lowercase words separated by single spaces.

    Drops [bracketed], (parenthesised) and <angled> annotations, expands
    contractions and a few abbreviations, spells out digits ("3rd" -> "third",
    "2.5" -> "two point five"), removes punctuation (hyphens split words;
    apostrophes and periods inside words join them: "party's" -> "partys",
    "a.m." -> "am") and filler words ("um", "uh"...); joins letters spelled
    out one by one ("M I S D N" -> "misdn").
    """
    text = unicodedata.normalize("NFKC", text).lower()
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"\[[^\]]*\]|\([^)]*\)|<[^>]*>", " ", text)
    for pattern, replacement in _CONTRACTIONS + _ABBREVIATIONS:
        text = re.sub(pattern, replacement, text)
    text = _spell_numbers(text)
    text = re.sub(r"(?<=\w)[.'](?=\w)", "", text)
    # Marks (accents) are kept: they belong to words; everything else that is
    # not a letter or a digit becomes a space.
    text = "".join(char if char.isalnum() or unicodedata.category(char).startswith("M") else " " for char in text)
    return " ".join(_join_spelled_letters([word for word in text.split() if word not in FILLER_WORDS]))


def _join_spelled_letters(words: list[str]) -> list[str]:
    """Three or more single letters in a row are one spelled-out word: "M I
    S D N" and "MISDN" are the same thing said ("a" and "I" alone stay words)."""
    joined: list[str] = []
    run: list[str] = []
    for word in [*words, ""]:
        if len(word) == 1 and word.isalpha():
            run.append(word)
            continue
        joined += ["".join(run)] if len(run) >= 3 else run
        run = []
        if word:
            joined.append(word)
    return joined


@dataclass(frozen=True)
class WordErrors:
    """Edit counts of a hypothesis against a reference (a minimal word alignment)."""

    substitutions: int
    deletions: int
    insertions: int
    reference_word_count: int

    @property
    def error_count(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def word_error_rate(self) -> float:
        """Errors per reference word; with an empty reference, 0 if nothing was inserted, else 1."""
        if self.reference_word_count == 0:
            return 0.0 if self.insertions == 0 else 1.0
        return self.error_count / self.reference_word_count

    def __add__(self, other: WordErrors) -> WordErrors:
        return WordErrors(
            self.substitutions + other.substitutions,
            self.deletions + other.deletions,
            self.insertions + other.insertions,
            self.reference_word_count + other.reference_word_count,
        )


def count_word_errors(reference_words: list[str], hypothesis_words: list[str]) -> WordErrors:
    """Levenshtein alignment of two word lists; ties prefer substitutions."""
    # Each cell is (errors, substitutions, deletions, insertions); the rows
    # run over the reference, the columns over the hypothesis.
    previous = [(column, 0, 0, column) for column in range(len(hypothesis_words) + 1)]
    for row, reference_word in enumerate(reference_words, start=1):
        current = [(row, 0, row, 0)]
        for column, hypothesis_word in enumerate(hypothesis_words, start=1):
            diagonal = previous[column - 1]
            if reference_word == hypothesis_word:
                best = diagonal
            else:
                substitution = (diagonal[0] + 1, diagonal[1] + 1, diagonal[2], diagonal[3])
                up = previous[column]
                deletion = (up[0] + 1, up[1], up[2] + 1, up[3])
                left = current[column - 1]
                insertion = (left[0] + 1, left[1], left[2], left[3] + 1)
                best = min(substitution, deletion, insertion, key=lambda cell: cell[0])
            current.append(best)
        previous = current
    _, substitutions, deletions, insertions = previous[-1]
    return WordErrors(substitutions, deletions, insertions, len(reference_words))


def word_errors(reference: str, hypothesis: str, *, normalize: bool = True) -> WordErrors:
    """Edit counts of `hypothesis` against `reference`, normalised first unless told not to."""
    if normalize:
        reference, hypothesis = normalize_text(reference), normalize_text(hypothesis)
    return count_word_errors(reference.split(), hypothesis.split())


def word_error_rate(reference: str, hypothesis: str, *, normalize: bool = True) -> float:
    """WER of one hypothesis: (substitutions + deletions + insertions) / reference words."""
    return word_errors(reference, hypothesis, normalize=normalize).word_error_rate


def corpus_word_error_rate(pairs: Iterable[tuple[str, str]], *, normalize: bool = True) -> float:
    """WER over many (reference, hypothesis) pairs: all errors over all reference words."""
    total = WordErrors(0, 0, 0, 0)
    for reference, hypothesis in pairs:
        total += word_errors(reference, hypothesis, normalize=normalize)
    return total.word_error_rate

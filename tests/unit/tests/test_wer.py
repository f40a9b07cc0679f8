"""Text normalisation and word error rate of tests/wer.py."""

from __future__ import annotations

import random
from functools import cache

import pytest

from tests.wer import (
    WordErrors,
    corpus_word_error_rate,
    count_word_errors,
    normalize_text,
    number_to_words,
    ordinal_to_words,
    word_error_rate,
    word_errors,
)


@pytest.mark.parametrize(
    ("text", "normalized"),
    [
        ("Hello, World!", "hello world"),
        ("  Please   try\tagain.\n", "please try again"),
        ("Press 3 to delete.", "press three to delete"),
        ("Press three to delete", "press three to delete"),
        ("Dial 500 now", "dial five hundred now"),
        ("Extension 1234", "extension one thousand two hundred thirty four"),
        ("1,000,000 users", "one million users"),
        ("a 28.8 kilobit modem", "a twenty eight point eight kilobit modem"),
        ("the 21st and the 40th", "the twenty first and the fortieth"),
        ("3D audio enabled", "three d audio enabled"),
        ("Um, I uh think so. Hmm.", "i think so"),
        ("I'm sorry, that's not valid.", "i am sorry that is not valid"),
        ("We won't, you can't, they'll", "we will not you can not they will"),
        ("It\u2019s here", "it is here"),
        ("your party's first name", "your partys first name"),
        ("Call-Forward on Busy", "call forward on busy"),
        ("At 10 A.M. sharp", "at ten am sharp"),
        ("[ascending tones] Goodbye (simple tone sound plays)", "goodbye"),
        ("<beep> Hello", "hello"),
        ("Mr. Smith & Dr. Jones", "mister smith and doctor jones"),
        ("50% off", "fifty percent off"),
        ("$5 fee", "five dollars fee"),
        ("Caf\u00e9 cr\u00e8me", "caf\u00e9 cr\u00e8me"),
        ("M I S D N greeting", "misdn greeting"),
        ("MISDN greeting", "misdn greeting"),
        ("press a or b, I say", "press a or b i say"),
        ("", ""),
        ("...!?", ""),
    ],
)
def test_normalize_text(text: str, normalized: str) -> None:
    assert normalize_text(text) == normalized


@pytest.mark.parametrize(
    ("number", "words"),
    [
        (0, "zero"),
        (7, "seven"),
        (13, "thirteen"),
        (40, "forty"),
        (99, "ninety nine"),
        (100, "one hundred"),
        (305, "three hundred five"),
        (1000, "one thousand"),
        (20_019, "twenty thousand nineteen"),
        (1_000_001, "one million one"),
        (3_000_000_000, "three billion"),
        (10**12, "one zero zero zero zero zero zero zero zero zero zero zero zero"),
    ],
)
def test_number_to_words(number: int, words: str) -> None:
    assert number_to_words(number) == words


def test_number_to_words_refuses_negative_numbers() -> None:
    with pytest.raises(ValueError, match="negative"):
        number_to_words(-1)


@pytest.mark.parametrize(
    ("number", "words"),
    [(1, "first"), (2, "second"), (3, "third"), (5, "fifth"), (8, "eighth"), (9, "ninth"), (12, "twelfth"),
     (20, "twentieth"), (22, "twenty second"), (100, "one hundredth"), (4, "fourth")],
)  # fmt: skip
def test_ordinal_to_words(number: int, words: str) -> None:
    assert ordinal_to_words(number) == words


def test_digits_and_words_compare_equal() -> None:
    assert word_error_rate("Press 1 to accept, 2 to listen.", "press one to accept two to listen") == 0.0
    assert word_error_rate("Dial five hundred.", "Dial 500") == 0.0


def test_counts_each_kind_of_error() -> None:
    assert count_word_errors(list("abcd"), list("axcd")) == WordErrors(1, 0, 0, 4)
    assert count_word_errors(list("abcd"), list("acd")) == WordErrors(0, 1, 0, 4)
    assert count_word_errors(list("abcd"), list("abycd")) == WordErrors(0, 0, 1, 4)
    assert count_word_errors(list("abc"), list("xyzw")) == WordErrors(3, 0, 1, 3)
    assert count_word_errors([], list("ab")) == WordErrors(0, 0, 2, 0)
    assert count_word_errors(list("ab"), []) == WordErrors(0, 2, 0, 2)


def test_word_error_rate() -> None:
    assert word_error_rate("the cat sat on the mat", "the cat sat on the mat") == 0.0
    assert word_error_rate("the cat sat on the mat", "the cat sat on a mat") == pytest.approx(1 / 6)
    assert word_error_rate("the cat sat", "the cat sat on the mat") == pytest.approx(1.0)
    assert word_error_rate("the cat", "") == 1.0
    # Insertions can take it past 1.
    assert word_error_rate("hi", "oh hi there you") == 3.0


def test_empty_reference() -> None:
    assert word_error_rate("", "") == 0.0
    assert word_error_rate("[silence]", "um") == 0.0
    assert word_error_rate("", "hello") == 1.0


def test_normalisation_can_be_turned_off() -> None:
    assert word_error_rate("Hello, world", "hello world", normalize=False) == 0.5
    assert word_errors("Hello, world", "hello world") == WordErrors(0, 0, 0, 2)


def test_corpus_rate_weighs_by_reference_length() -> None:
    pairs = [("one two three four", "one two three four"), ("five six", "five")]
    assert corpus_word_error_rate(pairs) == pytest.approx(1 / 6)
    assert corpus_word_error_rate([]) == 0.0


def test_edit_distance_is_minimal_on_random_lists() -> None:
    rng = random.Random(3)
    for _ in range(200):
        reference = [rng.choice("abcd") for _ in range(rng.randint(0, 8))]
        hypothesis = [rng.choice("abcd") for _ in range(rng.randint(0, 8))]
        errors = count_word_errors(reference, hypothesis)
        assert errors.error_count == _levenshtein(reference, hypothesis)
        # Every hypothesis word is matched, substituted or inserted.
        assert len(hypothesis) == errors.reference_word_count - errors.deletions + errors.insertions


def _levenshtein(first: list[str], second: list[str]) -> int:
    """Textbook recursion with memoisation, as an independent check."""

    @cache
    def distance(i: int, j: int) -> int:
        if i == 0 or j == 0:
            return i + j
        return min(
            distance(i - 1, j) + 1,
            distance(i, j - 1) + 1,
            distance(i - 1, j - 1) + (first[i - 1] != second[j - 1]),
        )

    return distance(len(first), len(second))

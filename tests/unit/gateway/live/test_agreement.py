"""gateway.live.agreement: the leading words consecutive hypotheses agree on,
the sentences of long speech made final, where a long utterance is cut."""

from __future__ import annotations

from common.transcript import Word
from gateway.live.agreement import (
    LocalAgreement,
    agreed_prefix,
    agreed_sentence_end,
    cut_position,
    sentence_to_commit,
)


def words(*texts: str) -> tuple[Word, ...]:
    return tuple(Word(text, index * 0.5, index * 0.5 + 0.4) for index, text in enumerate(texts))


def test_local_agreement_ignores_case_and_punctuation() -> None:
    assert agreed_prefix(words("Please", "enter"), words("please", "enter,", "your")) == 2
    assert agreed_prefix(words("Please", "and"), words("Please", "enter", "your")) == 1
    assert agreed_prefix((), words("Please")) == 0


def test_each_hypothesis_is_compared_with_the_one_before_it() -> None:
    agreement = LocalAgreement()
    assert agreement.observe(words("Please", "enter")) == 0  # nothing before the first
    assert agreement.observe(words("please", "enter,", "your")) == 2
    assert agreement.observe(words("Please", "and")) == 1 and agreement.agreed == 1
    assert agreement.observe(words("Please", "and", "then")) == 2


def test_a_sentence_inside_long_speech_is_final_once_agreed_and_followed() -> None:
    heard = words("One", "two.", "Three", "four.", "Five")
    assert agreed_sentence_end(heard, 5) == 4
    # Only agreed words, and only where a word follows.
    assert agreed_sentence_end(heard, 3) == 2
    assert agreed_sentence_end(heard, 1) == 0
    assert agreed_sentence_end(heard[:4], 4) == 2


def test_a_hypothesis_decoded_at_a_pause_that_ends_a_sentence_is_final_whole() -> None:
    heard = words("One", "two.", "Three", "four.")
    assert sentence_to_commit(heard, 0, at_pause=True) == 4
    # Not at a pause: only up to an agreed sentence end that a word follows.
    assert sentence_to_commit(heard, 4, at_pause=False) == 2
    assert sentence_to_commit(words("One", "two"), 2, at_pause=True) == 0
    assert sentence_to_commit((), 0, at_pause=True) == 0


def test_a_long_utterance_is_cut_at_a_sentence_end_else_a_clause_else_the_widest_pause() -> None:
    def timed(*items: tuple[str, float]) -> tuple[Word, ...]:
        at, out = 0.0, []
        for text, pause in items:
            out.append(Word(text, at, at + 0.3))
            at += 0.3 + pause
        return tuple(out)

    sentence = timed(("One", 0), ("two.", 0), ("Three", 0), ("four,", 0), ("five", 0), ("six", 0))
    assert cut_position(sentence, 6) == 4  # "four," is in the later half; "two." is not
    assert cut_position(sentence, 4) == 2 or cut_position(sentence, 4) == 4
    paused = timed(("a", 0), ("b", 0), ("c", 0.3), ("d", 0), ("e", 0.05), ("f", 0))
    assert cut_position(paused, 6) == 3
    flat = timed(("a", 0), ("b", 0), ("c", 0))
    assert cut_position(flat, 2) == 2

"""gateway.live.context: a decode led in by the audio of the last finals,
their text as its prefix, or, without a lead-in, their text as previous text;
words heard in the lead-in left out and the rest timed from its end."""

from __future__ import annotations

import pytest

from common.limits import SAMPLE_RATE_HERTZ
from common.transcript import Word
from gateway.live.context import (
    CONTEXT_CHARS,
    MAX_WINDOW_S,
    DecodeContext,
    DecodeWindow,
    after_lead_in,
    last_chars,
)
from gateway.live.decoder import Hypothesis

RATE = SAMPLE_RATE_HERTZ


def test_the_context_is_the_end_of_what_was_said_from_a_word_start() -> None:
    assert last_chars("one two three", 100) == "one two three"
    assert last_chars("one two three", 9) == "three"
    assert last_chars("abcdefghij", 4) == "ghij"


def test_a_decode_is_led_in_by_the_last_finals_that_fit() -> None:
    context = DecodeContext(context_audio_s=6.0)
    context.remember(1 * RATE, 3 * RATE, "one")
    context.remember(4 * RATE, 6 * RATE, "two")
    context.remember(7 * RATE, 9 * RATE, "three")
    window = context.window(10 * RATE, 12 * RATE, lead_in=True, first_held=0)
    # A window at most context_audio_s longer than the utterance's 2 s: "one" is too far back.
    assert window == DecodeWindow(4 * RATE, 12 * RATE, 6 * RATE, "two three", "")
    assert context.said == "one two three"
    # Audio no longer held leads nothing.
    held = context.window(10 * RATE, 12 * RATE, lead_in=True, first_held=5 * RATE)
    assert held == DecodeWindow(7 * RATE, 12 * RATE, 3 * RATE, "three", "")


def test_without_a_lead_in_a_decode_gets_what_was_said_as_previous_text() -> None:
    context = DecodeContext(context_audio_s=10.0)
    assert context.window(0, RATE, lead_in=True, first_held=0) == DecodeWindow(0, RATE, 0, "", "")
    context.remember(1 * RATE, 3 * RATE, "one")
    # Not asked for (a final pending, or the stream behind).
    assert context.window(4 * RATE, 6 * RATE, lead_in=False, first_held=0) == DecodeWindow(
        4 * RATE, 6 * RATE, 0, "", "one"
    )
    # A final that starts before the utterance leads it in; one that does not, nothing.
    assert context.window(2 * RATE, 6 * RATE, lead_in=True, first_held=0).lead_in == RATE
    assert context.window(RATE, 6 * RATE, lead_in=True, first_held=0).prefix == ""
    assert context.alone(4 * RATE, 6 * RATE) == DecodeWindow(4 * RATE, 6 * RATE, 0, "", "one")
    # Finals whose audio is forgotten lead nothing; what they said stays.
    context.forget_before(2 * RATE)
    assert context.window(4 * RATE, 6 * RATE, lead_in=True, first_held=0).context == "one"


def test_the_window_and_the_text_stay_within_what_a_decode_takes() -> None:
    context = DecodeContext(context_audio_s=20.0)
    for second in range(0, 24, 2):
        context.remember(second * RATE, (second + 2) * RATE, "word " * 20)
    window = context.window(24 * RATE, 34 * RATE, lead_in=True, first_held=0)
    assert window.end - window.start <= MAX_WINDOW_S * RATE
    assert 0 < len(window.prefix) <= 500
    assert len(context.said) <= CONTEXT_CHARS


def test_words_heard_in_the_lead_in_are_left_out_and_the_rest_timed_from_its_end() -> None:
    heard = (Word("noise", 0.5, 1.0), Word("over", 1.8, 2.3), Word("mine", 2.5, 3.0))
    hypothesis = Hypothesis("noise over mine", heard, "en")
    window = DecodeWindow(0, 4 * RATE, 2 * RATE, "before", "")
    shifted = after_lead_in(hypothesis, window)
    assert shifted.text == "over mine" and shifted.language_code == "en"
    assert [(word.start_s, word.end_s) for word in shifted.words] == [(0.0, pytest.approx(0.3)), (0.5, 1.0)]
    # Without a lead-in the hypothesis is the window's own.
    assert after_lead_in(hypothesis, DecodeWindow(0, 4 * RATE, 0, "", "")) is hypothesis

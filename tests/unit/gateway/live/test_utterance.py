"""gateway.live.utterance: the steps of a growing utterance, the latest one
decoded and the agreement of their hypotheses."""

from __future__ import annotations

from common.limits import SAMPLE_RATE_HERTZ
from common.transcript import Word
from gateway.live.decoder import Hypothesis
from gateway.live.utterance import Step, Utterance

RATE = SAMPLE_RATE_HERTZ


def heard(*texts: str) -> Hypothesis:
    words = tuple(Word(text, index * 0.5, index * 0.5 + 0.4) for index, text in enumerate(texts))
    return Hypothesis(" ".join(texts), words, "en")


def test_each_step_decoded_is_compared_with_the_latest_before_it() -> None:
    utterance = Utterance(index=0, start=0, speech_start=RATE // 5)
    first, second = Step(0, RATE), Step(0, 2 * RATE)
    utterance.launch(first)
    assert utterance.in_flight is first and utterance.steps == [first]
    utterance.settle(first)
    assert utterance.in_flight is None and not utterance.steps
    assert utterance.record(first, heard("Please", "enter")) and utterance.agreed == 0
    assert utterance.record(second, heard("please", "enter,", "your")) and utterance.agreed == 2
    assert utterance.latest is second


def test_a_step_that_ends_before_the_latest_is_dropped() -> None:
    utterance = Utterance(index=0, start=0, speech_start=0)
    late, early = Step(0, 2 * RATE), Step(0, RATE)
    assert utterance.record(late, heard("one", "two"))
    assert not utterance.record(early, heard("one"))
    assert utterance.latest is late and utterance.agreed == 0


def test_a_step_that_decoded_all_the_audio_can_be_the_final() -> None:
    utterance = Utterance(index=0, start=RATE, speech_start=RATE)
    step = Step(RATE, 3 * RATE, hypothesis=heard("one"))
    utterance.record(step, heard("one"))
    assert utterance.covering_step(3 * RATE) is step
    assert utterance.covering_step(3 * RATE + RATE // 100) is step  # (10 ms short: about all of it)
    assert utterance.covering_step(3 * RATE + RATE // 10) is None
    assert Utterance(index=1, start=0, speech_start=0).covering_step(0) is None

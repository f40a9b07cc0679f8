"""gateway.live.final_decode: a final takes the likely-final step's hypothesis
when that step decoded the whole utterance, else a decode of its own; one whose
words stop well before the speech after a lead-in is decoded again alone, and
that second look is kept only when it hears further and drops nothing."""

from __future__ import annotations

import asyncio

import numpy as np

from common.limits import SAMPLE_RATE_HERTZ
from common.transcript import Word
from gateway.live.buffer import Samples
from gateway.live.context import DecodeContext, DecodeWindow
from gateway.live.decoder import PRIORITY_FINAL, Hypothesis
from gateway.live.final_decode import FinalDecode, heard_until, lost_tail
from gateway.live.utterance import Step, Utterance

RATE = SAMPLE_RATE_HERTZ


def heard(*ends_s: float) -> Hypothesis:
    words = tuple(Word(f"w{index}", end_s - 0.3, end_s) for index, end_s in enumerate(ends_s))
    return Hypothesis(" ".join(word.text for word in words), words, "en")


class Decodes:
    """Answers each decode with the next hypothesis given, and keeps what it was asked."""

    def __init__(self, *answers: Hypothesis) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[DecodeWindow, int, int]] = []

    async def __call__(self, window: DecodeWindow, samples: Samples, priority: int) -> Hypothesis:
        self.asked.append((window, samples.size, priority))
        return self.answers.pop(0)


def final(decodes: Decodes, utterance: Utterance, end: int, window: DecodeWindow) -> tuple[Hypothesis, FinalDecode]:
    context = DecodeContext(context_audio_s=10.0)
    context.remember(0, RATE, "before")
    finals = FinalDecode(decodes, context, post_roll_s=0.2)
    samples = np.zeros(window.end - window.start, dtype=np.float32)
    hypothesis = asyncio.run(finals.hypothesis(utterance, end, window, samples, pending=None))
    return hypothesis, finals


def test_where_a_hypothesis_stops_hearing() -> None:
    assert heard_until(heard(0.5, 1.5)) == 1.5 and heard_until(heard()) == 0.0
    assert lost_tail(heard(1.0), 2.0) and not lost_tail(heard(1.5), 2.0)


def test_the_likely_final_step_that_covered_the_utterance_is_the_final() -> None:
    utterance = Utterance(index=0, start=RATE, speech_start=RATE)
    step = Step(RATE, 4 * RATE, hypothesis=heard(0.5, 2.7))
    utterance.record(step, step.hypothesis or heard())
    decodes = Decodes()
    hypothesis, finals = final(decodes, utterance, 4 * RATE, DecodeWindow(RATE, 4 * RATE, 0, "", "before"))
    assert hypothesis is step.hypothesis and finals.reused_finals == 1 and not decodes.asked


def test_otherwise_the_final_is_decoded_and_looked_at_again_without_the_lead_in() -> None:
    utterance = Utterance(index=0, start=2 * RATE, speech_start=2 * RATE)
    led_in = DecodeWindow(RATE, 5 * RATE, RATE, "before", "")
    # After the lead-in the words stop at 1.5 s of 2.8 s of speech; alone they reach 2.7 s.
    decodes = Decodes(heard(0.5, 1.5), heard(0.5, 1.5, 2.7))
    hypothesis, finals = final(decodes, utterance, 5 * RATE, led_in)
    assert heard_until(hypothesis) == 2.7 and finals.second_looks == 1 and finals.reused_finals == 0
    (first, first_size, _), (alone, alone_size, priority) = decodes.asked
    assert first is led_in and first_size == 4 * RATE
    assert alone == DecodeWindow(2 * RATE, 5 * RATE, 0, "", "before") and alone_size == 3 * RATE
    assert priority == PRIORITY_FINAL


def test_a_second_look_that_drops_words_is_not_kept() -> None:
    utterance = Utterance(index=0, start=2 * RATE, speech_start=2 * RATE)
    led_in = DecodeWindow(RATE, 5 * RATE, RATE, "before", "")
    decodes = Decodes(heard(0.5, 1.0, 1.5), heard(2.7))
    hypothesis, finals = final(decodes, utterance, 5 * RATE, led_in)
    assert heard_until(hypothesis) == 1.5 and finals.second_looks == 1
    # Without a lead-in nothing is looked at twice.
    decodes = Decodes(heard(0.5))
    hypothesis, finals = final(decodes, utterance, 5 * RATE, DecodeWindow(2 * RATE, 5 * RATE, 0, "", "before"))
    assert heard_until(hypothesis) == 0.5 and finals.second_looks == 0 and len(decodes.asked) == 1

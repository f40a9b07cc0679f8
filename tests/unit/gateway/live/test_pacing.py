"""gateway.live.pacing: the first step after a little speech, then one every
step_s (longer and only on spare workers when they are behind), a likely
final at a pause, long speech decoded whatever the load."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from common.limits import SAMPLE_RATE_HERTZ
from gateway.live.decoder import PRIORITY_FIRST_STEP, PRIORITY_INTERIM
from gateway.live.pacing import StepPacing
from gateway.live.settings import StreamSettings

RATE = SAMPLE_RATE_HERTZ


@dataclass
class Load:
    idle: bool = True
    pressure: float = 0.0


def test_the_first_step_comes_after_a_little_speech_then_one_every_step() -> None:
    pacing = StepPacing(StreamSettings(interim_results=True, first_step_s=0.4, step_s=1.0), Load())

    def due(since_speech_s: float, since_step_s: float | None) -> int | None:
        since_step = None if since_step_s is None else round(since_step_s * RATE)
        return pacing.due_step(
            length_samples=2 * RATE, since_speech_samples=round(since_speech_s * RATE), since_step_samples=since_step
        )

    assert due(0.3, None) is None
    assert due(0.4, None) == PRIORITY_FIRST_STEP
    assert due(2.0, 0.9) is None
    assert due(2.0, 1.0) == PRIORITY_INTERIM


def test_behind_steps_grow_and_interim_steps_wait_for_a_spare_worker() -> None:
    load = Load()
    settings = StreamSettings(interim_results=True, step_s=1.0, max_step_s=3.0)
    pacing = StepPacing(settings, load)
    assert pacing.step_s() == 1.0 and pacing.lead_in(at_pause=False)
    load.pressure = 0.5
    assert pacing.step_s() == pytest.approx(2.0)
    load.pressure, load.idle = 4.0, False
    assert pacing.step_s() == pytest.approx(3.0)
    # Behind: no lead-in but for a likely final.
    assert not pacing.lead_in(at_pause=False) and pacing.lead_in(at_pause=True)
    short = {"length_samples": 4 * RATE, "since_speech_samples": 4 * RATE, "since_step_samples": 3 * RATE}
    assert pacing.due_step(**short) is None
    # The first step and the steps of long speech go on whatever the load, ahead of interims.
    assert pacing.due_step(**{**short, "since_step_samples": None}) == PRIORITY_FIRST_STEP
    assert pacing.due_step(**{**short, "length_samples": 7 * RATE}) == PRIORITY_FIRST_STEP


def test_without_interim_results_only_long_speech_is_stepped() -> None:
    pacing = StepPacing(StreamSettings(sentence_commit_s=6.0, max_utterance_s=15.0), Load())
    assert pacing.due_step(length_samples=5 * RATE, since_speech_samples=5 * RATE, since_step_samples=None) is None
    assert (
        pacing.due_step(length_samples=6 * RATE, since_speech_samples=6 * RATE, since_step_samples=None)
        == PRIORITY_FIRST_STEP
    )


def test_pauses_cuts_and_sentence_commits_follow_the_settings() -> None:
    pacing = StepPacing(StreamSettings(final_silence_s=0.2, max_utterance_s=15.0, sentence_commit_s=6.0), Load())
    assert pacing.at_pause(in_speech=True, trailing_silence_s=0.2)
    assert not pacing.at_pause(in_speech=True, trailing_silence_s=0.1)
    assert not pacing.at_pause(in_speech=False, trailing_silence_s=1.0)
    assert pacing.must_cut(15 * RATE) and not pacing.must_cut(15 * RATE - 1)
    assert pacing.commits_sentences(6 * RATE) and not pacing.commits_sentences(6 * RATE - 1)

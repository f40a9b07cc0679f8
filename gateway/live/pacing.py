"""When a growing utterance of a live stream is decoded, and how much of that
work a stream sheds when the ASR workers are behind: the first step after a
little speech, then a step every `step_s` of new audio (longer under
pressure, and only on spare workers), a likely final as soon as the end of
the audio is silent, and the steps of long speech whatever the load (it
needs agreed words to be cut at)."""

from __future__ import annotations

from typing import Protocol

from common.limits import SAMPLE_RATE_HERTZ
from gateway.live.decoder import PRIORITY_FIRST_STEP, PRIORITY_INTERIM
from gateway.live.settings import StreamSettings


class WorkerLoad(Protocol):
    """How busy the ASR workers are (`LiveDecoder.idle`, `LiveDecoder.pressure`)."""

    @property
    def idle(self) -> bool: ...

    @property
    def pressure(self) -> float: ...


class StepPacing:
    """The step decisions of one stream, from its settings and the workers' load."""

    def __init__(self, settings: StreamSettings, load: WorkerLoad) -> None:
        self._settings = settings
        self._load = load

    def must_cut(self, length_samples: int) -> bool:
        """Whether an utterance this long is made final though speech goes on."""
        return length_samples >= self._settings.max_utterance_s * SAMPLE_RATE_HERTZ

    def commits_sentences(self, length_samples: int) -> bool:
        """Whether an utterance this long makes its agreed sentences final at once."""
        return length_samples >= self._settings.sentence_commit_s * SAMPLE_RATE_HERTZ

    def at_pause(self, *, in_speech: bool, trailing_silence_s: float) -> bool:
        """Whether the end of the audio has been silent long enough, in speech,
        for a likely final."""
        return in_speech and trailing_silence_s >= self._settings.final_silence_s

    def step_s(self) -> float:
        """New audio between two steps now: `step_s`, growing towards
        `max_step_s` as the workers fall behind."""
        settings = self._settings
        stretch = min(1.0, max(0.0, self._load.pressure))
        return settings.step_s + (max(settings.max_step_s, settings.step_s) - settings.step_s) * stretch

    def lead_in(self, *, at_pause: bool) -> bool:
        """Whether a step may have a lead-in: behind, a step that is not a
        likely final goes without it (a shorter window)."""
        return at_pause or self._load.pressure < 1.0

    def due_step(self, *, length_samples: int, since_speech_samples: int, since_step_samples: int | None) -> int | None:
        """The priority of the step due now for an utterance `length_samples`
        long, whose speech began `since_speech_samples` ago and whose latest
        step ended `since_step_samples` ago (None: no step yet); None when
        none is due."""
        settings = self._settings
        if since_step_samples is None:
            due = since_speech_samples >= settings.first_step_s * SAMPLE_RATE_HERTZ
        else:
            due = since_step_samples >= self.step_s() * SAMPLE_RATE_HERTZ
        # A long utterance needs recent agreed words to be cut at (a sentence
        # from sentence_commit_s, any words at max_utterance_s): its steps
        # go on whatever the load, ahead of ordinary interim steps.
        long = length_samples >= min(settings.sentence_commit_s, settings.max_utterance_s / 2) * SAMPLE_RATE_HERTZ
        if not settings.interim_results and not long:
            due = False
        if due and since_step_samples is not None and not long and not self._load.idle:
            # Later interim steps only use spare capacity (a worker is kept
            # free for finals): under load, finals and first results keep
            # their latency and interims come less often.
            due = False
        if not due:
            return None
        return PRIORITY_FIRST_STEP if since_step_samples is None or long else PRIORITY_INTERIM

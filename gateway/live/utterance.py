"""One utterance of a live stream while it grows: the steps (decodes of its
audio so far) in flight, the latest one decoded, and the LocalAgreement of
their hypotheses."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from common.limits import SAMPLE_RATE_HERTZ
from gateway.live.agreement import LocalAgreement
from gateway.live.decoder import Hypothesis

# A step that ends this close to the end of an utterance's audio covers it all.
_COVERED_SAMPLES = round(0.05 * SAMPLE_RATE_HERTZ)


@dataclass
class Step:
    """A decode of samples [start, end) of the stream."""

    start: int
    end: int
    hypothesis: Hypothesis | None = None
    task: asyncio.Task[None] | None = None
    # Decoded because the end of its audio was silent (a pause, maybe the end of speech).
    at_pause: bool = False
    # Decoded after a lead-in of earlier finals.
    led_in: bool = False


@dataclass
class Utterance:
    index: int
    # First sample of its audio (speech start less the pre-roll).
    start: int
    speech_start: int
    # The step decoded last (the one whose hypothesis is the latest).
    latest: Step | None = None
    agreement: LocalAgreement = field(default_factory=LocalAgreement)
    in_flight: Step | None = None
    # A likely-final step was started in the current silence.
    pre_final_done: bool = False
    steps: list[Step] = field(default_factory=list)

    @property
    def agreed(self) -> int:
        """Leading words of `latest` agreed on with the hypothesis before it."""
        return self.agreement.agreed

    def launch(self, step: Step) -> None:
        """A step whose decode starts now."""
        self.in_flight = step
        self.steps.append(step)

    def settle(self, step: Step) -> None:
        """A step whose decode ended, decoded or not."""
        if self.in_flight is step:
            self.in_flight = None
        self.steps = [other for other in self.steps if other is not step]

    def record(self, step: Step, hypothesis: Hypothesis) -> bool:
        """A step decoded: it becomes the latest and its words are compared
        with the latest before it; False (and nothing changes) when a later
        step (the likely final) finished first."""
        if self.latest is not None and self.latest.end >= step.end:
            return False
        self.latest = step
        self.agreement.observe(hypothesis.words)
        return True

    def covering_step(self, end: int) -> Step | None:
        """The latest step when it decoded all of samples [start, end) (about),
        with nothing before it: its hypothesis can be the final's."""
        latest = self.latest
        if (
            latest is not None
            and latest.hypothesis is not None
            and latest.start == self.start
            and latest.end >= end - _COVERED_SAMPLES
        ):
            return latest
        return None

    def running_tasks(self) -> list[asyncio.Task[None]]:
        """The tasks of its steps still decoding."""
        return [step.task for step in self.steps if step.task is not None and not step.task.done()]

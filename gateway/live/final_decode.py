"""The hypothesis of an utterance's final: the likely-final step's when that
step decoded the whole utterance, else a decode of its own; and a second look
without the lead-in when the words stop well before the speech does (the
model, continuing the lead-in's text, ended early)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from common.limits import SAMPLE_RATE_HERTZ
from gateway.live.buffer import Samples
from gateway.live.context import DecodeContext, DecodeWindow
from gateway.live.decoder import PRIORITY_FINAL, Hypothesis
from gateway.live.utterance import Step, Utterance

# Decodes a window's samples at a priority (`LiveTranscriber._decode`).
DecodeWindowed = Callable[[DecodeWindow, Samples, int], Awaitable[Hypothesis]]

# A final decoded after a lead-in whose last word ends this long before its
# speech does (or that has no word at all) lost words: the model, continuing
# the lead-in's text, stopped early. It is decoded again on its own.
_LOST_TAIL_S = 0.6


def heard_until(hypothesis: Hypothesis) -> float:
    """Where its last word ends (0 without words)."""
    return hypothesis.words[-1].end_s if hypothesis.words else 0.0


def lost_tail(hypothesis: Hypothesis, speech_s: float) -> bool:
    """Whether a final's words stop well before the end of its speech
    (`speech_s` from the start of its audio)."""
    return heard_until(hypothesis) < speech_s - _LOST_TAIL_S


class FinalDecode:
    """Decodes the finals of one stream, and counts how."""

    def __init__(self, decode: DecodeWindowed, context: DecodeContext, post_roll_s: float) -> None:
        self._decode = decode
        self._context = context
        self._post_roll_s = post_roll_s
        # Finals that took the likely-final step's hypothesis (no decode of their own).
        self.reused_finals = 0
        # Finals decoded again on their own because the lead-in lost their last words.
        self.second_looks = 0

    async def hypothesis(
        self, utterance: Utterance, end: int, window: DecodeWindow, samples: Samples, *, pending: Step | None
    ) -> Hypothesis:
        """The final of samples [utterance.start, end) of the stream, once
        the step `pending` (in flight when the final was made) is done;
        `window` and its `samples` are what a decode of its own sends."""
        speech_s = (end - utterance.start) / SAMPLE_RATE_HERTZ - self._post_roll_s
        if pending is not None and pending.task is not None:
            await asyncio.shield(pending.task)
        covering = utterance.covering_step(end)
        if covering is not None and covering.hypothesis is not None:
            self.reused_finals += 1
            hypothesis, led_in = covering.hypothesis, covering.led_in  # the likely-final step covered it all
        else:
            hypothesis, led_in = await self._decode(window, samples, PRIORITY_FINAL), window.lead_in > 0
        if led_in and lost_tail(hypothesis, speech_s):
            self.second_looks += 1
            alone = self._context.alone(utterance.start, end)
            second = await self._decode(alone, samples[window.lead_in :], PRIORITY_FINAL)
            # Kept when it hears further and drops nothing (a noise at
            # the end may be all that set the second look off).
            if heard_until(second) > heard_until(hypothesis) and len(second.words) >= len(hypothesis.words):
                return second
        return hypothesis

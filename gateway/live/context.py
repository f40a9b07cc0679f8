"""What each decode of a live stream hears before its own audio: the window
it sends, led in by the audio of the stream's last finals with their text
forced as the transcript's start (`prefix`), or, without a lead-in, the text
of the last finals as previous text (`context`), as whisper_streaming
prompts its decodes. Not both: text before a lead-in only biased the model
towards words said earlier ("3 to eject" heard as "3 to reject" after "2 to
reject it")."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from common.limits import SAMPLE_RATE_HERTZ
from gateway.live.decoder import Hypothesis

# Text of the stream's last finals given to each decode as what came before
# (whisper_streaming's 200 characters).
CONTEXT_CHARS = 200
# Whisper's window less a margin: a lead-in and its utterance fit in it.
MAX_WINDOW_S = 29.0
# Text of the finals a lead-in holds at most (the ASR service takes 600 characters).
MAX_LEAD_IN_CHARS = 500


@dataclass(frozen=True)
class _Final:
    """A final sent: its audio, samples [start, end) of the stream, and text."""

    start: int
    end: int
    text: str


@dataclass(frozen=True)
class DecodeWindow:
    """What one decode sends: samples [start, end) of the stream, the first
    `lead_in` of them the audio of earlier finals whose text is `prefix`,
    and `context` as previous text."""

    start: int
    end: int
    lead_in: int
    prefix: str
    context: str


def last_chars(text: str, limit: int) -> str:
    """The end of `text`, at most `limit` characters, from a word's start."""
    text = text.strip()
    if len(text) <= limit:
        return text
    tail = text[-limit:]
    space = tail.find(" ")
    return tail[space + 1 :] if space >= 0 else tail


class DecodeContext:
    """The finals a stream has sent, as its decodes' lead-in and previous text."""

    def __init__(self, context_audio_s: float) -> None:
        self._context_audio_s = context_audio_s
        # The stream's finals so far, their last CONTEXT_CHARS characters.
        self._said = ""
        # The last finals, whose audio may lead a decode (see `window`).
        self._recent: list[_Final] = []

    @property
    def said(self) -> str:
        """What the stream said before, for the next decode."""
        return self._said

    def remember(self, start: int, end: int, text: str) -> None:
        """A final sent: its text and samples [start, end) of the stream."""
        self._said = last_chars(f"{self._said} {text}", CONTEXT_CHARS)
        self._recent.append(_Final(start, end, text))

    def forget_before(self, keep_from: int) -> None:
        """Finals whose audio starts before sample `keep_from` lead no decode."""
        self._recent = [final for final in self._recent if final.start >= keep_from]

    def window(self, start: int, end: int, *, lead_in: bool, first_held: int) -> DecodeWindow:
        """What decoding samples [start, end) sends: led in by the audio of
        the last finals that fit `context_audio_s`, Whisper's window and the
        audio held (from `first_held`), with their text as the prefix.
        Without a lead-in when not `lead_in` (a final is pending: its text is
        not known yet; or the stream sheds work) or when the finals are too
        far back: then with the stream's last finals as previous text."""
        budget = min(MAX_WINDOW_S * SAMPLE_RATE_HERTZ, end - start + self._context_audio_s * SAMPLE_RATE_HERTZ)
        chosen: list[_Final] = []
        chars = 0
        for final in reversed(self._recent if lead_in else []):
            chars += len(final.text) + 1
            too_far = end - final.start > budget or chars > MAX_LEAD_IN_CHARS or final.start < first_held
            if final.start >= start or too_far:
                break
            chosen.append(final)
        if not chosen:
            return self.alone(start, end)
        prefix = " ".join(final.text for final in reversed(chosen))
        first = chosen[-1].start
        return DecodeWindow(first, end, start - first, prefix, "")

    def alone(self, start: int, end: int) -> DecodeWindow:
        """Samples [start, end) without a lead-in, the stream's last finals as previous text."""
        return DecodeWindow(start, end, 0, "", self._said)


def after_lead_in(hypothesis: Hypothesis, window: DecodeWindow) -> Hypothesis:
    """The hypothesis of a window's audio after its lead-in, its words timed
    from the end of the lead-in (the start of the utterance's audio)."""
    if not window.lead_in:
        return hypothesis
    shift_s = window.lead_in / SAMPLE_RATE_HERTZ
    # Words heard wholly in the lead-in are speech no final holds (noise,
    # a dropped utterance): not this utterance's.
    words = tuple(
        dataclasses.replace(word, start_s=max(0.0, word.start_s - shift_s), end_s=word.end_s - shift_s)
        for word in hypothesis.words
        if word.end_s > shift_s
    )
    if len(words) == len(hypothesis.words):
        return Hypothesis(hypothesis.text, words, hypothesis.language_code)
    return Hypothesis(" ".join(word.text for word in words), words, hypothesis.language_code)

"""Domain types of a transcript, shared by the ASR, align and gateway engines.

Plain dataclasses, independent of protobuf; times are seconds from the start
of the decoded audio.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class TimeRange:
    """A half-open range [start_s, end_s) of the audio."""

    start_s: float
    end_s: float

    @property
    def duration_s(self) -> float:
        return self.end_s - self.start_s


@dataclass(frozen=True)
class Word:
    """A word with its time in the audio."""

    text: str
    start_s: float
    end_s: float
    probability: float = 0.0
    # True when the aligner could not place the word and its times were
    # interpolated between its neighbours.
    interpolated: bool = False


@dataclass(frozen=True)
class Segment:
    """A stretch of transcript, usually a sentence or phrase."""

    text: str
    start_s: float
    end_s: float
    words: tuple[Word, ...] = field(default_factory=tuple)
    avg_logprob: float = 0.0
    no_speech_prob: float = 0.0
    compression_ratio: float = 0.0
    chunk_index: int = 0
    # Who says it ("SPEAKER_00") when the job was diarized; "" otherwise.
    speaker: str = ""


# Whisper's own thresholds (faster-whisper's defaults): above, a window is
# re-decoded or dropped; here the segment is flagged instead.
COMPRESSION_RATIO_LIMIT = 2.4
AVG_LOGPROB_LIMIT = -1.0
NO_SPEECH_LIMIT = 0.6
# A phrase of up to this many words said this many times in a row is a loop.
REPEATED_PHRASE_WORDS = 4
REPEATS = 3


def doubt_flags(segment: Segment) -> tuple[str, ...]:
    """Why `segment` is doubtful, from Whisper's signals; empty when it is not."""
    flags = []
    if segment.compression_ratio > COMPRESSION_RATIO_LIMIT:
        flags.append("high_compression_ratio")
    if segment.avg_logprob < AVG_LOGPROB_LIMIT:
        flags.append("low_avg_logprob")
    if segment.no_speech_prob > NO_SPEECH_LIMIT:
        flags.append("no_speech")
    if _has_loop(segment.text):
        flags.append("repetition")
    return tuple(flags)


def _has_loop(text: str) -> bool:
    words = ["".join(char for char in word.lower() if char.isalnum()) for word in text.split()]
    words = [word for word in words if word]
    for size in range(1, REPEATED_PHRASE_WORDS + 1):
        # One word needs one more repeat ("no, no, no" is speech).
        needed = REPEATS + (1 if size == 1 else 0)
        for start in range(len(words) - size * needed + 1):
            phrase = words[start : start + size]
            if all(words[start + repeat * size : start + (repeat + 1) * size] == phrase for repeat in range(needed)):
                return True
    return False

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

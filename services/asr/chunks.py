"""The chunks of a transcription request as the engine prepares them: the
audio window they are read from, each chunk checked and rounded to samples
with its context, prefix and packed speech parts, where a packed chunk's
decoded times fall in the whole audio, and the samples and features the
model hears for each."""

from __future__ import annotations

import bisect
import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from common.errors import InvalidInputError
from common.limits import MAX_CHUNK_DURATION_S, SAMPLE_RATE_HERTZ
from common.speech.whisper_models import LoadedModel
from common.transcript import Segment, TimeRange
from services.asr.options import TranscriptionOptions

# Ranges may end this far past the end of the audio (rounding of offsets); they are clipped.
RANGE_TOLERANCE_S = 0.01
# Parts a packed chunk may have (a 30 s chunk of 32 ms speech regions).
MAX_CHUNK_PARTS = 1024


Samples = npt.NDArray[np.float32]


@dataclass(frozen=True)
class AudioWindow:
    """Samples [offset, offset + len(samples)) of an audio of `audio_sample_count` samples."""

    samples: Samples
    offset_samples: int
    audio_sample_count: int

    @classmethod
    def of(cls, audio: npt.ArrayLike, offset_samples: int, audio_sample_count: int | None) -> AudioWindow:
        samples = np.asarray(audio, dtype=np.float32)
        if samples.ndim != 1:
            raise InvalidInputError(f"audio must be one channel of samples, got shape {samples.shape}")
        total = offset_samples + samples.shape[0] if audio_sample_count is None else audio_sample_count
        if offset_samples < 0 or offset_samples + samples.shape[0] > total:
            raise InvalidInputError(
                f"audio window [{offset_samples}, {offset_samples + samples.shape[0]}) is not inside "
                f"the {total} samples of the audio"
            )
        return cls(samples, offset_samples, total)

    @property
    def audio_duration_s(self) -> float:
        return self.audio_sample_count / SAMPLE_RATE_HERTZ

    def check_covers(self, start_sample: int, end_sample: int) -> None:
        if start_sample < self.offset_samples or end_sample > self.offset_samples + self.samples.shape[0]:
            raise InvalidInputError(
                f"samples [{start_sample}, {end_sample}) are not in the audio window given "
                f"[{self.offset_samples}, {self.offset_samples + self.samples.shape[0]})"
            )

    def slice(self, start_sample: int, end_sample: int) -> Samples:
        """Samples [start, end) of the whole audio."""
        return self.samples[start_sample - self.offset_samples : end_sample - self.offset_samples]


def check_range(time_range: TimeRange, audio_duration_s: float, max_duration_s: float | None) -> TimeRange:
    """The range clipped to the audio; `InvalidInputError` if it is empty,
    outside the audio or longer than `max_duration_s`."""
    start_s, end_s = time_range.start_s, time_range.end_s
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s <= start_s:
        raise InvalidInputError(f"range {start_s:.3f}-{end_s:.3f} s is empty (its end must be after its start)")
    if start_s < 0 or start_s >= audio_duration_s or end_s > audio_duration_s + RANGE_TOLERANCE_S:
        raise InvalidInputError(f"range {start_s:.3f}-{end_s:.3f} s is outside the audio (0-{audio_duration_s:.3f} s)")
    if max_duration_s is not None and end_s - start_s > max_duration_s + 1e-3:
        raise InvalidInputError(
            f"range {start_s:.3f}-{end_s:.3f} s lasts {end_s - start_s:.3f} s; chunks last at most {max_duration_s:g} s"
        )
    return TimeRange(start_s, min(end_s, audio_duration_s))


@dataclass(frozen=True)
class Chunk:
    """A chunk as samples of the whole audio (times rounded to the nearest sample)."""

    index: int
    start_sample: int
    end_sample: int
    # Text said just before it, given to the model as previous context; empty: none.
    context: str = ""
    # Text its audio is known to begin with (already transcribed): forced as
    # the start of its transcript and left out of its result; empty: none.
    prefix: str = ""
    # Packed: the [start, end) sample ranges decoded back to back, the audio
    # between them cut out; empty: the whole chunk.
    parts: tuple[tuple[int, int], ...] = ()

    @property
    def offset_s(self) -> float:
        return self.start_sample / SAMPLE_RATE_HERTZ

    @property
    def decoded_range(self) -> TimeRange:
        """The times of the audio the model hears: the chunk's own, or for a
        packed chunk its parts' back to back from 0."""
        if not self.parts:
            return self.time_range
        return TimeRange(0.0, sum(end - start for start, end in self.parts) / SAMPLE_RATE_HERTZ)

    @property
    def duration_s(self) -> float:
        return (self.end_sample - self.start_sample) / SAMPLE_RATE_HERTZ

    @property
    def time_range(self) -> TimeRange:
        return TimeRange(self.offset_s, self.end_sample / SAMPLE_RATE_HERTZ)


def chunk_of(
    index: int,
    time_range: TimeRange,
    sample_count: int,
    context: str = "",
    prefix: str = "",
    parts: Sequence[TimeRange] = (),
) -> Chunk:
    start_sample = min(round(time_range.start_s * SAMPLE_RATE_HERTZ), sample_count - 1)
    end_sample = min(max(round(time_range.end_s * SAMPLE_RATE_HERTZ), start_sample + 1), sample_count)
    part_samples = tuple(
        (
            max(start_sample, round(part.start_s * SAMPLE_RATE_HERTZ)),
            min(end_sample, round(part.end_s * SAMPLE_RATE_HERTZ)),
        )
        for part in parts
    )
    kept = tuple(part for part in part_samples if part[1] > part[0])
    if parts and not kept:
        # Else the chunk would be decoded whole: its first 30 s only.
        raise InvalidInputError(
            f"no part of chunk {index} ({time_range.start_s:.3f}-{time_range.end_s:.3f} s) lies inside it"
        )
    return Chunk(index, start_sample, end_sample, context, " ".join(prefix.split()), kept)


def first_speech(parts: Sequence[TimeRange], limit_s: float) -> list[TimeRange]:
    """The leading `parts` that hold the first `limit_s` of speech, the last cut to fit."""
    kept: list[TimeRange] = []
    left_s = limit_s
    for part in parts:
        if left_s <= 0:
            break
        length_s = min(part.end_s - part.start_s, left_s)
        kept.append(TimeRange(part.start_s, part.start_s + length_s))
        left_s -= length_s
    return kept


def check_parts(parts: Sequence[TimeRange], chunk: TimeRange, what: str) -> None:
    """A packed chunk's parts (`what` names the chunk): inside it, in order,
    not overlapping, at most Whisper's window together."""
    if len(parts) > MAX_CHUNK_PARTS:
        raise InvalidInputError(f"{what} has {len(parts)} parts; at most {MAX_CHUNK_PARTS}")
    previous_end = chunk.start_s - RANGE_TOLERANCE_S
    for part in parts:
        inside = part.start_s >= previous_end and part.end_s <= chunk.end_s + RANGE_TOLERANCE_S
        if not (inside and part.end_s - part.start_s >= 1 / SAMPLE_RATE_HERTZ):
            raise InvalidInputError(
                f"part {part.start_s:.3f}-{part.end_s:.3f} s of {what} "
                f"({chunk.start_s:.3f}-{chunk.end_s:.3f} s) is not inside it after the part before it"
            )
        previous_end = part.end_s
    total_s = sum(part.end_s - part.start_s for part in parts)
    if total_s > MAX_CHUNK_DURATION_S + RANGE_TOLERANCE_S:
        raise InvalidInputError(
            f"the parts of {what} last {total_s:.3f} s together; at most {MAX_CHUNK_DURATION_S:g} s"
        )


@dataclass(frozen=True)
class PackedTimes:
    """Maps times in a packed chunk's decoded audio (its parts back to back
    from 0) to times in the whole audio, as faster-whisper's
    `SpeechTimestampsMap` does."""

    # Per part: where it starts in the whole audio and in the decoded audio, and its length.
    starts_s: tuple[float, ...]
    decoded_starts_s: tuple[float, ...]
    lengths_s: tuple[float, ...]

    @classmethod
    def of(cls, chunk: Chunk) -> PackedTimes:
        lengths = [(end - start) / SAMPLE_RATE_HERTZ for start, end in chunk.parts]
        decoded = [sum(lengths[:position]) for position in range(len(lengths))]
        starts = [start / SAMPLE_RATE_HERTZ for start, _ in chunk.parts]
        return cls(tuple(starts), tuple(decoded), tuple(lengths))

    def part_of(self, decoded_s: float, *, is_end: bool = False) -> int:
        """The part a time falls in; an end on the seam of two parts ends the first."""
        find = bisect.bisect_left if is_end else bisect.bisect_right
        return min(max(find(self.decoded_starts_s, decoded_s) - 1, 0), len(self.starts_s) - 1)

    def original_s(self, decoded_s: float, part: int) -> float:
        offset_s = min(max(decoded_s - self.decoded_starts_s[part], 0.0), self.lengths_s[part])
        return round(self.starts_s[part] + offset_s, 3)

    def restore(self, segment: Segment) -> Segment:
        """`segment` timed in the whole audio: each word within the part its
        middle falls in (a word does not straddle the cut silence), and the
        segment from its first word's start to its last word's end (as
        faster-whisper's `restore_speech_timestamps`), so it does not span
        the silence cut before or after its words."""
        words = []
        for word in segment.words:
            part = self.part_of((word.start_s + word.end_s) / 2)
            words.append(
                dataclasses.replace(
                    word, start_s=self.original_s(word.start_s, part), end_s=self.original_s(word.end_s, part)
                )
            )
        if words:
            return dataclasses.replace(segment, start_s=words[0].start_s, end_s=words[-1].end_s, words=tuple(words))
        start_s = self.original_s(segment.start_s, self.part_of(segment.start_s))
        end_s = max(start_s, self.original_s(segment.end_s, self.part_of(segment.end_s, is_end=True)))
        return dataclasses.replace(segment, start_s=start_s, end_s=end_s)


def per_chunk_texts(texts: Sequence[str], chunk_count: int, what: str, limit: int) -> list[str]:
    """`texts` checked as none or one per chunk, each at most `limit` characters."""
    if texts and len(texts) != chunk_count:
        raise InvalidInputError(f"{len(texts)} chunk {what}s for {chunk_count} chunks: give one per chunk, or none")
    for position, text in enumerate(texts):
        if len(text) > limit:
            raise InvalidInputError(f"the {what} of chunk {position} has {len(text)} characters; at most {limit}")
    return list(texts) if texts else [""] * chunk_count


@dataclass(frozen=True)
class PreparedTranscription:
    """A checked request whose model is loaded: what `Transcriber.decode_batch` needs."""

    window: AudioWindow
    chunks: tuple[Chunk, ...]
    options: TranscriptionOptions
    model: LoadedModel
    # Whisper's code of the language to decode; None until detected.
    language: str | None
    language_probability: float

    @property
    def batch_key(self) -> tuple[object, ...]:
        """What chunks decoded in one batch must share: the model and every
        decoding option (not the batch size, nor the audio)."""
        options = dataclasses.replace(self.options, language_code="", batch_size=1)
        return (id(self.model), self.language, options)


def chunk_samples(window: AudioWindow, chunk: Chunk) -> Samples:
    """The audio the model hears for a chunk: all of it, or its parts back to back."""
    if not chunk.parts:
        return window.slice(chunk.start_sample, chunk.end_sample)
    return np.concatenate([window.slice(start, end) for start, end in chunk.parts])


def chunk_features(prepared: PreparedTranscription, position: int, samples: Samples | None = None) -> np.ndarray:
    """The log-mel features of one chunk (of its `samples` when the caller
    has them already); as BatchedInferencePipeline, the extractor's last
    frame is dropped."""
    if samples is None:
        samples = chunk_samples(prepared.window, prepared.chunks[position])
    return prepared.model.whisper.feature_extractor(samples)[..., :-1]

"""Plain decisions of a job's pipeline, apart from any I/O so each has its
own unit test: the word-timing method, how chunks are grouped into calls,
and how the last chunks are shared over the ASR workers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

from common.limits import MAX_CHUNK_DURATION_S
from common.speech.languages import primary_language
from common.transcript import Segment, TimeRange, doubt_flags
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2

T = TypeVar("T")


def choose_align_method(
    config: gateway_pb2.JobConfig, options: asr_pb2.TranscriptionOptions
) -> align_pb2.AlignMethod.ValueType:
    """The job's method (its profile fills it in at creation), or for jobs
    stored before profiles existed: phonetic (pocketsphinx) for English
    speech, Whisper cross-attention for any other language and for
    translations (whose words were never spoken as such)."""
    if config.skip_alignment:
        return align_pb2.ALIGN_METHOD_UNSPECIFIED
    if config.align_method != align_pb2.ALIGN_METHOD_UNSPECIFIED:
        return config.align_method
    if options.task != asr_pb2.TASK_TRANSLATE and primary_language(options.language_code) == "en":
        return align_pb2.ALIGN_METHOD_PHONETIC
    return align_pb2.ALIGN_METHOD_CROSS_ATTENTION


def consecutive_runs(items: Sequence[T], key: Callable[[T], int]) -> list[list[T]]:
    """`items` split where their `key` (a chunk index) jumps: a Transcribe
    call numbers its chunks from first_chunk_index on."""
    runs: list[list[T]] = []
    for item in items:
        if runs and key(runs[-1][-1]) + 1 == key(item):
            runs[-1].append(item)
        else:
            runs.append([item])
    return runs


def tail_share(
    size: int, queued: int, workers: int, *, detection_done: bool, expected_more: float | None = None
) -> int:
    """Chunks for the next Transcribe call: the chunks left shared evenly
    over the ASR `workers`, at most `size`, so that none idles at the end
    while another decodes a full batch. Once detection is done the chunks
    left are the `queued` ones (the end-of-chunks mark among them); while it
    runs, the `queued` ones and the `expected_more` still to be detected
    (None: not known yet, so `size`)."""
    if detection_done:
        left = max(1, queued - 1)
    elif expected_more is None:
        return size
    else:
        left = queued + math.ceil(expected_more)
    return max(1, min(size, math.ceil(left / max(1, workers))))


# Coverage check: a stretch of detected speech at least this long that the
# chunk's segments cover for less than `COVERED_SHARE` of it is transcribed
# again on its own, padded by `COVERAGE_PAD_S` each side (within the chunk).
MIN_UNCOVERED_SPEECH_S = 1.0
COVERED_SHARE = 0.2
COVERAGE_PAD_S = 0.3


def uncovered_speech(speech: Sequence[TimeRange], segments: Sequence[Segment], chunk: TimeRange) -> list[TimeRange]:
    """The windows of a chunk to transcribe once more: its speech ranges
    (the VAD's, merged into the chunk) that no segment covers, padded and
    kept inside the chunk, in time order, none overlapping another or a
    segment, none longer than Whisper's window (a packed chunk spans more)."""
    windows: list[TimeRange] = []
    for speech_range in sorted(speech, key=lambda item: item.start_s):
        length = speech_range.end_s - speech_range.start_s
        if length < MIN_UNCOVERED_SPEECH_S:
            continue
        covered = sum(
            max(0.0, min(segment.end_s, speech_range.end_s) - max(segment.start_s, speech_range.start_s))
            for segment in segments
        )
        if covered >= COVERED_SHARE * length:
            continue
        start_s = max(chunk.start_s, speech_range.start_s - COVERAGE_PAD_S)
        end_s = min(chunk.end_s, speech_range.end_s + COVERAGE_PAD_S)
        # Not into a segment's time: each segment bounds the window on its side.
        middle_s = (speech_range.start_s + speech_range.end_s) / 2
        for segment in segments:
            if (segment.start_s + segment.end_s) / 2 < middle_s:
                start_s = max(start_s, segment.end_s)
            else:
                end_s = min(end_s, segment.start_s)
        if windows and start_s < windows[-1].end_s:
            if max(windows[-1].end_s, end_s) - windows[-1].start_s <= MAX_CHUNK_DURATION_S:
                windows[-1] = TimeRange(windows[-1].start_s, max(windows[-1].end_s, end_s))
                continue
            start_s = windows[-1].end_s
        end_s = min(end_s, start_s + MAX_CHUNK_DURATION_S)
        if end_s - start_s >= MIN_UNCOVERED_SPEECH_S:
            windows.append(TimeRange(start_s, end_s))
    return windows


def merge_found_segments(segments: Sequence[Segment], found: Sequence[Segment]) -> list[Segment]:
    """A chunk's segments with those a coverage pass found, in time order.
    Left out: the doubtful ones (a second look at speech Whisper skipped
    must be sure of itself) and text the chunk has already (its times had
    drifted off the speech, which only looked uncovered)."""
    said = f" {_plain(' '.join(segment.text for segment in segments))} "
    kept = [
        segment
        for segment in found
        if _plain(segment.text) and not doubt_flags(segment) and f" {_plain(segment.text)} " not in said
    ]
    return sorted([*segments, *kept], key=lambda segment: (segment.start_s, segment.end_s))


def _plain(text: str) -> str:
    """Words only: lower case, no punctuation, single spaces."""
    return " ".join("".join(char for char in text.lower() if char.isalnum() or char.isspace()).split())

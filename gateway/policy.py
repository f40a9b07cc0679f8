"""Plain decisions of a job's pipeline, apart from any I/O so each has its
own unit test: the word-timing method, how chunks are grouped into calls,
and how the last chunks are shared over the ASR workers."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from typing import TypeVar

from common.languages import primary_language
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


def tail_share(size: int, queued: int, workers: int, *, detection_done: bool) -> int:
    """Chunks for the next Transcribe call: `size` while detection runs;
    once it is done, the `queued` chunks left (the end-of-chunks mark among
    them) shared evenly over the ASR `workers`, so that none idles at the end
    while another decodes a full batch."""
    if not detection_done:
        return size
    left = max(1, queued - 1)
    return max(1, min(size, math.ceil(left / max(1, workers))))

"""faster-whisper's own speech detection, the reference the VAD engine is
checked (tests/unit/services/vad/test_engine.py) and timed (bench/vad_backends.py)
against: its `get_speech_timestamps` followed by the merge that
faster-whisper 1.1's `merge_segments` (WhisperX's `merge_chunks`) did, or
by faster-whisper 1.2's speech packing (`collect_chunks`)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from faster_whisper.vad import VadOptions as FasterWhisperVadOptions
from faster_whisper.vad import collect_chunks, get_speech_timestamps

from common.limits import SAMPLE_RATE_HERTZ
from services.vad.engine import VadOptions


def faster_whisper_chunks(audio: npt.NDArray[np.float32], options: VadOptions) -> list[tuple[int, int]]:
    """The chunks faster-whisper finds in 16 kHz `audio` with the engine's
    `options`, as (start, end) in samples."""
    return _merge_like_faster_whisper(
        _speech_timestamps(audio, options), round(options.max_chunk_duration_s * SAMPLE_RATE_HERTZ)
    )


def faster_whisper_packed_lengths(audio: npt.NDArray[np.float32], options: VadOptions) -> list[int]:
    """How many samples of speech each chunk holds when faster-whisper 1.2's
    batched pipeline packs the speech it finds in `audio` (`collect_chunks`)."""
    packed, _ = collect_chunks(audio, _speech_timestamps(audio, options), max_duration=options.max_chunk_duration_s)
    return [piece.shape[0] for piece in packed if piece.shape[0]]


def _speech_timestamps(audio: npt.NDArray[np.float32], options: VadOptions) -> list[dict[str, int]]:
    return get_speech_timestamps(
        audio,
        FasterWhisperVadOptions(
            threshold=options.threshold,
            min_speech_duration_ms=round(options.min_speech_duration_s * 1000),
            max_speech_duration_s=options.max_chunk_duration_s,
            min_silence_duration_ms=round(options.min_silence_duration_s * 1000),
            speech_pad_ms=round(options.speech_pad_s * 1000),
        ),
    )


def _merge_like_faster_whisper(timestamps: list[dict[str, int]], max_chunk_samples: int) -> list[tuple[int, int]]:
    """faster-whisper 1.1's `merge_segments` on speech timestamps in samples:
    consecutive regions are merged while the span from the first start to the
    last end stays within `max_chunk_samples`."""
    chunks: list[tuple[int, int]] = []
    if not timestamps:
        return chunks
    chunk_start, chunk_end = timestamps[0]["start"], 0
    for region in timestamps:
        if region["end"] - chunk_start > max_chunk_samples and chunk_end - chunk_start > 0:
            chunks.append((chunk_start, chunk_end))
            chunk_start = region["start"]
        chunk_end = region["end"]
    chunks.append((chunk_start, chunk_end))
    return chunks

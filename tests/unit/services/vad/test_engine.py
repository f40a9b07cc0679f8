"""The VAD engine on real speech (Asterisk prompts), against faster-whisper's
own speech timestamps and the merge its batched pipeline used."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from common.errors import InvalidInputError, NotFoundError
from common.limits import SAMPLE_RATE_HERTZ, VAD_FRAME_SAMPLES
from services.vad.engine import (
    MAX_PACKED_SPAN_S,
    DetectionProgress,
    SpeechChunk,
    SpeechDetector,
    VadOptions,
    bundled_model_path,
)
from tests.speech import LongRecording, build_long_recording, speech_available
from tests.vad_reference import faster_whisper_chunks, faster_whisper_packed_lengths

pytestmark = pytest.mark.skipif(not speech_available(), reason="asterisk-core-sounds-en-wav is not installed")

GAP_S = 2.0


@pytest.fixture(scope="module")
def detector() -> SpeechDetector:
    return SpeechDetector(bundled_model_path(), block_duration_s=10.0)


@pytest.fixture(scope="module")
def recording() -> LongRecording:
    """About 90 s of prompts with 2 s of silence around each."""
    return build_long_recording(90.0, gap_s=GAP_S)


def chunks_of(events: list[SpeechChunk | DetectionProgress]) -> list[SpeechChunk]:
    return [event for event in events if isinstance(event, SpeechChunk)]


def test_speech_is_found_where_it_is_and_not_in_the_gaps(detector: SpeechDetector, recording: LongRecording) -> None:
    chunks = detector.speech_chunks(recording.samples)
    speech = [speech for chunk in chunks for speech in chunk.speech_ranges]
    for utterance in recording.utterances:
        assert any(s.start_s < utterance.end_s and s.end_s > utterance.start_s for s in speech), utterance
    # The middle of every gap is 1 s away from any recording: more than the 0.4 s pad.
    for before, after in zip(recording.utterances, recording.utterances[1:], strict=False):
        middle_s = (before.end_s + after.start_s) / 2
        assert not any(s.start_s <= middle_s < s.end_s for s in speech), middle_s
    spoken_s = sum(u.end_s - u.start_s for u in recording.utterances)
    detected_s = sum(s.duration_s for s in speech)
    assert 0.5 * spoken_s < detected_s < 1.2 * spoken_s


@pytest.mark.parametrize("duration_s", [0.0, 0.01, 20.0])
def test_silence_and_empty_audio_yield_no_chunk(detector: SpeechDetector, duration_s: float) -> None:
    audio = np.zeros(round(duration_s * SAMPLE_RATE_HERTZ), dtype=np.float32)
    events = list(detector.detect(audio))
    assert chunks_of(events) == []
    assert events[-1] == DetectionProgress(audio.shape[0] / SAMPLE_RATE_HERTZ)


@pytest.mark.parametrize("max_chunk_duration_s", [3.0, 10.0, 30.0])
def test_chunks_are_ordered_and_never_longer_than_the_maximum(
    detector: SpeechDetector, recording: LongRecording, max_chunk_duration_s: float
) -> None:
    chunks = detector.speech_chunks(recording.samples, VadOptions(max_chunk_duration_s=max_chunk_duration_s))
    assert [chunk.index for chunk in chunks] == list(range(len(chunks)))
    assert len(chunks) >= recording.samples.shape[0] / SAMPLE_RATE_HERTZ / 30
    previous_end_s = 0.0
    for chunk in chunks:
        assert chunk.range.duration_s <= max_chunk_duration_s + 1e-9
        assert chunk.range.start_s == chunk.speech_ranges[0].start_s
        assert chunk.range.end_s == chunk.speech_ranges[-1].end_s
        for speech in chunk.speech_ranges:
            assert previous_end_s <= speech.start_s < speech.end_s
            previous_end_s = speech.end_s


@pytest.mark.parametrize(
    "options",
    [
        VadOptions(),
        VadOptions(max_chunk_duration_s=10.0, min_speech_duration_s=0.25),
        VadOptions(threshold=0.3, min_silence_duration_s=1.0, speech_pad_s=0.1, max_chunk_duration_s=3.0),
        VadOptions(threshold=0.7, speech_pad_s=0.0, max_chunk_duration_s=1.0),
    ],
    ids=["defaults", "10s-min-speech", "low-threshold-3s", "no-pad-1s"],
)
def test_same_chunks_as_faster_whisper(detector: SpeechDetector, recording: LongRecording, options: VadOptions) -> None:
    expected = faster_whisper_chunks(recording.samples, options)
    found = [
        (round(chunk.range.start_s * SAMPLE_RATE_HERTZ), round(chunk.range.end_s * SAMPLE_RATE_HERTZ))
        for chunk in detector.speech_chunks(recording.samples, options)
    ]
    assert len(found) == len(expected)
    for (start, end), (expected_start, expected_end) in zip(found, expected, strict=True):
        assert abs(start - expected_start) <= VAD_FRAME_SAMPLES
        assert abs(end - expected_end) <= VAD_FRAME_SAMPLES


@pytest.mark.parametrize("max_chunk_duration_s", [10.0, 30.0])
def test_packed_chunks_hold_the_speech_faster_whisper_packs(
    detector: SpeechDetector, recording: LongRecording, max_chunk_duration_s: float
) -> None:
    packed = VadOptions(max_chunk_duration_s=max_chunk_duration_s, pack_speech=True)
    chunks = detector.speech_chunks(recording.samples, packed)
    expected = faster_whisper_packed_lengths(recording.samples, packed)
    assert len(chunks) == len(expected)
    for chunk, expected_samples in zip(chunks, expected, strict=True):
        speech_samples = sum(
            round(speech.end_s * SAMPLE_RATE_HERTZ) - round(speech.start_s * SAMPLE_RATE_HERTZ)
            for speech in chunk.speech_ranges
        )
        assert speech_samples <= max_chunk_duration_s * SAMPLE_RATE_HERTZ
        assert abs(speech_samples - expected_samples) <= VAD_FRAME_SAMPLES * len(chunk.speech_ranges)
    # The same speech as merging, in fewer chunks that may span more than the maximum.
    merged = detector.speech_chunks(recording.samples, VadOptions(max_chunk_duration_s=max_chunk_duration_s))
    assert [s for c in chunks for s in c.speech_ranges] == [s for c in merged for s in c.speech_ranges]
    assert len(chunks) < len(merged)
    assert max(chunk.range.duration_s for chunk in chunks) > max_chunk_duration_s


def test_a_packed_chunk_of_sparse_speech_spans_at_most_a_minute_however_the_audio_is_fed() -> None:
    sparse = build_long_recording(150.0, gap_s=25.0)
    packed = VadOptions(pack_speech=True)
    whole = SpeechDetector(bundled_model_path(), block_duration_s=600.0).speech_chunks(sparse.samples, packed)
    assert len(whole) >= 3
    assert all(chunk.range.duration_s <= MAX_PACKED_SPAN_S for chunk in whole)
    assert any(len(chunk.speech_ranges) > 1 for chunk in whole)
    detection = SpeechDetector(bundled_model_path()).start(packed)
    streamed = [c for block in sparse_blocks(sparse.samples) for c in chunks_of(detection.feed(block))]
    streamed += chunks_of(detection.finish())
    assert [(c.range, c.speech_ranges) for c in streamed] == [(c.range, c.speech_ranges) for c in whole]


def sparse_blocks(samples: npt.NDArray[np.float32]) -> Iterator[npt.NDArray[np.float32]]:
    return (samples[start : start + 7_777] for start in range(0, samples.shape[0], 7_777))


def test_probabilities_equal_faster_whisper_one_shot(detector: SpeechDetector, recording: LongRecording) -> None:
    from faster_whisper.vad import get_vad_model

    audio = recording.samples[: 25 * SAMPLE_RATE_HERTZ]
    padded = np.pad(audio, (0, VAD_FRAME_SAMPLES - audio.shape[0] % VAD_FRAME_SAMPLES))
    expected = np.asarray(get_vad_model()(padded)).reshape(-1)
    np.testing.assert_allclose(detector.speech_probabilities(audio), expected, atol=1e-5)


def test_blocks_of_any_size_give_the_same_chunks(detector: SpeechDetector, recording: LongRecording) -> None:
    audio = recording.samples
    odd_blocks = (audio[start : start + 12_345] for start in range(0, audio.shape[0], 12_345))
    whole = SpeechDetector(bundled_model_path(), block_duration_s=600.0)
    expected = [(c.range, c.speech_ranges) for c in whole.speech_chunks(audio)]
    assert [(c.range, c.speech_ranges) for c in chunks_of(list(detector.detect_blocks(odd_blocks)))] == expected


def test_streams_the_first_chunk_long_before_the_end(detector: SpeechDetector, recording: LongRecording) -> None:
    audio = recording.samples
    duration_s = audio.shape[0] / SAMPLE_RATE_HERTZ
    block_samples = 5 * SAMPLE_RATE_HERTZ
    blocks_read = 0

    def blocks() -> Iterator[npt.NDArray[np.float32]]:
        nonlocal blocks_read
        for start in range(0, audio.shape[0], block_samples):
            blocks_read += 1
            yield audio[start : start + block_samples]

    events = detector.detect_blocks(blocks(), VadOptions(max_chunk_duration_s=10.0))
    first = next(event for event in events if isinstance(event, SpeechChunk))
    assert first.index == 0
    assert blocks_read * block_samples < audio.shape[0] / 3
    assert first.analysed_s < duration_s / 3
    rest = list(events)
    analysed = [first.analysed_s, *(event.analysed_s for event in rest)]
    assert analysed == sorted(analysed)
    assert analysed[-1] == duration_s
    assert any(isinstance(event, DetectionProgress) for event in rest)


@pytest.mark.parametrize(
    "fields",
    [
        {"threshold": 0.0},
        {"threshold": 1.0},
        {"threshold": math.nan},
        {"max_chunk_duration_s": 0.0},
        {"max_chunk_duration_s": 30.5},
        {"max_chunk_duration_s": math.inf},
        {"min_silence_duration_s": -0.1},
        {"speech_pad_s": -0.1},
        {"min_speech_duration_s": -1.0},
        {"speech_pad_s": 1.0, "max_chunk_duration_s": 2.0},
    ],
)
def test_bad_options_are_rejected(fields: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        VadOptions(**fields)


def test_multichannel_audio_is_rejected(detector: SpeechDetector) -> None:
    with pytest.raises(InvalidInputError):
        list(detector.detect(np.zeros((2, 16_000), dtype=np.float32)))


def test_missing_model_is_not_found(tmp_path: Path) -> None:
    detector = SpeechDetector(tmp_path / "missing.onnx")
    with pytest.raises(NotFoundError):
        detector.load()
    assert not detector.loaded


def test_the_calibration_times_a_minute_of_detection(detector: SpeechDetector) -> None:
    # Silero scores every frame alike: a minute takes about 0.1 s on one core.
    assert 0.0 < detector.calibrate() < 10.0
    assert detector.calibrate(1.0) < detector.calibrate(60.0)

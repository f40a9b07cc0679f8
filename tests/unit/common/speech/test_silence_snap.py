"""Word times snapped out of silence (common.speech.silence_snap): synthetic tone
bursts for the rules, real recorded words (tests/word_reference.py) with the
real tiny.en model for the accuracy it buys."""

from __future__ import annotations

import itertools
import math
import random
import statistics
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

import tests.word_reference
from common.errors import InvalidInputError
from common.speech.silence_snap import SAMPLE_RATE_HERTZ, SnapOptions, find_silences, snap_words_to_sound
from common.speech.whisper_models import EMBEDDED_TINY_EN, ModelCache, ModelLoadOptions
from common.transcript import Segment, Word
from services.asr.engine import Transcriber
from services.asr.options import TranscriptionOptions
from tests.word_reference import build_word_reference, raw_word_timestamps, start_errors_s, timed_tokens

# Where the chunk of the synthetic tests starts in the whole audio.
OFFSET_S = 10.0
TONE_HERTZ = 220.0
# Onsets and ends are found on 10 ms frames.
FRAME_TOLERANCE_S = 0.01


def bursts(
    spans_s: list[tuple[float, float]],
    duration_s: float,
    *,
    amplitude: float = 0.3,
    noise_amplitude: float = 0.0,
    seed: int = 0,
) -> npt.NDArray[np.float32]:
    """`duration_s` of 16 kHz audio: a tone during each (start, end) span
    (seconds from the chunk's start), silence (or white noise) elsewhere."""
    times_s = np.arange(round(duration_s * SAMPLE_RATE_HERTZ)) / SAMPLE_RATE_HERTZ
    samples = np.zeros(times_s.size)
    for start_s, end_s in spans_s:
        inside = (times_s >= start_s) & (times_s < end_s)
        samples[inside] = amplitude * np.sin(2 * np.pi * TONE_HERTZ * times_s[inside])
    if noise_amplitude:
        samples += np.random.default_rng(seed).normal(0.0, noise_amplitude, samples.size)
    return samples.astype(np.float32)


def segment_of(*spans_s: tuple[float, float], interpolated: bool = False) -> Segment:
    """One segment of words at (start, end) seconds from the chunk's start."""
    words = tuple(
        Word(f"w{index}", OFFSET_S + start_s, OFFSET_S + end_s, interpolated=interpolated)
        for index, (start_s, end_s) in enumerate(spans_s)
    )
    return Segment(" ".join(word.text for word in words), words[0].start_s, words[-1].end_s, words=words)


def words_of(segments: tuple[Segment, ...]) -> list[Word]:
    return [word for segment in segments for word in segment.words]


# One burst of sound from 1.0 s to 1.6 s of a 2.5 s chunk.
ONE_BURST = [(1.0, 1.6)]


@pytest.mark.parametrize(
    ("amplitude", "noise_amplitude"),
    [
        (0.3, 0.0),  # loud, digital silence around it
        (0.001, 0.0),  # a very quiet recording
        (0.3, 0.003),  # a noise floor 40 dB under the tone
        (0.001, 0.00001),  # quiet, with a floor 40 dB under it
    ],
)
def test_early_start_snaps_to_the_burst_onset(amplitude: float, noise_amplitude: float) -> None:
    samples = bursts(ONE_BURST, 2.5, amplitude=amplitude, noise_amplitude=noise_amplitude)
    (segment,) = snap_words_to_sound([segment_of((0.7, 1.3))], samples, OFFSET_S)
    (word,) = segment.words
    assert word.start_s == pytest.approx(OFFSET_S + 1.0, abs=FRAME_TOLERANCE_S)
    assert word.end_s == OFFSET_S + 1.3  # in sound, far from its end: left alone
    assert segment.start_s == word.start_s  # the segment follows its first word


def test_end_in_silence_snaps_back_to_where_the_sound_ends() -> None:
    samples = bursts(ONE_BURST, 2.5)
    (segment,) = snap_words_to_sound([segment_of((1.0, 1.9))], samples, OFFSET_S)
    (word,) = segment.words
    assert word.end_s == pytest.approx(OFFSET_S + 1.6, abs=FRAME_TOLERANCE_S)
    assert word.start_s == OFFSET_S + 1.0
    assert segment.end_s == word.end_s


def test_a_start_shortly_after_the_onset_takes_the_unclaimed_sound_before_it() -> None:
    samples = bursts(ONE_BURST, 2.5)
    snapped = snap_words_to_sound([segment_of((0.2, 0.5), (1.12, 1.6))], samples, OFFSET_S)
    assert words_of(snapped)[1].start_s == pytest.approx(OFFSET_S + 1.0, abs=FRAME_TOLERANCE_S)


def test_sound_an_earlier_word_claims_is_not_taken() -> None:
    samples = bursts(ONE_BURST, 2.5)
    # The first word ends inside the burst: the sound before 1.12 s is its.
    snapped = snap_words_to_sound([segment_of((0.95, 1.05), (1.12, 1.6))], samples, OFFSET_S)
    assert words_of(snapped)[1].start_s == OFFSET_S + 1.12


def test_a_shared_boundary_inside_sound_moves_to_the_silence_next_to_it() -> None:
    # Two words, one per burst, but the boundary Whisper gave them lies 0.1 s
    # before the first burst ends (the second word starts early).
    samples = bursts([(0.5, 1.0), (1.3, 1.8)], 2.5)
    first, second = words_of(snap_words_to_sound([segment_of((0.45, 0.9), (0.9, 1.8))], samples, OFFSET_S))
    assert first.end_s == pytest.approx(OFFSET_S + 1.0, abs=FRAME_TOLERANCE_S)
    assert second.start_s == pytest.approx(OFFSET_S + 1.3, abs=FRAME_TOLERANCE_S)


def test_moves_are_bounded() -> None:
    samples = bursts([(2.0, 2.5)], 3.0)
    options = SnapOptions(max_shift_s=0.5)
    # The onset is 1.5 s after the start: too far.
    (word,) = words_of(snap_words_to_sound([segment_of((0.5, 2.3))], samples, OFFSET_S, options))
    assert word.start_s == OFFSET_S + 0.5
    # Only out of silence, never into sound, with max_extend_s=0.
    options = SnapOptions(max_extend_s=0.0)
    (word,) = words_of(snap_words_to_sound([segment_of((2.1, 2.4))], samples, OFFSET_S, options))
    assert word.start_s == OFFSET_S + 2.1


@pytest.mark.parametrize(
    "samples",
    [
        bursts([(0.0, 3.0)], 3.0),  # a tone throughout
        bursts([], 3.0, noise_amplitude=0.1),  # noise throughout
        np.zeros(3 * SAMPLE_RATE_HERTZ, dtype=np.float32),  # digital silence
        np.zeros(0, dtype=np.float32),  # no samples
        np.zeros(10, dtype=np.float32),  # less than a frame
    ],
    ids=["tone", "noise", "silence", "empty", "short"],
)
def test_audio_without_silence_and_sound_changes_nothing(samples: npt.NDArray[np.float32]) -> None:
    segments = (segment_of((0.3, 1.0), (1.0, 1.4), (2.0, 2.9)),)
    assert snap_words_to_sound(segments, samples, OFFSET_S) == segments
    assert len(find_silences(samples, OFFSET_S).starts_s) == 0


def test_empty_input() -> None:
    samples = bursts(ONE_BURST, 2.5)
    assert snap_words_to_sound([], samples, OFFSET_S) == ()
    wordless = Segment("", OFFSET_S, OFFSET_S + 2.5)
    assert snap_words_to_sound([wordless], samples, OFFSET_S) == (wordless,)
    # A wordless segment among others is kept as it is, in its place.
    snapped = snap_words_to_sound([wordless, segment_of((0.7, 1.5))], samples, OFFSET_S)
    assert snapped[0] == wordless
    assert snapped[1].words[0].start_s == pytest.approx(OFFSET_S + 1.0, abs=FRAME_TOLERANCE_S)


def test_words_outside_the_samples_are_left_alone() -> None:
    samples = bursts(ONE_BURST, 2.5)
    outside = (segment_of((-3.0, -2.5), (3.0, 3.5)),)
    assert snap_words_to_sound(outside, samples, OFFSET_S) == outside


def test_interpolated_words_move_too() -> None:
    samples = bursts(ONE_BURST, 2.5)
    (word,) = words_of(snap_words_to_sound([segment_of((0.7, 1.9), interpolated=True)], samples, OFFSET_S))
    assert word.interpolated
    assert word.start_s == pytest.approx(OFFSET_S + 1.0, abs=FRAME_TOLERANCE_S)
    assert word.end_s == pytest.approx(OFFSET_S + 1.6, abs=FRAME_TOLERANCE_S)


def test_a_word_wholly_in_silence_never_passes_its_end() -> None:
    samples = bursts(ONE_BURST, 2.5)
    options = SnapOptions()
    (word,) = words_of(snap_words_to_sound([segment_of((0.3, 0.6))], samples, OFFSET_S, options))
    assert OFFSET_S + 0.3 <= word.start_s <= word.end_s <= OFFSET_S + 0.6
    assert word.end_s - word.start_s == pytest.approx(options.min_word_s)


def test_nan_samples_give_finite_times() -> None:
    samples = bursts(ONE_BURST, 2.5)
    samples[100:200] = np.nan
    samples[30_000] = np.inf
    snapped = snap_words_to_sound([segment_of((0.7, 1.5), (1.5, 1.9))], samples, OFFSET_S)
    assert all(math.isfinite(word.start_s) and math.isfinite(word.end_s) for word in words_of(snapped))
    assert words_of(snapped)[0].start_s == pytest.approx(OFFSET_S + 1.0, abs=FRAME_TOLERANCE_S)


def test_bad_input_is_refused() -> None:
    with pytest.raises(InvalidInputError):
        snap_words_to_sound([segment_of((0.7, 1.5))], np.zeros((2, 100), dtype=np.float32), OFFSET_S)
    with pytest.raises(InvalidInputError):
        snap_words_to_sound([segment_of((0.7, 1.5))], np.zeros(100, dtype=np.float32), math.nan)
    with pytest.raises(InvalidInputError):
        SnapOptions(frame_s=0.0)
    with pytest.raises(InvalidInputError):
        SnapOptions(quiet_percentile=99.0, loud_percentile=50.0)


@pytest.mark.parametrize("seed", range(20))
def test_words_keep_order_and_never_overlap(seed: int) -> None:
    draw = random.Random(seed)
    duration_s = 20.0
    spans, cursor_s = [], draw.uniform(0.0, 0.5)
    while cursor_s < duration_s - 0.5:
        length_s = draw.uniform(0.05, 0.8)
        spans.append((cursor_s, cursor_s + length_s))
        cursor_s += length_s + draw.uniform(0.02, 0.6)
    samples = bursts(spans, duration_s, noise_amplitude=draw.choice([0.0, 0.001]), seed=seed)
    segments = []
    cursor_s = draw.uniform(-0.1, 0.5)
    while cursor_s < duration_s:
        words = []
        for _ in range(draw.randint(1, 8)):
            length_s = draw.choice([0.0, draw.uniform(0.01, 1.0)])
            words.append((cursor_s, cursor_s + length_s))
            cursor_s += length_s + draw.choice([0.0, 0.0, draw.uniform(0.0, 0.5)])
        segments.append(segment_of(*words, interpolated=draw.random() < 0.2))
        cursor_s += draw.uniform(0.0, 1.0)
    options = SnapOptions()

    snapped = snap_words_to_sound(segments, samples, OFFSET_S, options)

    assert len(snapped) == len(segments)
    before, after = words_of(tuple(segments)), words_of(snapped)
    assert [word.text for word in after] == [word.text for word in before]
    for old, new in zip(before, after, strict=True):
        assert math.isfinite(new.start_s) and math.isfinite(new.end_s)
        assert new.start_s <= new.end_s
        assert abs(new.start_s - old.start_s) <= options.max_shift_s + 1e-9
        assert abs(new.end_s - old.end_s) <= options.max_shift_s + 1e-9
        assert new.interpolated == old.interpolated
    for previous, following in itertools.pairwise(after):
        assert previous.end_s <= following.start_s
    for old_segment, segment in zip(segments, snapped, strict=True):
        if segment.words[0].start_s != old_segment.words[0].start_s:
            assert segment.start_s == segment.words[0].start_s
        if segment.words[-1].end_s != old_segment.words[-1].end_s:
            assert segment.end_s == segment.words[-1].end_s
    for previous_segment, segment in itertools.pairwise(snapped):
        assert previous_segment.end_s <= segment.start_s


def test_snapping_is_fast() -> None:
    draw = random.Random(0)
    duration_s = 60.0
    spans = [(start_s, start_s + draw.uniform(0.2, 0.7)) for start_s in np.arange(0.2, duration_s - 1.0, 1.0)]
    samples = bursts(spans, duration_s, noise_amplitude=0.001)
    segments = [
        segment_of(*[(start_s - 0.2, end_s + 0.1) for start_s, end_s in spans[i : i + 10]])
        for i in range(0, len(spans), 10)
    ]
    best_s = math.inf
    for _ in range(5):
        started = time.perf_counter()
        snap_words_to_sound(segments, samples, OFFSET_S)
        best_s = min(best_s, time.perf_counter() - started)
    # Well under a millisecond per second of audio.
    assert best_s < 0.3e-3 * duration_s, f"{best_s * 1000:.2f} ms for {duration_s:.0f} s of audio"


def test_missing_recordings_say_how_to_install_them(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setitem(tests.word_reference.DIGIT_DIRS, "en", (tmp_path / "digits",))
    with pytest.raises(FileNotFoundError, match="make test-data"):
        build_word_reference("en", 5.0)


def test_reference_onsets_are_where_the_sound_of_each_word_begins() -> None:
    reference = build_word_reference("en", 10.0, seed=3)
    assert reference.duration_s >= 10.0
    for sentence in reference.sentences:
        assert 5 <= len(sentence.words) <= 10
        assert sentence.time_range.start_s < sentence.words[0].start_s
        assert sentence.words[-1].end_s < sentence.time_range.end_s
    silences = find_silences(reference.samples, 0.0)
    for word in reference.words:
        # Sound from its start on; digital silence just before it.
        start = round(word.start_s * SAMPLE_RATE_HERTZ)
        assert np.abs(reference.samples[start : start + 80]).max() > 1e-3
        assert silences.containing(word.start_s + FRAME_TOLERANCE_S) == -1
    assert build_word_reference("en", 10.0, seed=3).words == reference.words  # deterministic


@pytest.mark.slow
def test_snapping_brings_real_word_starts_within_50_ms() -> None:
    """tiny.en's cross-attention word starts on ~30 s of real recorded digits,
    against where each recording's sound begins: snapped, the median error is
    at most 50 ms, and smaller than Whisper's own."""
    reference = build_word_reference("en", 30.0, seed=0)
    transcriber = Transcriber(ModelCache(ModelLoadOptions(device="cpu", cpu_threads=1)))
    options = TranscriptionOptions(model=EMBEDDED_TINY_EN, word_timestamps=True, language_code="en")
    with raw_word_timestamps():
        chunks = list(
            transcriber.transcribe(
                reference.samples, [sentence.time_range for sentence in reference.sentences], options
            )
        )
    raw_errors_s, snapped_errors_s = [], []
    for sentence, chunk in zip(reference.sentences, chunks, strict=True):
        first = round(chunk.time_range.start_s * SAMPLE_RATE_HERTZ)
        stop = round(chunk.time_range.end_s * SAMPLE_RATE_HERTZ)
        snapped = snap_words_to_sound(chunk.segments, reference.samples[first:stop], first / SAMPLE_RATE_HERTZ)
        raw_errors_s += [error_s for error_s, _ in start_errors_s(sentence, timed_tokens(chunk.segments, "en"))]
        snapped_errors_s += [error_s for error_s, _ in start_errors_s(sentence, timed_tokens(snapped, "en"))]

    assert len(snapped_errors_s) >= 0.8 * len(reference.words), "too few words recognised to judge"
    raw_median_s = statistics.median(abs(error_s) for error_s in raw_errors_s)
    snapped_median_s = statistics.median(abs(error_s) for error_s in snapped_errors_s)
    print(f"median |start error|: {raw_median_s * 1000:.0f} ms raw, {snapped_median_s * 1000:.0f} ms snapped")
    assert snapped_median_s <= 0.050
    assert snapped_median_s < raw_median_s


def test_segment_bounds_follow_moved_words_only() -> None:
    samples = bursts(ONE_BURST, 2.5)
    segment = replace(segment_of((1.0, 1.6)), start_s=OFFSET_S + 0.8, end_s=OFFSET_S + 1.7)
    # The word is where the sound is: it does not move: the segment keeps its own bounds.
    assert snap_words_to_sound([segment], samples, OFFSET_S) == (segment,)

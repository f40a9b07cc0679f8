"""bench/media.py: the realistic bench recording, its cache and its clips."""

from __future__ import annotations

import itertools
from pathlib import Path

import numpy as np
import pytest

from bench.media import (
    MUSIC,
    NOISY_SPEECH,
    BenchMedia,
    MediaOptions,
    Passage,
    SpokenUtterance,
    build_realistic,
    cache_key,
    clip_samples,
    cut_clips,
    pink_noise,
    realistic_media,
    trim_silence,
)
from tests.speech import SAMPLE_RATE_HERTZ

needs_music = pytest.mark.skipif(
    not Path(MediaOptions().music_path).is_file(), reason="asterisk-moh-opsound-wav is not installed"
)


def _media(utterances: list[tuple[float, float, str]], duration_s: float) -> BenchMedia:
    spoken = tuple(SpokenUtterance(start_s, end_s, text, "test") for start_s, end_s, text in utterances)
    return BenchMedia(Path("x.wav"), Path("x.mp4"), duration_s, spoken, ())


def test_trim_silence_keeps_the_sound_and_a_little_either_side() -> None:
    sound = np.sin(np.arange(SAMPLE_RATE_HERTZ) / 5.0).astype(np.float32) * 0.5
    silence = np.zeros(SAMPLE_RATE_HERTZ // 2, dtype=np.float32)
    trimmed = trim_silence(np.concatenate([silence, sound, silence]))
    margin = trimmed.size - sound.size
    assert 0 < margin <= round(0.1 * SAMPLE_RATE_HERTZ)
    assert np.abs(trimmed).max() == pytest.approx(0.5, abs=1e-3)


def test_pink_noise_is_the_same_for_a_seed_and_louder_low() -> None:
    first = pink_noise(SAMPLE_RATE_HERTZ, np.random.default_rng(3))
    again = pink_noise(SAMPLE_RATE_HERTZ, np.random.default_rng(3))
    np.testing.assert_array_equal(first, again)
    assert float(np.sqrt(np.mean(first**2))) == pytest.approx(1.0, rel=1e-3)
    power = np.abs(np.fft.rfft(first)) ** 2
    frequencies = np.fft.rfftfreq(first.size, 1 / SAMPLE_RATE_HERTZ)
    low = power[(frequencies > 100) & (frequencies < 200)].mean()
    high = power[(frequencies > 4000) & (frequencies < 8000)].mean()
    assert low > 10 * high


def test_cache_key_follows_the_options() -> None:
    assert cache_key(MediaOptions()) == cache_key(MediaOptions())
    assert cache_key(MediaOptions(seed=8)) != cache_key(MediaOptions())
    assert cache_key(MediaOptions(noise_snr_db=10.0)) != cache_key(MediaOptions())


def test_clips_are_whole_utterances_cut_in_the_gaps() -> None:
    # Utterances of 3 s with 0.2 s between them, and a long pause (music) after the 10th.
    utterances = []
    start_s = 0.5
    for number in range(30):
        utterances.append((start_s, start_s + 3.0, f"word{number}"))
        start_s += 3.2 + (20.0 if number == 9 else 0.0)
    media = _media(utterances, start_s + 1.0)
    clips = cut_clips(media, 4, clip_s=15.0)
    assert len(clips) == 4
    for clip in clips:
        assert 9.0 <= clip.duration_s <= 21.0
        words = clip.reference_text.split()
        inside = [text for begin_s, end_s, text in utterances if clip.start_s <= begin_s and end_s <= clip.end_s]
        assert words == inside
        # Cut in the gaps: no utterance is cut through.
        for begin_s, end_s, _ in utterances:
            assert not begin_s < clip.start_s < end_s
            assert not begin_s < clip.end_s < end_s
        # Never across the long pause.
        assert not (clip.start_s < 30.5 and clip.end_s > 52.0)
    assert all(first.end_s <= second.start_s for first, second in itertools.pairwise(clips))
    with pytest.raises(ValueError, match="fewer than"):
        cut_clips(media, 40, clip_s=15.0)


def test_clip_samples_are_the_clip_span() -> None:
    samples = np.arange(10 * SAMPLE_RATE_HERTZ, dtype=np.float32)
    media = _media([(1.0, 4.0, "a"), (4.2, 8.0, "b")], 10.0)
    (clip,) = cut_clips(media, 1, clip_s=8.0)
    assert clip.reference_text == "a b"
    assert clip_samples(samples, clip).size == round(clip.duration_s * SAMPLE_RATE_HERTZ)


SMALL = MediaOptions(
    speech_s=40.0,
    stretch_min_s=8.0,
    stretch_max_s=12.0,
    music_s=3.0,
    music_after_stretch=1,
    noisy_stretch=2,
    noisy_s=8.0,
)


@pytest.mark.slow
@needs_music
def test_a_small_recording_is_laid_out_as_told() -> None:
    samples, utterances, passages = build_realistic(SMALL)
    duration_s = samples.size / SAMPLE_RATE_HERTZ
    assert np.abs(samples).max() <= 1.0
    assert [passage.kind for passage in passages][:4] == ["speech", MUSIC, "speech", NOISY_SPEECH]
    assert all(first.end_s <= second.start_s for first, second in itertools.pairwise(passages))
    assert passages[-1].end_s <= duration_s
    speech_s = sum(utterance.end_s - utterance.start_s for utterance in utterances)
    assert speech_s >= 0.8 * SMALL.speech_s
    for first, second in itertools.pairwise(utterances):
        assert first.end_s <= second.start_s
    music = passages[1]
    assert not [
        utterance for utterance in utterances if music.start_s < utterance.end_s and utterance.start_s < music.end_s
    ]
    noisy = passages[3]
    assert all(utterance.noisy == (noisy.start_s < utterance.start_s < noisy.end_s) for utterance in utterances)
    # Within a voice's stretch, utterances follow each other after short gaps.
    inner_gaps = [
        second.start_s - first.end_s
        for first, second in itertools.pairwise(utterances)
        if any(p.start_s <= first.start_s and second.end_s <= p.end_s for p in passages)
    ]
    assert inner_gaps and max(inner_gaps) <= SMALL.gap_max_s + 1e-3


@pytest.mark.slow
@needs_music
def test_the_recording_is_built_once_and_then_read_from_the_cache(tmp_path: Path) -> None:
    media = realistic_media(SMALL, tmp_path)
    assert media.wav_path.is_file() and media.mp4_path.is_file()
    assert media.reference_text
    built_ns = media.wav_path.stat().st_mtime_ns
    again = realistic_media(SMALL, tmp_path)
    assert again == media
    assert media.wav_path.stat().st_mtime_ns == built_ns
    assert media.samples().size == pytest.approx(media.duration_s * SAMPLE_RATE_HERTZ, abs=2)
    assert isinstance(media.passages[0], Passage)


def test_of_length_scales_the_layout_and_keeps_the_defaults_at_ten_minutes() -> None:
    assert cache_key(MediaOptions.of_length(600)) == cache_key(MediaOptions())
    short = MediaOptions.of_length(120.0)
    assert (short.stretch_min_s, short.stretch_max_s, short.noisy_s) == (12.0, 24.0, 12.0)
    assert short.music_s == MediaOptions().music_s

"""Self-test of tests/speech.py: the prompts, the long recording and the PyAV writers."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from tests.media import dominant_frequency_hertz, tone
from tests.speech import (
    ASTERISK_SOUNDS_DIR,
    SAMPLE_RATE_HERTZ,
    Prompt,
    build_long_recording,
    clear_prompts,
    find_prompts,
    is_clearly_transcribed,
    load_pcm16k,
    read_transcripts,
    speech_available,
    write_audio,
    write_wav,
    write_with_video,
)

needs_speech = pytest.mark.skipif(not speech_available(), reason="asterisk-core-sounds-en-wav is not installed")


@needs_speech
def test_transcripts_include_prompts_in_subfolders() -> None:
    transcripts = read_transcripts()
    assert transcripts["hello-world"] == "Hello world."
    assert transcripts["digits/1"] == "one"
    assert not any(name.startswith(";") for name in transcripts)
    assert any(prompt.name == "digits/1" for prompt in find_prompts())


@needs_speech
def test_clear_prompts_are_plain_sentences_with_files() -> None:
    prompts = clear_prompts()
    assert len(prompts) >= 100
    assert any("/" in prompt.name for prompt in prompts)
    for prompt in prompts:
        assert prompt.path.is_file()
        assert not any(mark in prompt.text for mark in "[]()<>*#")
    names = {prompt.name for prompt in prompts}
    assert "tt-monkeys" not in names  # "[sound of monkeys screaming]"
    assert "queue-periodic-announce" not in names  # a typo in its transcript


def test_clearly_transcribed_rules() -> None:
    path = Path("x.wav")
    assert is_clearly_transcribed(Prompt("a", path, "Please enter your password now."))
    assert not is_clearly_transcribed(Prompt("a", path, "Goodbye."))
    assert not is_clearly_transcribed(Prompt("a", path, "[this is a simple beep tone]"))
    assert not is_clearly_transcribed(Prompt("a", path, "press * to toggle pause please"))
    assert not is_clearly_transcribed(Prompt("a", path, "... letters of your party's last name."))


@needs_speech
def test_load_pcm16k_resamples_telephone_audio() -> None:
    path = ASTERISK_SOUNDS_DIR / "hello-world.wav"
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        source_samples = sum(frame.samples for frame in container.decode(stream))
        source_rate_hertz = stream.rate
    samples = load_pcm16k(path)
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert samples.size == pytest.approx(source_samples * SAMPLE_RATE_HERTZ / source_rate_hertz, abs=64)
    assert 0.01 < np.abs(samples).max() <= 1.0


@needs_speech
def test_long_recording_repeats_prompts_with_silence_between() -> None:
    prompts = [prompt for prompt in find_prompts() if prompt.name in {"hello-world", "vm-goodbye"}]
    assert len(prompts) == 2
    recording = build_long_recording(min_duration_s=12.0, gap_s=0.5, prompts=prompts)
    assert recording.samples.size >= 12.0 * SAMPLE_RATE_HERTZ
    assert recording.samples.dtype == np.float32
    assert len(recording.utterances) > len(prompts)  # went round again
    assert recording.reference_text == " ".join(utterance.text for utterance in recording.utterances)
    previous_end_s = 0.0
    for utterance in recording.utterances:
        assert utterance.start_s - previous_end_s == pytest.approx(0.5)
        gap = recording.samples[
            round(previous_end_s * SAMPLE_RATE_HERTZ) : round(utterance.start_s * SAMPLE_RATE_HERTZ)
        ]
        assert not gap.any()
        assert utterance.end_s > utterance.start_s
        previous_end_s = utterance.end_s
    assert recording.samples.size / SAMPLE_RATE_HERTZ == pytest.approx(previous_end_s + 0.5)


@needs_speech
def test_long_recording_can_be_shuffled() -> None:
    prompts = clear_prompts()[:6]
    in_order = build_long_recording(1.0, prompts=prompts)
    shuffled = build_long_recording(1.0, prompts=prompts, shuffle_seed=1)
    assert in_order.utterances[0].text == prompts[0].text
    assert len(shuffled.utterances) == 1


def test_wav_round_trip(tmp_path: Path) -> None:
    samples = tone(SAMPLE_RATE_HERTZ, 1.0)
    path = write_wav(tmp_path / "tone.wav", samples, SAMPLE_RATE_HERTZ)
    decoded = load_pcm16k(path)
    np.testing.assert_allclose(decoded, samples, atol=1 / 16_000)
    assert load_pcm16k(write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32))).size == 0


def test_wav_at_another_rate(tmp_path: Path) -> None:
    samples = tone(8000, 1.0)
    decoded = load_pcm16k(write_wav(tmp_path / "tone8k.wav", samples, 8000))
    assert decoded.size == pytest.approx(16_000, abs=32)
    assert dominant_frequency_hertz(decoded, SAMPLE_RATE_HERTZ) == pytest.approx(440, abs=5)


@pytest.mark.parametrize(
    ("file_name", "container_format", "codec", "sample_rate_hertz", "channel_count"),
    [
        ("a.mkv", "mkv", "libopus", 48_000, 2),
        ("a.webm", "webm", "libopus", 48_000, 1),
        ("a.mp3", "mp3", "libmp3lame", 44_100, 2),
        ("a.m4a", "m4a", "aac", 22_050, 1),
        ("a.flac", "flac", "flac", 16_000, 1),
        ("a.ogg", "ogg", "libopus", 48_000, 1),
    ],
)
def test_audio_formats_round_trip(
    tmp_path: Path, file_name: str, container_format: str, codec: str, sample_rate_hertz: int, channel_count: int
) -> None:
    samples = tone(SAMPLE_RATE_HERTZ, 1.0)
    path = write_audio(tmp_path / file_name, samples, container_format, codec, sample_rate_hertz, channel_count)
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        assert stream.rate == sample_rate_hertz
        assert stream.channels == channel_count
    decoded = load_pcm16k(path)
    # Lossy encoders pad the start and end by a few tens of milliseconds.
    assert decoded.size / SAMPLE_RATE_HERTZ == pytest.approx(1.0, abs=0.08)
    assert dominant_frequency_hertz(decoded, SAMPLE_RATE_HERTZ) == pytest.approx(440, abs=5)
    if codec == "flac":
        np.testing.assert_allclose(decoded, samples, atol=1 / 16_000)


def test_unsupported_channel_count(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="channel count"):
        write_audio(tmp_path / "a.flac", tone(SAMPLE_RATE_HERTZ, 1.0), "flac", "flac", 16_000, 3)


def test_mp4_has_video_and_aac_audio(tmp_path: Path) -> None:
    samples = tone(SAMPLE_RATE_HERTZ, 2.5)
    path = write_with_video(tmp_path / "clip.mp4", samples, audio_channel_count=2)
    with av.open(str(path)) as container:
        assert container.streams.video[0].codec_context.name in {"h264", "mpeg4"}
        assert container.streams.audio[0].codec_context.name == "aac"
        assert container.streams.audio[0].channels == 2
        frames = list(container.decode(video=0))
    assert len(frames) == 25
    assert frames[0].width == 64 and frames[0].height == 48
    decoded = load_pcm16k(path)
    assert decoded.size / SAMPLE_RATE_HERTZ == pytest.approx(2.5, abs=0.08)
    assert dominant_frequency_hertz(decoded, SAMPLE_RATE_HERTZ) == pytest.approx(440, abs=5)

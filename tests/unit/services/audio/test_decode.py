"""Decoding every container/codec the suite accepts into 16 kHz mono float32,
and the errors for what it does not accept."""

from __future__ import annotations

import os
import threading
import wave
from pathlib import Path

import numpy as np
import pytest

from common.errors import CancelledError, InvalidInputError, NotFoundError, ResourceExhaustedError
from common.limits import SAMPLE_RATE_HERTZ
from services.audio import decode as decode_module
from services.audio.decode import DecodeOptions, decode_file
from tests.media import (
    MEDIA_SPECS,
    TONE_AMPLITUDE,
    TONE_DURATION_S,
    TONE_FREQUENCY_HERTZ,
    MediaSpec,
    dominant_frequency_hertz,
    write_media,
)
from tests.speech import asterisk_recording, write_video_only, write_wav

# Encoders pad the last frame (AAC to 1024 source samples, about 46 ms at
# 22.05 kHz); no decoder may lose audio.
LENGTH_SLACK_S = 0.05
CONTAINER_NAMES = {
    "mp4": "mov,mp4,m4a,3gp,3g2,mj2",
    "ipod": "mov,mp4,m4a,3gp,3g2,mj2",
    "matroska": "matroska,webm",
    "webm": "matroska,webm",
}


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("media")
    for spec in MEDIA_SPECS:
        write_media(directory / spec.file_name, spec)
    return directory


@pytest.mark.parametrize("spec", MEDIA_SPECS, ids=[spec.file_name for spec in MEDIA_SPECS])
def test_every_format_decodes_to_16k_mono_float32(media_dir: Path, spec: MediaSpec) -> None:
    decoded = decode_file(media_dir / spec.file_name)
    samples = decoded.samples()
    assert decoded.sample_rate_hertz == SAMPLE_RATE_HERTZ
    assert samples.dtype == np.float32 and samples.ndim == 1
    assert decoded.sample_count == samples.size == sum(chunk.size for chunk in decoded.chunks)
    expected = TONE_DURATION_S * SAMPLE_RATE_HERTZ
    assert expected - 1 <= samples.size <= expected + LENGTH_SLACK_S * SAMPLE_RATE_HERTZ
    assert abs(dominant_frequency_hertz(samples, SAMPLE_RATE_HERTZ) - TONE_FREQUENCY_HERTZ) < 2
    # The channels carry the same tone: the normalised down-mix keeps its level.
    peak = float(np.abs(samples).max())
    assert TONE_AMPLITUDE * 0.85 < peak < TONE_AMPLITUDE * 1.2
    source = decoded.source
    assert source.container_format == CONTAINER_NAMES.get(spec.container_format, spec.container_format)
    assert source.source_sample_rate_hertz == spec.sample_rate_hertz
    assert source.source_channel_count == spec.channel_count
    assert source.size_bytes == (media_dir / spec.file_name).stat().st_size
    assert source.codec
    assert decoded.decode_duration_s > 0


def test_codec_names_are_ffmpeg_decoder_names(media_dir: Path) -> None:
    assert decode_file(media_dir / "video.mp4").source.codec == "aac"
    assert decode_file(media_dir / "audio.ogg").source.codec == "opus"
    assert decode_file(media_dir / "telephone.wav").source.codec == "pcm_mulaw"
    assert decode_file(media_dir / "audio.flac").source.codec == "flac"


def test_audio_starts_at_the_start(media_dir: Path) -> None:
    """No decoder delay shifts the audio (subtitles would drift)."""
    samples = decode_file(media_dir / "video.mp4").samples()
    reference = np.sin(2 * np.pi * TONE_FREQUENCY_HERTZ * np.arange(8000) / SAMPLE_RATE_HERTZ)
    lags = [float(np.dot(samples[lag : lag + 8000], reference)) for lag in range(0, 80)]
    assert int(np.argmax(lags)) <= 2


def test_real_telephone_recording() -> None:
    path = asterisk_recording("tt-monkeys")
    if path is None:
        pytest.skip("asterisk-core-sounds-en-wav is not installed (make test-data)")
    decoded = decode_file(path)
    assert decoded.source.source_sample_rate_hertz == 8000
    assert decoded.source.source_channel_count == 1
    with wave.open(str(path)) as source:
        expected = source.getnframes() * 2
    assert abs(decoded.sample_count - expected) <= 2
    assert float(np.abs(decoded.samples()).max()) > 0.05


def test_zero_length_audio_is_valid(tmp_path: Path) -> None:
    decoded = decode_file(write_wav(tmp_path / "empty.wav", np.zeros(0, dtype=np.float32), 16_000))
    assert decoded.sample_count == 0
    assert decoded.samples().shape == (0,)
    assert decoded.duration_s == 0.0


def test_missing_file_is_not_found(tmp_path: Path) -> None:
    with pytest.raises(NotFoundError, match="no such file"):
        decode_file(tmp_path / "missing.mp4")


def test_directory_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="not a regular file"):
        decode_file(tmp_path)


def test_random_bytes_are_invalid_with_ffmpeg_reason(tmp_path: Path) -> None:
    path = tmp_path / "noise.mp3"
    path.write_bytes(np.random.default_rng(1).bytes(20_000))
    with pytest.raises(InvalidInputError, match="Invalid data found"):
        decode_file(path)


def test_empty_file_is_invalid(tmp_path: Path) -> None:
    path = tmp_path / "nothing.wav"
    path.write_bytes(b"")
    with pytest.raises(InvalidInputError, match="not a readable media file"):
        decode_file(path)


def test_video_without_audio_is_invalid(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match=r"no audio stream \(found video \(h264\)\)"):
        decode_file(write_video_only(tmp_path / "silent-film.mp4"))


def test_mp4_cut_before_its_index_is_invalid(media_dir: Path, tmp_path: Path) -> None:
    whole = (media_dir / "video.mp4").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(InvalidInputError, match=r"cut\.mp4 is not a readable media file"):
        decode_file(path)


def test_wav_cut_midway_keeps_what_is_there(media_dir: Path, tmp_path: Path) -> None:
    whole = (media_dir / "audio.wav").read_bytes()
    path = tmp_path / "cut.wav"
    path.write_bytes(whole[: 16_000 * 2 // 2])  # header + a bit under 0.5 s
    decoded = decode_file(path)
    assert 7900 < decoded.sample_count < 8000


def test_mp3_with_damaged_frames_decodes_the_rest(media_dir: Path, tmp_path: Path) -> None:
    damaged = bytearray((media_dir / "audio.mp3").read_bytes())
    damaged[4000:8000] = np.random.default_rng(2).bytes(4000)
    path = tmp_path / "damaged.mp3"
    path.write_bytes(bytes(damaged))
    decoded = decode_file(path)
    assert decoded.sample_count > 0.5 * TONE_DURATION_S * SAMPLE_RATE_HERTZ


def test_display_name_is_used_in_messages(tmp_path: Path) -> None:
    path = tmp_path / "upload-1234.bin"
    path.write_bytes(b"not media at all" * 100)
    with pytest.raises(InvalidInputError, match=r"^lecture\.mp4 "):
        decode_file(path, display_name="lecture.mp4")


def test_over_max_duration_by_header_fails_before_decoding(tmp_path: Path) -> None:
    path = write_wav(tmp_path / "long.wav", np.zeros(16_000 * 30, dtype=np.float32), 16_000)
    with pytest.raises(ResourceExhaustedError, match=r"30\.0 s long.*maximum duration.* 10 s") as raised:
        decode_file(path, DecodeOptions(max_duration_s=10))
    assert raised.value.retry_after_s is None


def test_over_max_duration_by_decoded_samples(tmp_path: Path) -> None:
    # Within the header tolerance, so the decoded samples decide.
    path = write_wav(tmp_path / "a-bit-long.wav", np.zeros(16_000 * 10, dtype=np.float32), 16_000)
    with pytest.raises(ResourceExhaustedError, match=r"longer than the limit.* 9\.9 s"):
        decode_file(path, DecodeOptions(max_duration_s=9.9))
    assert decode_file(path, DecodeOptions(max_duration_s=10)).sample_count == 160_000


def test_cancel_event_stops_decoding(media_dir: Path) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(CancelledError):
        decode_file(media_dir / "audio.flac", cancel_event=cancel)


def test_long_audio_is_held_in_few_large_blocks(tmp_path: Path) -> None:
    """Frames of a few hundred samples are gathered into 2**18-sample blocks."""
    path = write_wav(tmp_path / "forty.wav", np.full(16_000 * 40, 0.25, dtype=np.float32), 16_000)
    decoded = decode_file(path)
    assert decoded.sample_count == 640_000
    assert [chunk.size for chunk in decoded.chunks] == [262_144, 262_144, 115_712]
    assert np.allclose(decoded.samples(), 0.25, atol=1e-4)


@pytest.mark.parametrize("through_ffmpeg", [False, True])
def test_a_sink_takes_the_blocks_as_they_come(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, through_ffmpeg: bool
) -> None:
    """Read directly (a 16 kHz WAV) or by FFmpeg, the samples go to the sink
    block by block, in one reused array, and are not kept."""
    samples = np.linspace(-0.5, 0.5, 16_000 * 40, dtype=np.float32)
    path = write_wav(tmp_path / "forty.wav", samples, 16_000)
    if through_ffmpeg:
        monkeypatch.setattr(decode_module, "_decode_plain_wav", lambda *arguments: None)
    taken: list[np.ndarray] = []
    arrays: set[int] = set()

    def sink(block: np.ndarray) -> None:
        arrays.add(id(block.base if block.base is not None else block))
        taken.append(block.copy())

    decoded = decode_file(path, sink=sink)
    assert decoded.chunks == () and decoded.sample_count == samples.size
    assert [block.size for block in taken] == [262_144, 262_144, 115_712]
    assert len(arrays) == 1
    assert np.allclose(np.concatenate(taken), samples, atol=1e-4)


@pytest.mark.skipif(not os.access("/dev/null", os.R_OK), reason="no /dev/null")
def test_device_files_are_refused() -> None:
    with pytest.raises(InvalidInputError, match="not a regular file"):
        decode_file(Path("/dev/null"))


@pytest.fixture
def outside_and_root(tmp_path: Path) -> tuple[Path, Path]:
    """A media root and, beside it (outside it), a real recording."""
    root, outside = tmp_path / "root", tmp_path / "outside"
    root.mkdir()
    outside.mkdir()
    samples = (0.3 * np.sin(np.arange(16_000, dtype=np.float32) / 5)).astype(np.float32)
    write_wav(outside / "secret.wav", samples)
    write_media(outside / "secret.m4a", next(spec for spec in MEDIA_SPECS if spec.container_format == "ipod"))
    return root, outside


@pytest.mark.parametrize(
    "segment",
    ["file:{outside}/secret.wav", "../outside/secret.m4a", "{outside}/secret.wav", "list.m3u8"],
    ids=["file-protocol", "relative-escape", "absolute", "itself"],
)
def test_playlists_are_refused(outside_and_root: tuple[Path, Path], segment: str) -> None:
    root, outside = outside_and_root
    playlist = root / "list.m3u8"
    playlist.write_text(
        "#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:1.0,\n" + segment.format(outside=outside) + "\n#EXT-X-ENDLIST\n"
    )
    with pytest.raises(InvalidInputError, match="playlist"):
        decode_file(playlist)


def test_concat_lists_are_refused(outside_and_root: tuple[Path, Path]) -> None:
    root, outside = outside_and_root
    listing = root / "list.txt"
    listing.write_text(f"ffconcat version 1.0\nfile '{outside / 'secret.wav'}'\n")
    with pytest.raises(InvalidInputError):
        decode_file(listing)


def test_non_finite_samples_are_made_silent(tmp_path: Path) -> None:
    samples = np.full(16_000, 0.25, dtype=np.float32)
    samples[100:200] = np.nan
    samples[300] = np.inf
    path = tmp_path / "nan.wav"
    import av

    with av.open(str(path), mode="w", format="wav") as output:
        stream = output.add_stream("pcm_f32le", rate=16_000, layout="mono")
        frame = av.AudioFrame.from_ndarray(samples.reshape(1, -1), format="flt", layout="mono")
        frame.sample_rate = 16_000
        for packet in stream.encode(frame):
            output.mux(packet)
        for packet in stream.encode(None):
            output.mux(packet)
    decoded = decode_file(path).samples()
    assert np.isfinite(decoded).all()
    assert decoded.size == 16_000 and np.count_nonzero(decoded == 0.0) >= 101


def test_a_16k_mono_pcm_wav_is_read_directly_with_ffmpegs_values(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    samples = np.random.default_rng(3).uniform(-1.0, 1.0, 16_000 * 40).astype(np.float32)
    path = write_wav(tmp_path / "speech.wav", samples, 16_000)
    direct = decode_file(path)
    assert decode_module._decode_plain_wav(path, path.name, path.stat().st_size, DecodeOptions(), None, 0.0)
    # The same file through FFmpeg.
    monkeypatch.setattr(decode_module, "_decode_plain_wav", lambda *arguments: None)
    through_ffmpeg = decode_file(path)
    assert direct.source == through_ffmpeg.source
    assert [chunk.size for chunk in direct.chunks] == [chunk.size for chunk in through_ffmpeg.chunks]
    assert np.array_equal(direct.samples(), through_ffmpeg.samples())


def test_other_wavs_still_go_through_ffmpeg(tmp_path: Path) -> None:
    eight_k = write_wav(tmp_path / "phone.wav", np.zeros(8_000, dtype=np.float32), 8_000)
    assert decode_file(eight_k).source.source_sample_rate_hertz == 8_000
    assert decode_file(eight_k).sample_count == 16_000

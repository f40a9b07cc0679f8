"""The container/codec table of the decoder tests, and the tone they decode.

Every file holds a 440 Hz tone of `TONE_DURATION_S` seconds, the same on every
channel, so a decoded file can be checked for its length and its pitch. The
files are written by the PyAV writers of `tests.speech`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from tests.speech import write_audio, write_with_video

TONE_FREQUENCY_HERTZ = 440.0
TONE_AMPLITUDE = 0.5
TONE_DURATION_S = 1.5


@dataclass(frozen=True)
class MediaSpec:
    """One kind of file to write."""

    file_name: str
    # PyAV muxer and encoder names, as `tests.speech.write_audio` takes them.
    container_format: str
    audio_codec: str
    sample_rate_hertz: int
    channel_count: int
    # Whether the file also has a (small, moving) picture track.
    with_video: bool = False


# Every container/codec pair the audio service must decode.
MEDIA_SPECS: tuple[MediaSpec, ...] = (
    MediaSpec("video.mp4", "mp4", "aac", 44_100, 2, with_video=True),
    MediaSpec("video.mkv", "matroska", "libopus", 48_000, 2, with_video=True),
    MediaSpec("audio.webm", "webm", "libopus", 48_000, 2),
    MediaSpec("audio.mp3", "mp3", "libmp3lame", 44_100, 2),
    MediaSpec("audio.m4a", "ipod", "aac", 22_050, 1),
    MediaSpec("audio.flac", "flac", "flac", 48_000, 2),
    MediaSpec("audio.ogg", "ogg", "libopus", 48_000, 1),
    MediaSpec("audio.wav", "wav", "pcm_s16le", 16_000, 1),
    MediaSpec("telephone.wav", "wav", "pcm_mulaw", 8_000, 1),
    MediaSpec("surround.wav", "wav", "pcm_s16le", 48_000, 6),
)


def tone(sample_rate_hertz: int, duration_s: float = TONE_DURATION_S) -> npt.NDArray[np.float32]:
    """The test tone at `sample_rate_hertz`."""
    times_s = np.arange(round(sample_rate_hertz * duration_s)) / sample_rate_hertz
    return (TONE_AMPLITUDE * np.sin(2 * np.pi * TONE_FREQUENCY_HERTZ * times_s)).astype(np.float32)


def write_media(path: Path, spec: MediaSpec, duration_s: float = TONE_DURATION_S) -> Path:
    """Write the tone, at the spec's own rate (no resampling), as `spec` says to `path`."""
    samples = tone(spec.sample_rate_hertz, duration_s)
    if spec.with_video:
        return write_with_video(
            path,
            samples,
            container_format=spec.container_format,
            audio_codec=spec.audio_codec,
            input_sample_rate_hertz=spec.sample_rate_hertz,
            audio_sample_rate_hertz=spec.sample_rate_hertz,
            audio_channel_count=spec.channel_count,
        )
    return write_audio(
        path,
        samples,
        spec.container_format,
        spec.audio_codec,
        spec.sample_rate_hertz,
        spec.channel_count,
        input_sample_rate_hertz=spec.sample_rate_hertz,
    )


def dominant_frequency_hertz(samples: npt.NDArray[np.float32], sample_rate_hertz: int) -> float:
    """The strongest frequency of `samples`."""
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(samples.size)))
    return float(np.fft.rfftfreq(samples.size, 1 / sample_rate_hertz)[int(np.argmax(spectrum))])

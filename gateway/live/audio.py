"""A live stream's audio bytes to the suite's 16 kHz mono float32.

Clients send PCM in their own format (16-bit or float, any rate, interleaved
channels). Each message must hold whole frames (one sample of every channel),
so a client bug shows at the message that has it. Resampling is soxr's
streaming resampler: its state carries across messages, so the output is the
same however the client cuts its audio.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import soxr

from common.audio.pcm import float32_samples
from common.errors import InvalidInputError
from common.limits import SAMPLE_RATE_HERTZ
from subtitler.gateway.v1 import gateway_pb2

MIN_SAMPLE_RATE_HERTZ = 8_000
MAX_SAMPLE_RATE_HERTZ = 192_000
MAX_CHANNELS = 8

_SAMPLE_BYTES: dict[int, int] = {gateway_pb2.AUDIO_ENCODING_LINEAR16: 2, gateway_pb2.AUDIO_ENCODING_FLOAT32: 4}
_ENCODING_NAMES: dict[int, str] = {
    gateway_pb2.AUDIO_ENCODING_LINEAR16: "LINEAR16",
    gateway_pb2.AUDIO_ENCODING_FLOAT32: "FLOAT32",
}

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True)
class AudioFormat:
    """What a client's audio bytes are."""

    encoding: int
    sample_rate_hertz: int
    channel_count: int

    @classmethod
    def from_config(cls, config: gateway_pb2.StreamingConfig) -> AudioFormat:
        """The format of a StreamingConfig; `InvalidInputError` for one the suite cannot read."""
        if config.encoding not in _SAMPLE_BYTES:
            raise InvalidInputError(
                "the audio encoding is not set: use LINEAR16 (16-bit signed little-endian) or FLOAT32"
            )
        if not MIN_SAMPLE_RATE_HERTZ <= config.sample_rate_hertz <= MAX_SAMPLE_RATE_HERTZ:
            raise InvalidInputError(
                f"sample_rate_hertz {config.sample_rate_hertz} must be between {MIN_SAMPLE_RATE_HERTZ} and "
                f"{MAX_SAMPLE_RATE_HERTZ}"
            )
        channels = config.channel_count or 1
        if not 1 <= channels <= MAX_CHANNELS:
            raise InvalidInputError(f"channel_count {config.channel_count} must be between 1 and {MAX_CHANNELS}")
        return cls(config.encoding, config.sample_rate_hertz, channels)

    @property
    def frame_bytes(self) -> int:
        """Bytes of one sample of every channel."""
        return _SAMPLE_BYTES[self.encoding] * self.channel_count

    def describe(self) -> str:
        return f"{_ENCODING_NAMES[self.encoding]} at {self.sample_rate_hertz} Hz, {self.channel_count} channel(s)"


class AudioConverter:
    """Converts one stream's messages, in order, to 16 kHz mono float32."""

    def __init__(self, audio_format: AudioFormat) -> None:
        self.format = audio_format
        self._resampler = (
            soxr.ResampleStream(audio_format.sample_rate_hertz, SAMPLE_RATE_HERTZ, 1, dtype="float32", quality="HQ")
            if audio_format.sample_rate_hertz != SAMPLE_RATE_HERTZ
            else None
        )
        # Input frames received, for the stream's clock.
        self.frames_received = 0

    @property
    def received_s(self) -> float:
        return self.frames_received / self.format.sample_rate_hertz

    def convert(self, data: bytes) -> Samples:
        """The 16 kHz samples of the next message (fewer or more than its
        frames while the resampler fills); `InvalidInputError` if it does not
        hold whole frames."""
        if len(data) % self.format.frame_bytes:
            raise InvalidInputError(
                f"an audio message of {len(data)} bytes does not hold whole frames of {self.format.describe()} "
                f"({self.format.frame_bytes} bytes a frame)"
            )
        if self.format.encoding == gateway_pb2.AUDIO_ENCODING_LINEAR16:
            samples = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        else:
            samples = float32_samples(data)
            np.clip(samples, -1.0, 1.0, out=samples)
        if self.format.channel_count > 1:
            samples = samples.reshape(-1, self.format.channel_count).mean(axis=1, dtype=np.float32)
        self.frames_received += samples.shape[0]
        if self._resampler is None:
            return samples
        return np.asarray(self._resampler.resample_chunk(samples, last=False), dtype=np.float32)

    def flush(self) -> Samples:
        """What the resampler still holds, at the end of the stream."""
        if self._resampler is None:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._resampler.resample_chunk(np.zeros(0, dtype=np.float32), last=True), dtype=np.float32)

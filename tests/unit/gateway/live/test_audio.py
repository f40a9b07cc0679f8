"""A live stream's audio: any encoding, rate and channel count the client sends,
converted to 16 kHz mono float32; formats the suite cannot read refused."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import InvalidInputError
from common.limits import SAMPLE_RATE_HERTZ as RATE
from gateway.live.audio import AudioConverter, AudioFormat
from subtitler.gateway.v1 import gateway_pb2


def test_audio_is_converted_to_16k_mono_float_whatever_its_format() -> None:
    tone = np.sin(2 * np.pi * 440 * np.arange(44_100) / 44_100).astype(np.float32) * 0.5
    stereo = np.stack([tone, tone], axis=1).astype("<f4").tobytes()
    converter = AudioConverter(AudioFormat(gateway_pb2.AUDIO_ENCODING_FLOAT32, 44_100, 2))
    pieces = [converter.convert(stereo[offset : offset + 8 * 441]) for offset in range(0, len(stereo), 8 * 441)]
    out = np.concatenate([*pieces, converter.flush()])
    assert abs(out.size - RATE) <= 2
    assert converter.received_s == pytest.approx(1.0)
    # Still a 440 Hz tone at the same level.
    spectrum = np.abs(np.fft.rfft(out[1000:-1000]))
    assert abs(np.argmax(spectrum) * RATE / (out.size - 2000) - 440) < 5
    assert np.sqrt(np.mean(out[1000:-1000] ** 2)) == pytest.approx(0.5 / np.sqrt(2), rel=0.02)


def test_linear16_and_bad_messages() -> None:
    converter = AudioConverter(AudioFormat(gateway_pb2.AUDIO_ENCODING_LINEAR16, RATE, 1))
    samples = converter.convert(np.array([0, 16384, -32768], dtype="<i2").tobytes())
    assert samples.tolist() == [0.0, 0.5, -1.0]
    with pytest.raises(InvalidInputError, match="whole frames"):
        converter.convert(b"\x00\x01\x02")
    floats = AudioConverter(AudioFormat(gateway_pb2.AUDIO_ENCODING_FLOAT32, RATE, 1))
    assert floats.convert(np.array([np.nan, np.inf, 0.25], dtype="<f4").tobytes()).tolist() == [0.0, 0.0, 0.25]


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("encoding", 0, "encoding"), ("sample_rate_hertz", 4000, "sample_rate"), ("channel_count", 9, "channel")],
)
def test_formats_the_suite_cannot_read_are_refused(field: str, value: int, message: str) -> None:
    values = {"encoding": gateway_pb2.AUDIO_ENCODING_LINEAR16, "sample_rate_hertz": RATE, "channel_count": 1}
    values[field] = value
    with pytest.raises(InvalidInputError, match=message):
        AudioFormat.from_config(gateway_pb2.StreamingConfig(**values))  # type: ignore[arg-type]

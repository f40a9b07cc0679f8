"""gateway.live.buffer: a stream's samples read by their index in the
stream, the quietest point of a range, old audio dropped once a second of it
is stale."""

from __future__ import annotations

import numpy as np

from common.limits import SAMPLE_RATE_HERTZ
from gateway.live.buffer import StreamBuffer

RATE = SAMPLE_RATE_HERTZ


def ramp(start: int, count: int) -> np.ndarray:
    return np.arange(start, start + count, dtype=np.float32)


def test_samples_are_read_by_their_index_in_the_stream() -> None:
    buffer = StreamBuffer()
    buffer.append(ramp(0, RATE))
    buffer.append(ramp(RATE, RATE))
    assert buffer.end_sample == buffer.held_samples == 2 * RATE
    assert buffer.slice(10, 13).tolist() == [10.0, 11.0, 12.0]
    # A copy: the caller may keep it while the buffer changes.
    piece = buffer.slice(0, 4)
    buffer.drop_before(RATE + 5)
    assert piece.tolist() == [0.0, 1.0, 2.0, 3.0]
    assert buffer.first_sample == RATE + 5 and buffer.held_samples == RATE - 5
    # Indices stay the stream's; what was dropped is not there.
    assert buffer.slice(RATE + 5, RATE + 7).tolist() == [RATE + 5.0, RATE + 6.0]
    assert buffer.slice(0, RATE + 6).tolist() == [RATE + 5.0]


def test_old_audio_is_dropped_only_once_a_second_of_it_is_stale() -> None:
    buffer = StreamBuffer()
    buffer.append(ramp(0, 3 * RATE))
    buffer.drop_before(RATE - 1)
    assert buffer.first_sample == 0 and buffer.held_samples == 3 * RATE
    buffer.drop_before(RATE)
    assert buffer.first_sample == RATE
    buffer.clear()
    assert buffer.held_samples == 0 and buffer.end_sample == 3 * RATE


def test_the_quietest_point_is_the_middle_of_the_quietest_10_ms() -> None:
    buffer = StreamBuffer()
    loud = np.ones(RATE, dtype=np.float32)
    loud[4000:4160] = 0.0  # 10 ms of silence
    buffer.append(loud)
    assert buffer.quietest(3040, 6000) == 4080
    # Too little audio to compare windows: the middle of the range.
    assert buffer.quietest(100, 110) == 105
    # Only the audio received counts.
    assert buffer.quietest(RATE - 4, RATE + 100) == RATE - 2  # (the middle of [RATE - 4, RATE))

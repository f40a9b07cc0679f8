"""services/asr/decoding.py: the encoder window of a batch."""

from __future__ import annotations

import pytest

from services.asr.decoding import window_frames


@pytest.mark.parametrize(
    ("chunk_s", "min_window_s", "window_s"),
    [
        (2.0, 20.0, 20.0),
        (15.2, 20.0, 21.0),
        (24.0, 20.0, 29.0),
        (25.5, 20.0, 30.0),
        (30.0, 20.0, 30.0),
        (2.0, 30.0, 30.0),
    ],
)
def test_a_short_chunk_is_encoded_in_a_shorter_window(chunk_s: float, min_window_s: float, window_s: float) -> None:
    # The chunk, 5 s of padding, whole seconds; at least the minimum, at most Whisper's 30 s.
    assert window_frames(round(chunk_s * 100), min_window_s) == round(window_s * 100)

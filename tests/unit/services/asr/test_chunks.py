"""services/asr/chunks.py: a request's ranges checked and rounded to
samples, the speech a packed chunk keeps, and where its decoded times fall
in the whole audio."""

from __future__ import annotations

import numpy as np
import pytest

from common.errors import InvalidInputError
from common.limits import SAMPLE_RATE_HERTZ
from common.transcript import Segment, TimeRange, Word
from services.asr.chunks import AudioWindow, PackedTimes, check_range, chunk_of, chunk_samples, first_speech


def test_a_range_is_clipped_to_the_audio_and_bad_ones_are_invalid() -> None:
    assert check_range(TimeRange(1.0, 10.005), 10.0, None) == TimeRange(1.0, 10.0)
    for bad in (TimeRange(2.0, 2.0), TimeRange(3.0, 1.0), TimeRange(-0.5, 1.0), TimeRange(10.0, 11.0)):
        with pytest.raises(InvalidInputError):
            check_range(bad, 10.0, None)
    with pytest.raises(InvalidInputError, match="at most 5"):
        check_range(TimeRange(0.0, 6.0), 10.0, 5.0)


def test_first_speech_keeps_the_leading_parts_and_cuts_the_last() -> None:
    parts = [TimeRange(0.0, 10.0), TimeRange(20.0, 35.0), TimeRange(40.0, 50.0)]
    assert first_speech(parts, 20.0) == [TimeRange(0.0, 10.0), TimeRange(20.0, 30.0)]


def test_a_packed_chunk_is_heard_as_its_parts_back_to_back_and_timed_in_the_whole_audio() -> None:
    audio = np.arange(10 * SAMPLE_RATE_HERTZ, dtype=np.float32)
    window = AudioWindow.of(audio, 0, None)
    chunk = chunk_of(3, TimeRange(1.0, 9.0), audio.size, parts=[TimeRange(1.0, 2.0), TimeRange(5.0, 6.5)])
    assert chunk.parts == ((16_000, 32_000), (80_000, 104_000))
    assert chunk.time_range == TimeRange(1.0, 9.0)
    assert chunk.decoded_range == TimeRange(0.0, 2.5)
    heard = chunk_samples(window, chunk)
    assert np.array_equal(heard, np.concatenate([audio[16_000:32_000], audio[80_000:104_000]]))
    times = PackedTimes.of(chunk)
    said = Segment("a b", 0.2, 2.0, words=(Word("a", 0.2, 0.8), Word("b", 1.2, 2.0)))
    restored = times.restore(said)
    assert [(word.start_s, word.end_s) for word in restored.words] == [(1.2, 1.8), (5.2, 6.0)]
    assert (restored.start_s, restored.end_s) == (1.2, 6.0)
    # Without words: its start in the part it starts in, its end in the part it ends in.
    assert times.restore(Segment("a", 0.5, 1.0)) == Segment("a", 1.5, 2.0)


def test_a_packed_chunk_needs_a_part_inside_it() -> None:
    with pytest.raises(InvalidInputError, match="no part of chunk 0"):
        chunk_of(0, TimeRange(1.0, 2.0), 10 * SAMPLE_RATE_HERTZ, parts=[TimeRange(3.0, 4.0)])

"""services/diarize/engine.py: a piece's fbank frames are the whole audio's."""

from __future__ import annotations

import kaldi_native_fbank as knf
import numpy as np
import pytest

from common.limits import SAMPLE_RATE_HERTZ
from services.diarize.engine import FBANK_BINS, _fbank_frame_count, _fbank_frames


def _whole_fbank(samples: np.ndarray) -> np.ndarray:
    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.frame_opts.samp_freq = SAMPLE_RATE_HERTZ
    options.mel_opts.num_bins = FBANK_BINS
    fbank = knf.OnlineFbank(options)
    fbank.accept_waveform(SAMPLE_RATE_HERTZ, samples)
    fbank.input_finished()
    return np.array([fbank.get_frame(index) for index in range(fbank.num_frames_ready)], dtype=np.float32)


@pytest.mark.parametrize("sample_count", [0, 399, 400, 559, 560, 16_000 * 7 + 123])
def test_the_frame_count_is_kaldis(sample_count: int) -> None:
    samples = np.zeros(sample_count, np.float32)
    assert _fbank_frame_count(sample_count) == len(_whole_fbank(samples))


def test_a_pieces_frames_are_those_of_the_whole_audio() -> None:
    samples = (np.random.default_rng(5).standard_normal(16_000 * 7 + 123) * 0.1).astype(np.float32)
    whole = _whole_fbank(samples)
    for first, last in [(0, 150), (1, 11), (300, 450), (len(whole) - 10, len(whole)), (20, 20)]:
        assert np.array_equal(_fbank_frames(samples, first, last), whole[first:last])

"""The audio a live stream holds: its samples from `first_sample` to
`end_sample` (indices in the whole stream), read by range, searched for a
quiet point, and dropped from the front once no decode can need them."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from common.limits import SAMPLE_RATE_HERTZ

Samples = npt.NDArray[np.float32]


class StreamBuffer:
    """Samples [first_sample, end_sample) of one stream, 16 kHz mono float32."""

    def __init__(self) -> None:
        self._samples: Samples = np.zeros(0, dtype=np.float32)
        # Index in the stream of the first sample held.
        self.first_sample = 0
        # Samples received so far: the index of the next one.
        self.end_sample = 0

    @property
    def held_samples(self) -> int:
        return int(self._samples.shape[0])

    def append(self, samples: Samples) -> None:
        self._samples = np.concatenate((self._samples, samples))
        self.end_sample += samples.shape[0]

    def slice(self, start: int, end: int) -> Samples:
        """A copy of samples [start, end) of the stream, those held."""
        begin = max(start - self.first_sample, 0)
        return np.array(self._samples[begin : end - self.first_sample], dtype=np.float32)

    def quietest(self, start: int, end: int) -> int:
        """The middle of the quietest 10 ms window of samples [start, end) held."""
        start = max(start, self.first_sample)
        end = min(end, self.end_sample)
        window = SAMPLE_RATE_HERTZ // 100
        samples = self.slice(start, end)
        if samples.shape[0] < 2 * window:
            return max(start, min(end, (start + end) // 2))
        frames = samples[: samples.shape[0] // window * window].reshape(-1, window)
        return start + int(np.argmin((frames**2).mean(axis=1))) * window + window // 2

    def drop_before(self, keep_from: int) -> None:
        """Forgets the samples before `keep_from`; amortised: only once a
        second's worth is stale."""
        if keep_from - self.first_sample >= SAMPLE_RATE_HERTZ:
            self._samples = np.array(self._samples[keep_from - self.first_sample :], dtype=np.float32)
            self.first_sample = keep_from

    def clear(self) -> None:
        """Drops every sample held (the stream is over)."""
        self._samples = np.zeros(0, dtype=np.float32)

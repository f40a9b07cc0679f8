"""Raw PCM bytes to samples, for audio that travels inside messages (live
streams) rather than in shared memory."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from common.errors import InvalidInputError

FLOAT32_BYTES = 4


def float32_samples(data: bytes) -> npt.NDArray[np.float32]:
    """Little-endian float32 samples of `data` (a copy); NaN and infinities
    become silence, so no model sees them."""
    if len(data) % FLOAT32_BYTES:
        raise InvalidInputError(f"{len(data)} bytes are not whole float32 samples ({FLOAT32_BYTES} bytes each)")
    samples = np.frombuffer(data, dtype="<f4").astype(np.float32)
    if not np.isfinite(samples).all():
        samples = np.nan_to_num(samples, nan=0.0, posinf=0.0, neginf=0.0)
    return samples

"""The audio service's engine: decode into the segment store, read, lease.

Plain Python, no gRPC: the servicer converts messages and runs the blocking
calls (`decode_file`, `SpoolFile.write`) in executors.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from common.audio.access import AudioRef, sample_range
from common.audio.shm import SegmentWriter
from common.errors import InvalidInputError, PermissionDeniedError
from common.transcript import TimeRange
from services.audio.decode import DecodeOptions, SourceDescription, decode_file
from services.audio.segments import SegmentStore
from services.audio.spool import SpoolFile, check_upload_size

logger = logging.getLogger(__name__)

READ_CHUNK_SAMPLES = 16_000
"""Samples per ReadSamples message: 1 s at 16 kHz, 64,000 bytes."""


@dataclass(frozen=True)
class DecodeResult:
    """Decoded audio in the store, and what it came from."""

    audio: AudioRef
    source: SourceDescription
    # Wall-clock time of decoding and storing.
    decode_duration_s: float


def resolve_media_path(media_root: Path, requested: str) -> Path:
    """The file `requested` names, checked to lie under `media_root`.

    Relative paths are relative to the root. Symbolic links are resolved
    before the check, so a link pointing out of the root is refused; a path
    outside the root is refused whether it exists or not (nothing is told
    about files out there): `PermissionDeniedError`. A loop of links is left
    as it is (the kernel follows it no further either), so decoding the path
    tells the caller of the loop.
    """
    if not requested or "\x00" in requested:
        raise InvalidInputError("path is empty or contains a NUL character")
    root = media_root.resolve()
    try:
        candidate = Path(requested).expanduser()
    except RuntimeError:  # "~name/..." of a user this host does not have: outside the root too
        candidate = Path("/") / requested
    if not candidate.is_absolute():
        candidate = root / candidate
    # os.path.realpath, not Path.resolve, which raises RuntimeError on a loop (before Python 3.13).
    resolved = Path(os.path.realpath(candidate))
    if not resolved.is_relative_to(root):
        # The message names the caller's own path, never the server's directories.
        raise PermissionDeniedError(
            f"{requested} is outside the media root of the audio service; "
            "give a path relative to it, or upload the file instead"
        )
    return resolved


class AudioEngine:
    """Decodes files into `store` and gives access to what is stored."""

    def __init__(
        self,
        store: SegmentStore,
        *,
        media_root: Path,
        spool_dir: Path,
        max_upload_bytes: int,
        decode_options: DecodeOptions | None = None,
    ) -> None:
        self.store = store
        self._media_root = media_root.resolve()
        self._spool_dir = spool_dir
        self._max_upload_bytes = max_upload_bytes
        self._decode_options = decode_options or DecodeOptions()

    @property
    def decode_options(self) -> DecodeOptions:
        return self._decode_options

    def resolve_media_path(self, requested: str) -> Path:
        """See `resolve_media_path`."""
        return resolve_media_path(self._media_root, requested)

    def checked_lease_s(self, lease_s: float | None) -> float:
        """The lease a request gets (None: the default); `InvalidInputError` if out of bounds."""
        return self.store.checked_lease_s(lease_s)

    def decode_file(
        self,
        path: Path,
        lease_s: float | None = None,
        *,
        cancel_event: threading.Event | None = None,
        display_name: str | None = None,
    ) -> DecodeResult:
        """Decode `path` (already resolved) into a new stored audio. Blocking."""
        lease_s = self.store.checked_lease_s(lease_s)
        started = time.perf_counter()
        # The samples go into shared memory block by block as they are
        # decoded: never a second copy of the whole audio in this process.
        with SegmentWriter() as writer:
            decoded = decode_file(
                path, self._decode_options, cancel_event=cancel_event, display_name=display_name, sink=writer.append
            )
            segment = writer.finish()
        audio = self.store.adopt(segment, decoded.sample_rate_hertz, lease_s)
        return DecodeResult(audio, decoded.source, time.perf_counter() - started)

    def open_upload(self, file_name: str, size_bytes: int) -> SpoolFile:
        """A spool file for an upload announced as `size_bytes` (0: unknown)."""
        check_upload_size(size_bytes, self._max_upload_bytes)
        return SpoolFile(self._spool_dir, file_name, self._max_upload_bytes)

    def sample_chunks(
        self,
        audio_id: str,
        time_range: TimeRange | None,
        chunk_samples: int = READ_CHUNK_SAMPLES,
    ) -> Iterator[tuple[int, bytes]]:
        """(offset_samples, float32 bytes) of consecutive pieces of the range.

        Raises `NotFoundError` on the first `next()` for unknown audio, and
        midway if the audio is released while being read.
        """
        audio = self.store.describe(_checked_id(audio_id))
        start, end = sample_range(time_range, audio.sample_rate_hertz, audio.sample_count)
        for offset in range(start, end, chunk_samples):
            yield offset, self.store.read_bytes(audio.audio_id, offset, min(offset + chunk_samples, end))

    def renew(self, audio_id: str, lease_s: float | None = None) -> datetime:
        return self.store.renew(_checked_id(audio_id), lease_s)

    def describe(self, audio_id: str) -> AudioRef:
        """The handle of stored audio as issued; `NotFoundError` if unknown or released."""
        return self.store.describe(_checked_id(audio_id))

    def release(self, audio_id: str) -> bool:
        return self.store.release(_checked_id(audio_id))


def _checked_id(audio_id: str) -> str:
    if not audio_id:
        raise InvalidInputError("audio_id is empty: pass the audio_id of a handle DecodeFile or UploadAudio returned")
    return audio_id

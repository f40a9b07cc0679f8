"""The store of decoded audio: one shared-memory segment per decode, leased.

Every stored audio has a lease; when it runs out (unless renewed) a
background thread releases the audio and unlinks its segment, so a client
that dies never leaks memory. `close()` (on service shutdown) stops that
thread and releases everything. All methods are thread-safe: decodes store
from executor threads while RPCs read, renew and release from the event loop.

A decoder writes its samples into a new segment as it goes (`adopt`), or a
segment is allocated at the exact length of chunks and filled once
(`store`). A segment cannot be empty, so audio of 0 samples gets a segment
holding one unused sample (see `common.audio.shm`); its handle still says 0.
"""

from __future__ import annotations

import logging
import math
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

import numpy as np
import numpy.typing as npt

from common.audio.access import AudioRef
from common.audio.shm import SharedSamples
from common.errors import InvalidInputError, NotFoundError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class LeaseOptions:
    """How long stored audio lives."""

    # Lease of audio stored or renewed without an explicit one (1 h).
    default_lease_s: float = 3600.0
    # Longest lease a client may ask for (24 h), so nothing is held forever.
    max_lease_s: float = 24 * 3600.0
    # How often the background thread looks for expired leases.
    sweep_interval_s: float = 5.0


@dataclass
class _Stored:
    segment: SharedSamples
    sample_rate_hertz: int
    # time.monotonic() deadline, immune to wall-clock jumps.
    deadline_s: float
    # The same deadline on the wall clock, for handles.
    lease_expire_time: datetime


class SegmentStore:
    """Decoded audio in shared memory, by audio id, with leases.

    `host_id` and `audio_service_target` go into every `AudioRef` handed
    out. `monotonic` and `wall_clock` exist for tests.
    """

    def __init__(
        self,
        *,
        host_id: str,
        audio_service_target: str,
        options: LeaseOptions | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._host_id = host_id
        self._audio_service_target = audio_service_target
        self._options = options or LeaseOptions()
        self._monotonic = monotonic
        self._wall_clock = wall_clock
        self._lock = threading.Lock()
        self._stored: dict[str, _Stored] = {}
        self._closed = False
        self._stop_sweeping = threading.Event()
        self._sweeper: threading.Thread | None = None

    @property
    def audio_service_target(self) -> str:
        """Target put into handles; set once the service's port is bound."""
        return self._audio_service_target

    @audio_service_target.setter
    def audio_service_target(self, target: str) -> None:
        self._audio_service_target = target

    # -- lifecycle -------------------------------------------------------

    def start(self) -> None:
        """Start the background thread that releases expired audio."""
        with self._lock:
            if self._sweeper is not None or self._closed:
                return
            self._sweeper = threading.Thread(target=self._sweep_forever, name="audio-lease-sweeper", daemon=True)
            self._sweeper.start()

    def close(self) -> int:
        """Stop the sweeper and release all audio; returns how many were released."""
        with self._lock:
            self._closed = True
            sweeper, self._sweeper = self._sweeper, None
        self._stop_sweeping.set()
        if sweeper is not None:
            sweeper.join()
        return self.release_all()

    def _sweep_forever(self) -> None:
        while not self._stop_sweeping.wait(self._options.sweep_interval_s):
            try:
                self.release_expired()
            except Exception:
                logger.exception(
                    "releasing expired audio failed; trying again in %.0f s", self._options.sweep_interval_s
                )

    # -- storing and reading ---------------------------------------------

    def store(
        self,
        chunks: Sequence[npt.NDArray[np.float32]],
        sample_rate_hertz: int,
        lease_s: float | None = None,
    ) -> AudioRef:
        """Copy consecutive 1-D chunks into a new segment of their exact length.

        Raises `ResourceExhaustedError` when shared memory is full and
        `InvalidInputError` for a bad lease.
        """
        lease_s = self.checked_lease_s(lease_s)
        sample_count = sum(chunk.shape[0] for chunk in chunks)
        segment = SharedSamples.create(sample_count)
        try:
            segment.write_chunks(chunks)
        except BaseException:
            segment.release()
            raise
        return self.adopt(segment, sample_rate_hertz, lease_s)

    def adopt(self, segment: SharedSamples, sample_rate_hertz: int, lease_s: float | None = None) -> AudioRef:
        """Keep a filled segment (e.g. a decoder's, written with
        `common.audio.shm.SegmentWriter`) as a new audio with a lease; it is
        released if that fails (a bad lease: `InvalidInputError`)."""
        try:
            lease_s = self.checked_lease_s(lease_s)
            audio_id = secrets.token_hex(16)
            deadline_s, expire_time = self._deadline(lease_s)
            with self._lock:
                if self._closed:
                    raise RuntimeError("the segment store is closed")
                self._stored[audio_id] = _Stored(segment, sample_rate_hertz, deadline_s, expire_time)
        except BaseException:
            segment.release()
            raise
        sample_count = segment.sample_count
        logger.info(
            "stored audio %s: %d samples (%.1f s) in %s, lease %.0f s",
            audio_id,
            sample_count,
            sample_count / sample_rate_hertz,
            segment.name,
            lease_s,
        )
        return self._ref(audio_id, segment, sample_rate_hertz, expire_time)

    def describe(self, audio_id: str) -> AudioRef:
        """The handle of stored audio; `NotFoundError` if unknown or released."""
        with self._lock:
            stored = self._get(audio_id)
            return self._ref(audio_id, stored.segment, stored.sample_rate_hertz, stored.lease_expire_time)

    def read_bytes(self, audio_id: str, start_samples: int, end_samples: int) -> bytes:
        """A copy of samples [start, end) as float32 little-endian bytes."""
        with self._lock:
            return self._get(audio_id).segment.read_bytes(start_samples, end_samples)

    # -- leases --------------------------------------------------------

    def checked_lease_s(self, lease_s: float | None) -> float:
        """The lease to apply for a requested one (None: the default)."""
        if lease_s is None:
            return self._options.default_lease_s
        if not math.isfinite(lease_s) or lease_s <= 0:
            raise InvalidInputError(f"lease duration must be positive, got {lease_s} s")
        if lease_s > self._options.max_lease_s:
            raise InvalidInputError(
                f"lease duration {lease_s:g} s is over the maximum of {self._options.max_lease_s:g} s; "
                "renew the lease instead"
            )
        return lease_s

    def renew(self, audio_id: str, lease_s: float | None = None) -> datetime:
        """Extend the lease to `lease_s` from now; returns the new expiry."""
        lease_s = self.checked_lease_s(lease_s)
        deadline_s, expire_time = self._deadline(lease_s)
        with self._lock:
            stored = self._get(audio_id)
            stored.deadline_s = deadline_s
            stored.lease_expire_time = expire_time
        logger.debug("renewed audio %s until %s", audio_id, expire_time.isoformat())
        return expire_time

    def release(self, audio_id: str) -> bool:
        """Free the audio now; False when it was unknown or already released."""
        with self._lock:
            stored = self._stored.pop(audio_id, None)
        if stored is None:
            return False
        stored.segment.release()
        logger.info("released audio %s", audio_id)
        return True

    def release_expired(self) -> list[str]:
        """Release every audio whose lease ran out; returns their ids."""
        now_s = self._monotonic()
        with self._lock:
            expired = {audio_id: s for audio_id, s in self._stored.items() if s.deadline_s <= now_s}
            for audio_id in expired:
                del self._stored[audio_id]
        for audio_id, stored in expired.items():
            stored.segment.release()
            logger.info("lease of audio %s expired; released it", audio_id)
        return list(expired)

    def release_all(self) -> int:
        """Release every stored audio; returns how many."""
        with self._lock:
            stored_now, self._stored = self._stored, {}
        for stored in stored_now.values():
            stored.segment.release()
        if stored_now:
            logger.info("released all %d stored audio", len(stored_now))
        return len(stored_now)

    def __len__(self) -> int:
        with self._lock:
            return len(self._stored)

    def held_bytes(self) -> int:
        """Bytes of shared memory the stored audio holds."""
        with self._lock:
            return sum(stored.segment.sample_count * 4 for stored in self._stored.values())

    # -- helpers -------------------------------------------------------

    def _get(self, audio_id: str) -> _Stored:
        stored = self._stored.get(audio_id)
        if stored is None:
            raise NotFoundError(
                f"audio {audio_id!r} is unknown or was released (leases last "
                f"{self._options.default_lease_s:g} s unless renewed): decode the media again"
            )
        return stored

    def _deadline(self, lease_s: float) -> tuple[float, datetime]:
        return (
            self._monotonic() + lease_s,
            datetime.fromtimestamp(self._wall_clock() + lease_s, tz=UTC),
        )

    def _ref(self, audio_id: str, segment: SharedSamples, sample_rate_hertz: int, expire_time: datetime) -> AudioRef:
        return AudioRef(
            audio_id=audio_id,
            segment_name=segment.name,
            sample_count=segment.sample_count,
            sample_rate_hertz=sample_rate_hertz,
            host_id=self._host_id,
            lease_expire_time=expire_time,
            audio_service_target=self._audio_service_target,
        )

"""Admission control: a bounded number of model calls at once, a small
queue, and a clear refusal beyond it.

Whisper on CPU uses every core for one transcription; running two at once
only makes both slower. Callers beyond the queue get `ResourceExhaustedError`
with a retry delay instead of waiting for minutes on a deadline.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from common.errors import ResourceExhaustedError


class AdmissionLimit:
    """At most `max_running` holders at once and `max_waiting` waiting.

    Used from one event loop only (no locking needed).
    """

    def __init__(self, max_running: int, max_waiting: int, retry_after_s: float) -> None:
        if max_running < 1 or max_waiting < 0:
            raise ValueError("max_running must be at least 1 and max_waiting not negative")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self._slots = asyncio.Semaphore(max_running)
        self._running = 0
        self._waiting = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Holds a slot for the body; raises `ResourceExhaustedError` at once
        when every slot is taken and the queue is full."""
        if self._slots.locked() and self._waiting >= self.max_waiting:
            raise ResourceExhaustedError(
                f"busy: {self._running} transcriptions running and {self._waiting} waiting; "
                f"retry in {self.retry_after_s:g} s",
                retry_after_s=self.retry_after_s,
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._slots.release()

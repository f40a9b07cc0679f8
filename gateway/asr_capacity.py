"""How much transcription the ASR targets take at once, and the gateway-wide
slots that keep that many Transcribe calls in flight.

A job sends one call per batch of chunks and keeps sending while a slot is
free, so one long job uses every ASR worker of every replica; jobs running at
once share the same slots. Slots are counted in chunks: two full batches per
worker, so a long job keeps two calls per worker in flight, while short jobs
(a clip is one chunk) send as many one-chunk calls as fill those batches,
which the ASR decodes together (services/asr/batcher.py). The capacity comes
from the ASR services' status (`capacity` workers and `preferred_batch_size`
per replica, times the replicas the target lists) unless the operator fixed
it; it is asked again at most every `refresh_interval_s`, and a failed ask
keeps the last figures.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import math
import time
from dataclasses import dataclass

import grpc

from common.limits import CALLS_PER_WORKER
from subtitler.status.v1 import status_pb2, status_pb2_grpc

logger = logging.getLogger(__name__)

STATUS_TIMEOUT_S = 2.0
# How often the ASR is asked while it has measured nothing yet.
UNMEASURED_REFRESH_S = 2.0


@dataclass(frozen=True)
class AsrCapacityFigures:
    """What the ASR targets offer."""

    # Model workers over all replicas.
    workers: int
    # Chunks a replica prefers to decode together.
    preferred_batch_size: int
    # Seconds one live decode takes on one worker, as the ASR measured it (0: not known).
    live_decode_s: float = 0.0
    # Seconds of a file's audio all replicas transcribe per second, as measured (0: not known).
    audio_seconds_per_second: float = 0.0


class AsrCapacity:
    """Gateway-wide slots for Transcribe calls, sized to the ASR targets.

    Used from the gateway's event loop only.
    """

    def __init__(
        self,
        status: status_pb2_grpc.StatusServiceStub | None,
        *,
        replica_count: int,
        fixed_workers: int = 0,
        fixed_batch_size: int = 0,
        refresh_interval_s: float = 30.0,
    ) -> None:
        """`status`: the ASR target's status stub (None: never asked);
        `replica_count`: replicas the target lists (1 for a name that
        resolves to several: the status of one is then taken for all);
        `fixed_workers` / `fixed_batch_size`: the operator's figures (0: ask)."""
        self._status = status
        self._replica_count = max(1, replica_count)
        self._fixed_workers = fixed_workers
        self._fixed_batch_size = fixed_batch_size
        self._refresh_interval_s = refresh_interval_s
        self._figures = AsrCapacityFigures(workers=fixed_workers or 1, preferred_batch_size=fixed_batch_size or 0)
        self._asked_at = -math.inf
        self._in_flight = 0
        self._calls = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    @property
    def figures(self) -> AsrCapacityFigures:
        return self._figures

    @property
    def max_in_flight(self) -> int:
        """Chunks in flight at most (a call's first chunk waits for room)."""
        return self._figures.workers * CALLS_PER_WORKER * max(1, self._figures.preferred_batch_size)

    @property
    def in_flight(self) -> int:
        """Calls in flight."""
        return self._calls

    @property
    def chunks_in_flight(self) -> int:
        return self._in_flight

    async def refresh(self) -> AsrCapacityFigures:
        """Asks the ASR target again if the last answer is old."""
        if self._status is None:
            return self._figures
        if time.monotonic() - self._asked_at < self._refresh_interval_s:
            return self._figures
        self._asked_at = time.monotonic()
        try:
            reply = await self._status.GetStatus(status_pb2.GetStatusRequest(), timeout=STATUS_TIMEOUT_S)
        except grpc.aio.AioRpcError as error:
            logger.info("ASR status not available (%s); keeping %s", error.code().name, self._figures)
            return self._figures
        measured = reply.measured_capacity
        figures = AsrCapacityFigures(
            workers=self._fixed_workers or max(1, reply.capacity) * self._replica_count,
            preferred_batch_size=self._fixed_batch_size or reply.preferred_batch_size,
            live_decode_s=measured.live_decode_s,
            audio_seconds_per_second=measured.audio_seconds_per_second * self._replica_count,
        )
        if (figures.workers, figures.preferred_batch_size) != (
            self._figures.workers,
            self._figures.preferred_batch_size,
        ):
            logger.info("ASR capacity: %d workers, batches of %d", figures.workers, figures.preferred_batch_size)
        if figures != self._figures:
            self._figures = figures
            self._wake()
        return figures

    async def keep_fresh(self) -> None:
        """Asks the ASR target every refresh interval, every 2 s while it has
        measured nothing yet (it is warming up), so the status and the live
        admission have its measure before the first call needs it. Runs
        until cancelled."""
        while True:
            await self.refresh()
            measured = self._figures.live_decode_s > 0.0
            await asyncio.sleep(self._refresh_interval_s if measured else UNMEASURED_REFRESH_S)
            if not measured:
                self._asked_at = -math.inf

    def batch_size(self, requested: int, default: int) -> int:
        """Chunks per call: the job's batch size (or `default`), at most what
        the ASR prefers to decode together."""
        size = requested or default or self._figures.preferred_batch_size or 1
        if self._figures.preferred_batch_size:
            size = min(size, self._figures.preferred_batch_size)
        return max(1, size)

    async def acquire(self, *, urgent: bool = False) -> None:
        """Takes a slot for one call and its first chunk, waiting in arrival
        order for one; `extend` adds the call's other chunks and `release`
        gives them all back. An `urgent` caller (a live stream, whose listener
        is waiting) goes ahead of every waiting job."""
        if self._in_flight >= self.max_in_flight or self._waiters:
            waiter = asyncio.get_running_loop().create_future()
            if urgent:
                self._waiters.appendleft(waiter)
            else:
                self._waiters.append(waiter)
            try:
                await waiter
            except asyncio.CancelledError:
                if waiter.done() and not waiter.cancelled():
                    self.release()  # granted just as we were cancelled: pass it on
                elif waiter in self._waiters:
                    # (`_wake` may have dropped it already, cancelled, on its way to the next.)
                    self._waiters.remove(waiter)
                raise
            return
        self._in_flight += 1
        self._calls += 1

    def extend(self, chunks: int) -> None:
        """Counts `chunks` more for a call that holds a slot (the rest of its
        batch), without waiting: the next call waits for them instead."""
        self._in_flight += max(0, chunks)

    def shrink(self, chunks: int) -> None:
        """Gives back `chunks` counted with `extend`, the call keeping its slot."""
        self._in_flight -= max(0, chunks)
        self._wake()

    def release(self, chunks: int = 1) -> None:
        """Gives a call's slot and its `chunks` back (safe in a cancelled task's cleanup)."""
        self._in_flight -= chunks
        self._calls -= 1
        self._wake()

    def _wake(self) -> None:
        """Grants free slots to the longest waiters."""
        while self._waiters and self._in_flight < self.max_in_flight:
            waiter = self._waiters.popleft()
            if not waiter.done():
                self._in_flight += 1
                self._calls += 1
                waiter.set_result(None)

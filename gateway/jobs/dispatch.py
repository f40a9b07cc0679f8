"""The claim loop: leases queued jobs from the store while this gateway has
room (the `FOR UPDATE SKIP LOCKED` pattern: several gateways take from one
queue, each job once), starts or ends each one taken, and publishes where
the waiting ones stand."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import grpc

from gateway.config import GatewayConfig
from gateway.jobs.events import EventHub
from gateway.jobs.outcomes import OutcomeRecorder
from gateway.jobs.running import RunningJobs
from gateway.records import JobFailure, JobState, Stage
from gateway.store.async_store import AsyncJobStore
from gateway.store.errors import CorruptRecordError, LeaseLostError
from gateway.store.job_queue import Claim
from gateway.store.stage_outputs import Checkpoint

logger = logging.getLogger(__name__)


class JobDispatcher:
    """Takes jobs when `wake` is set (a job created or finished here) and,
    on a shared store, every `poll_s` (jobs created or left by others); keeps
    the queue as last read."""

    def __init__(
        self,
        store: AsyncJobStore,
        events: EventHub,
        config: GatewayConfig,
        running: RunningJobs,
        outcomes: OutcomeRecorder,
        wake: asyncio.Event,
    ) -> None:
        self._store = store
        self._events = events
        self._config = config
        self._running = running
        self._outcomes = outcomes
        self._wake = wake
        # The queue as last read from the store: job id -> place (from 1).
        self._positions: dict[str, int] = {}
        # Held while jobs are leased and started, so a cancel never races it.
        self.claiming = asyncio.Lock()

    @property
    def queued_count(self) -> int:
        """Jobs waiting in the queue (of every gateway on the store), as last read."""
        return len(self._positions)

    def position(self, job_id: str) -> int:
        """A waiting job's place in the queue (1 is next), as last read; 0 if
        it is not waiting."""
        return self._positions.get(job_id, 0)

    def forget(self, job_id: str) -> None:
        """Drops a job that no longer waits from the queue as last read."""
        self._positions.pop(job_id, None)

    async def dispatch_forever(self, after_round: Callable[[bool], Awaitable[None]]) -> None:
        """Takes jobs until the gateway stops; after each round, calls
        `after_round` with whether it was woken (rather than polling)."""
        # A SQLite store has no other gateway to hear of; its poll only
        # retakes a job whose lease could not be given back.
        poll_s = self._config.poll_s if self._store.shared else self._config.lease_s
        while not self._running.stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_s)
            woken = self._wake.is_set()  # a job created or finished here
            self._wake.clear()
            try:
                await self.dispatch()
                await after_round(woken)
            except Exception:  # the store is unreachable: try again on the next round
                logger.exception("could not take jobs from the store")
                await asyncio.sleep(self._config.poll_s)

    async def dispatch(self) -> None:
        """Leases and starts jobs while there is room, then publishes where
        the waiting ones stand."""
        async with self.claiming:
            while len(self._running) < self._config.max_concurrent_jobs and not self._running.stopping:
                claim = await self._store.claim_next(self._config.lease_s, list(self._running))
                if claim is None:
                    break
                await self._adopt(claim)
            queued = await self._store.queued_jobs()
            self._positions = {job.job_id: position for position, (job, _) in enumerate(queued, start=1)}
            for position, (job, published) in enumerate(queued, start=1):
                if published != position:  # the store counts it again, and publishes it once
                    await self._events.publish_queue_position(job)

    async def _adopt(self, claim: Claim) -> None:
        """Starts a job just leased: a new one, or one a gateway (this one
        before a restart, or another) left unfinished, which goes on from its
        checkpoint. A job whose records cannot be read fails; one a client
        asked to cancel is cancelled."""
        job = claim.job
        try:
            if claim.cancel_requested:
                await self._outcomes.release_stored_audio(job.job_id)
                await self._outcomes.cancelled(job, time.monotonic())
                return
            failure: JobFailure | None = job.failure  # set when its row could not be read
            checkpoint: Checkpoint | None = None
            if failure is None and job.uploaded and not await asyncio.to_thread(Path(job.media_path).exists):
                failure = JobFailure(grpc.StatusCode.DATA_LOSS.name, "the uploaded file was lost", Stage.DECODE)
            if failure is None:
                try:
                    checkpoint = await self._store.checkpoint(job.job_id)
                except CorruptRecordError as error:
                    failure = JobFailure("DATA_LOSS", str(error), job.stage)
            if failure is not None or checkpoint is None:
                await self._outcomes.release_stored_audio(job.job_id)
                lost = failure or JobFailure("DATA_LOSS", "no checkpoint", job.stage)
                await self._outcomes.failed(job, lost, time.monotonic())
                return
            if job.state == JobState.RUNNING:
                # Its gateway stopped or died while running it: it goes on from its checkpoint.
                previous, job.state = job.state, JobState.QUEUED
                job.waiting_reason = ""
                await self._store.save(job)
                await self._events.publish(job, state_changed=True, previous_state=previous)
                logger.info(
                    "resuming job %s: %d chunks transcribed, %d aligned",
                    job.job_id,
                    len(checkpoint.transcripts),
                    len(checkpoint.alignments),
                )
        except LeaseLostError as error:
            logger.info("left job %s: %s", job.job_id, error)
            return
        if self._running.start(job, checkpoint if has_progress(checkpoint) else None):
            self.forget(job.job_id)


def has_progress(checkpoint: Checkpoint) -> bool:
    """Whether a job's checkpoint holds anything to go on from."""
    return bool(
        checkpoint.audio_handle
        or checkpoint.speech_chunks
        or checkpoint.detection_complete
        or checkpoint.transcripts
        or checkpoint.alignments
        or checkpoint.speaker_turns
    )

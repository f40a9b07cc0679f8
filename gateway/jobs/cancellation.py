"""Cancelling a job wherever it is: waiting in the queue, running here,
left by a gateway that is gone, or running on another gateway; and
withdrawing a job whose creation its client abandoned."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time

from gateway.config import GatewayConfig
from gateway.jobs.dispatch import JobDispatcher
from gateway.jobs.outcomes import OutcomeRecorder
from gateway.jobs.running import RunningJobs, Spawn
from gateway.jobs.uploads import discard_upload
from gateway.records import JobRecord, JobState
from gateway.store.async_store import AsyncJobStore
from gateway.store.errors import LeaseLostError

logger = logging.getLogger(__name__)


class JobCanceller:
    """Cancels jobs: one nothing runs by leasing it and recording it
    cancelled, one running here by stopping it, one running elsewhere by a
    request its gateway's heartbeat reads."""

    def __init__(
        self,
        store: AsyncJobStore,
        config: GatewayConfig,
        running: RunningJobs,
        dispatcher: JobDispatcher,
        outcomes: OutcomeRecorder,
        spawn: Spawn,
        wake: asyncio.Event,
    ) -> None:
        self._store = store
        self._config = config
        self._running = running
        self._dispatcher = dispatcher
        self._outcomes = outcomes
        self._spawn = spawn
        self._wake = wake

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancels a queued or running job, wherever it runs; a finished one
        is returned unchanged."""
        job = await self._store.get_job(job_id)
        if job.state.finished:
            return job
        async with self._dispatcher.claiming:
            if job_id not in self._running:
                claim = await self._store.claim(job_id, self._config.lease_s)
                if claim is not None:
                    # Waiting, or left by a gateway that is gone: nothing runs it.
                    if claim.job.state == JobState.RUNNING:
                        await self._outcomes.release_stored_audio(job_id)
                    with contextlib.suppress(LeaseLostError):
                        await self._outcomes.cancelled(claim.job, time.monotonic())
                    self._dispatcher.forget(job_id)
                    self._wake.set()
                    return await self._store.get_job(job_id)
        if job_id in self._running:
            await self._running.drop(job_id)
            return await self._store.get_job(job_id)
        # Another gateway runs it: its heartbeat reads the request.
        await self._store.request_cancel(job_id)
        deadline = time.monotonic() + self._config.lease_s * 2
        while True:
            job = await self._store.get_job(job_id)
            if job.state.finished or time.monotonic() > deadline:
                return job
            await asyncio.sleep(min(0.2, self._config.poll_s))

    def withdraw_later(self, job_id: str, submission: asyncio.Future[JobRecord]) -> None:
        """Removes a job whose creation the client abandoned, once it is
        submitted: its task, its upload and every record of it (unless the
        submission found an earlier job with the same request id)."""

        async def withdraw() -> None:
            job = await submission
            if job.job_id != job_id:
                return
            await self.cancel(job.job_id)
            discard_upload(job)
            await self._store.delete_job(job.job_id)
            logger.info("withdrew job %s: its upload was cut off", job.job_id)

        self._spawn(withdraw())

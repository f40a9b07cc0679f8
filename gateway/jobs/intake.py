"""New jobs: made, admitted (a free slot here, or room in the store's queue
by gateway.jobs.admission) and stored once per request id; and the wait a
job submitted now would have, as the status shows it."""

from __future__ import annotations

import asyncio
import math
import time
import uuid

from gateway.config import GatewayConfig
from gateway.jobs.admission import JobAdmission, PendingJob, QueueWait
from gateway.jobs.dispatch import JobDispatcher
from gateway.jobs.events import EventHub
from gateway.jobs.running import RunningJobs
from gateway.jobs.uploads import discard_upload, upload_bytes
from gateway.records import JobRecord, JobState
from gateway.store.async_store import AsyncJobStore
from subtitler.gateway.v1 import gateway_pb2

# How often the expected wait of a new job (the status's) is estimated again
# when no job was created or finished here, at most (a shared store's polls).
WAIT_REFRESH_S = 5.0


class JobIntake:
    """Admits and stores new jobs, then sets `wake` for the dispatcher to
    take them; keeps `queue_wait` (what a job of priority 0 submitted now
    would wait) up to date."""

    def __init__(
        self,
        store: AsyncJobStore,
        events: EventHub,
        config: GatewayConfig,
        admission: JobAdmission,
        running: RunningJobs,
        dispatcher: JobDispatcher,
        wake: asyncio.Event,
    ) -> None:
        self._store = store
        self._events = events
        self._config = config
        self._admission = admission
        self._running = running
        self._dispatcher = dispatcher
        self._wake = wake
        # What a job submitted now would wait (the status's), and when it was estimated.
        self.queue_wait = QueueWait(0.0)
        self._wait_estimated_at = -math.inf

    @staticmethod
    def new_job(
        config: gateway_pb2.JobConfig,
        source: str,
        media_path: str,
        *,
        uploaded: bool,
        request_id: str = "",
        priority: int = 0,
        owner: str = "",
    ) -> JobRecord:
        """A new job, queued, not stored yet."""
        now = time.time()
        return JobRecord(
            job_id=uuid.uuid4().hex,
            state=JobState.QUEUED,
            config=config,
            source=source,
            media_path=media_path,
            uploaded=uploaded,
            created_s=now,
            updated_s=now,
            request_id=request_id,
            priority=priority,
            owner=owner,
        )

    async def check_queue_space(self, priority: int = 0) -> None:
        """RESOURCE_EXHAUSTED, with a retry hint, when this gateway has no
        free slot to run a new job of `priority` at once and the store's
        queue may not take it: its count is at SUBTITLER_GATEWAY_MAX_QUEUED_JOBS,
        or the job would wait longer than SUBTITLER_GATEWAY_MAX_QUEUE_WAIT_S
        at the ASR's measured rate (gateway.jobs.admission)."""
        queued = await self._store.queued_count()
        if len(self._running) + queued < self._config.max_concurrent_jobs:
            return
        pending = await self._pending_jobs() if self._admission.measured else []
        self._admission.check(queued=queued, pending=pending, priority=priority)

    async def _pending_jobs(self) -> list[PendingJob]:
        """Every unfinished job on the store (every gateway's), with the size
        of each upload not decoded yet."""
        jobs = await self._store.unfinished_jobs()

        def pending() -> list[PendingJob]:
            return [PendingJob.of(job, 0 if job.audio_duration_s else upload_bytes(job)) for job in jobs]

        return await asyncio.to_thread(pending)

    async def refresh_wait(self, woken: bool) -> None:
        """Estimates `queue_wait` again: at once after a job was created or
        finished here (`woken`), else at most every WAIT_REFRESH_S."""
        await self._estimate_wait(0.0 if woken else WAIT_REFRESH_S)

    async def _estimate_wait(self, every_s: float) -> None:
        """Estimates again what a job of priority 0 submitted now would wait
        (`queue_wait`, for the status), unless it was less than `every_s` ago."""
        if time.monotonic() - self._wait_estimated_at < every_s:
            return
        self._wait_estimated_at = time.monotonic()
        slot_free = len(self._running) + self._dispatcher.queued_count < self._config.max_concurrent_jobs
        if slot_free or not self._admission.measured:
            self.queue_wait = QueueWait(0.0)
        else:
            self.queue_wait = self._admission.estimate(await self._pending_jobs())

    async def existing(self, request_id: str, owner: str = "") -> JobRecord | None:
        """The job `owner` created with `request_id`, if any."""
        if not request_id:
            return None
        return await self._store.job_by_request_id(request_id, owner)

    async def submit(self, job: JobRecord) -> JobRecord:
        """Stores a new job with its first event, for a gateway to take; with
        a request id already used, returns the job created with it instead."""
        await self.check_queue_space(job.priority)
        first = self._events.make(job, state_changed=True)
        stored = await self._store.insert_job(job, first)
        if stored.job_id != job.job_id:
            discard_upload(job)
            return stored
        self._events.deliver(first)
        self._wake.set()
        return job

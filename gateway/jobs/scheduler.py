"""Job life cycle, composed: creation (idempotent by request id) and
admission (gateway.jobs.intake), the claim loop that leases queued jobs from
the store (gateway.jobs.dispatch), the jobs running here (gateway.jobs.running)
and their leases' heartbeat (gateway.jobs.lease_keeper), cancellation
(gateway.jobs.cancellation), recovery of unfinished jobs when the gateway
starts, and retention of finished ones (gateway.jobs.retention)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Coroutine
from typing import Any

from gateway.config import GatewayConfig
from gateway.jobs.admission import RECENT_JOBS, JobAdmission, QueueBounds, QueueWait
from gateway.jobs.cancellation import JobCanceller
from gateway.jobs.dispatch import JobDispatcher
from gateway.jobs.events import EventHub
from gateway.jobs.intake import JobIntake
from gateway.jobs.lease_keeper import LeaseKeeper
from gateway.jobs.outcomes import OutcomeRecorder
from gateway.jobs.retention import RetentionSweeper
from gateway.jobs.run.pipeline import Peers
from gateway.jobs.running import RunningJobs
from gateway.jobs.uploads import check_upload_space
from gateway.records import JobRecord, JobState
from gateway.store.async_store import AsyncJobStore


class JobScheduler:
    """Owns the tasks of the jobs this gateway runs: at most
    `max_concurrent_jobs`; the others wait in the store's queue, ordered by
    priority, then arrival.

    The queue is the store itself. A gateway leases each job it starts
    (`AsyncJobStore.claim_next`) and renews its leases every third of
    `lease_s`; a job whose gateway died is taken over by another once its
    lease lapses, and resumes from its checkpoint. Every write about a job
    checks that this gateway still holds its lease (else LeaseLostError):
    two gateways never both write one job's state or events. On a SQLite
    store, which one gateway uses, the leases of earlier runs are dropped at
    start."""

    def __init__(self, store: AsyncJobStore, events: EventHub, peers: Peers, config: GatewayConfig) -> None:
        self._store = store
        self._background: set[asyncio.Task[object]] = set()
        self._loops: list[asyncio.Task[None]] = []
        # Set when a job is created or finished here: the dispatcher takes jobs at once.
        wake = asyncio.Event()
        # Whether a new job may wait, by the work ahead of it at the ASR's measured rate.
        self.admission = JobAdmission(
            lambda: peers.asr_capacity.figures.audio_seconds_per_second,
            QueueBounds(config.max_queued_jobs, config.max_queue_wait_s),
        )
        outcomes = OutcomeRecorder(store, events, peers, self.admission.sizes)
        self._running = RunningJobs(store, events, peers, config, outcomes, self._spawn, wake)
        self._leases = LeaseKeeper(store, config, self._running, self._spawn)
        self._dispatcher = JobDispatcher(store, events, config, self._running, outcomes, wake)
        self._intake = JobIntake(store, events, config, self.admission, self._running, self._dispatcher, wake)
        self._canceller = JobCanceller(store, config, self._running, self._dispatcher, outcomes, self._spawn, wake)
        self._retention = RetentionSweeper(store, config)
        self._min_free_disk_bytes = config.min_free_disk_bytes
        self.uploads_dir = config.data_dir / "uploads"
        self.uploads_dir.mkdir(parents=True, exist_ok=True)

    @property
    def running_count(self) -> int:
        """Jobs this gateway runs now."""
        return len(self._running)

    @property
    def queued_count(self) -> int:
        """Jobs waiting in the queue (of every gateway on the store), as last read."""
        return self._dispatcher.queued_count

    @property
    def queue_wait(self) -> QueueWait:
        """What a job of priority 0 submitted now would wait (the status's), as last estimated."""
        return self._intake.queue_wait

    # A new job, queued, not stored yet (see `submit`): JobIntake's own, not a copy of its signature.
    new_job = staticmethod(JobIntake.new_job)

    async def check_queue_space(self, priority: int = 0) -> None:
        """RESOURCE_EXHAUSTED, with a retry hint, when a new job of `priority`
        may neither run at once nor wait (JobIntake.check_queue_space)."""
        await self._intake.check_queue_space(priority)

    def check_upload_space(self, size_bytes: int) -> None:
        """RESOURCE_EXHAUSTED when storing `size_bytes` more would leave less
        free disk than the configured minimum."""
        check_upload_space(self.uploads_dir, size_bytes, self._min_free_disk_bytes)

    async def existing(self, request_id: str, owner: str = "") -> JobRecord | None:
        """The job `owner` created with `request_id`, if any."""
        return await self._intake.existing(request_id, owner)

    async def submit(self, job: JobRecord) -> JobRecord:
        """Stores a new job with its first event, for a gateway to take; with
        a request id already used, returns the job created with it instead."""
        return await self._intake.submit(job)

    def queue_position(self, job_id: str) -> int:
        """A waiting job's place in the queue (1 is next), as last read; 0 if
        it is not waiting."""
        return self._dispatcher.position(job_id)

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancels a queued or running job, wherever it runs; a finished one
        is returned unchanged."""
        return await self._canceller.cancel(job_id)

    def withdraw_later(self, job_id: str, submission: asyncio.Future[JobRecord]) -> None:
        """Removes a job whose creation the client abandoned, once it is
        submitted (JobCanceller.withdraw_later)."""
        self._canceller.withdraw_later(job_id, submission)

    async def sweep_expired(self) -> int:
        """Deletes finished jobs older than the retention, with their files."""
        return await self._retention.sweep_expired()

    async def sweep_forever(self) -> None:
        await self._retention.sweep_forever()

    async def start(self) -> int:
        """Starts taking jobs from the store (first those an earlier run of
        this gateway left, for a SQLite store) and renewing their leases.
        Returns how many unfinished jobs the store holds."""
        if not self._store.shared:
            await self._store.clear_leases()
        recent = await self._store.list_jobs(limit=RECENT_JOBS, before=None, state=JobState.SUCCEEDED)
        for job in recent:  # what jobs' audio lasts, before any ends here
            self.admission.sizes.record(job.audio_duration_s)
        unfinished = len(await self._store.unfinished_jobs())
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._dispatcher.dispatch_forever(self._intake.refresh_wait), name="job-dispatch"),
            loop.create_task(self._leases.keep_forever(), name="job-leases"),
        ]
        await self._dispatcher.dispatch()
        return unfinished

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def shutdown(self) -> None:
        """Stops running jobs without marking them, keeping their audio, and
        gives up their leases: the next start, or another gateway at once,
        resumes them from their checkpoints."""
        self._running.stopping = True
        for task in [*self._loops, *self._background]:
            task.cancel()
        running = self._running.stop_all()
        await asyncio.gather(*(task for _, task in running), *self._loops, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._store.release_leases([job_id for job_id, _ in running])

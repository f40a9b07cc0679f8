"""Job life cycle: creation (idempotent by request id), the priority queue in
front of a bounded number of running jobs (bounded itself by the wait its
work means at the ASR's measured rate: gateway.jobs.admission),
cancellation, recovery of unfinished jobs when the gateway starts, and
retention of finished ones."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import shutil
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from common.errors import ResourceExhaustedError
from common.rpc import metrics
from common.transcript import Segment
from gateway.config import GatewayConfig
from gateway.jobs.admission import RECENT_JOBS, JobAdmission, PendingJob, QueueBounds, QueueWait
from gateway.jobs.audio_lease import release_audio
from gateway.jobs.events import EventHub
from gateway.jobs.pipeline import JobPipeline, Peers, StageFailedError
from gateway.records import JobFailure, JobRecord, JobState, Stage
from gateway.store.job_store import (
    Checkpoint,
    Claim,
    CorruptRecordError,
    JobStore,
    LeaseLostError,
    StoreUnavailableError,
)
from subtitler.gateway.v1 import gateway_pb2

logger = logging.getLogger(__name__)

# How often the expected wait of a new job (the status's) is estimated again
# when no job was created or finished here, at most (a shared store's polls).
WAIT_REFRESH_S = 5.0


class JobScheduler:
    """Owns the tasks of the jobs this gateway runs: at most
    `max_concurrent_jobs`; the others wait in the store's queue, ordered by
    priority, then arrival.

    The queue is the store itself. A gateway leases each job it starts
    (`JobStore.claim_next`) and renews its leases every third of
    `lease_s`; a job whose gateway died is taken over by another once its
    lease lapses, and resumes from its checkpoint. Every write about a job
    checks that this gateway still holds its lease (else LeaseLostError):
    two gateways never both write one job's state or events. On a SQLite
    store, which one gateway uses, the leases of earlier runs are dropped at
    start."""

    def __init__(self, store: JobStore, events: EventHub, peers: Peers, config: GatewayConfig) -> None:
        self._store = store
        self._events = events
        self._peers = peers
        self._config = config
        self._running: dict[str, tuple[asyncio.Task[None], JobPipeline]] = {}
        # The pipeline task of each running job, the jobs asked to stop, and
        # those another gateway took over (stopped without a word more).
        self._work: dict[str, asyncio.Future[list[Segment]]] = {}
        self._cancel_requested: set[str] = set()
        self._lost: set[str] = set()
        # The queue as last read from the store: job id -> place (from 1).
        self._positions: dict[str, int] = {}
        self._wake = asyncio.Event()
        # Held while jobs are leased and started, so a cancel never races it.
        self._claiming = asyncio.Lock()
        self._background: set[asyncio.Task[object]] = set()
        self._loops: list[asyncio.Task[None]] = []
        self._stopping = False
        # Whether a new job may wait, by the work ahead of it at the ASR's measured rate.
        self.admission = JobAdmission(
            lambda: peers.asr_capacity.figures.audio_seconds_per_second,
            QueueBounds(config.max_queued_jobs, config.max_queue_wait_s),
        )
        # What a job submitted now would wait (the status's), and when it was estimated.
        self.queue_wait = QueueWait(0.0)
        self._wait_estimated_at = -math.inf
        self.uploads_dir = config.data_dir / "uploads"
        self.uploads_dir.mkdir(parents=True, exist_ok=True)

    @property
    def running_count(self) -> int:
        """Jobs this gateway runs now."""
        return len(self._running)

    @property
    def queued_count(self) -> int:
        """Jobs waiting in the queue (of every gateway on the store), as last read."""
        return len(self._positions)

    def new_job(
        self,
        config: gateway_pb2.JobConfig,
        source: str,
        media_path: str,
        *,
        uploaded: bool,
        request_id: str = "",
        priority: int = 0,
        owner: str = "",
    ) -> JobRecord:
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
        queued = await self._store.run(self._store.queued_count)
        if len(self._running) + queued < self._config.max_concurrent_jobs:
            return
        pending = await self._pending_jobs() if self.admission.measured else []
        self.admission.check(queued=queued, pending=pending, priority=priority)

    async def _pending_jobs(self) -> list[PendingJob]:
        """Every unfinished job on the store (every gateway's), with the size
        of each upload not decoded yet."""
        jobs = await self._store.run(self._store.unfinished_jobs)

        def pending() -> list[PendingJob]:
            return [PendingJob.of(job, 0 if job.audio_duration_s else _upload_bytes(job)) for job in jobs]

        return await asyncio.to_thread(pending)

    async def _estimate_wait(self, every_s: float) -> None:
        """Estimates again what a job of priority 0 submitted now would wait
        (`queue_wait`, for the status), unless it was less than `every_s` ago."""
        if time.monotonic() - self._wait_estimated_at < every_s:
            return
        self._wait_estimated_at = time.monotonic()
        slot_free = len(self._running) + len(self._positions) < self._config.max_concurrent_jobs
        if slot_free or not self.admission.measured:
            self.queue_wait = QueueWait(0.0)
        else:
            self.queue_wait = self.admission.estimate(await self._pending_jobs())

    async def existing(self, request_id: str, owner: str = "") -> JobRecord | None:
        """The job `owner` created with `request_id`, if any."""
        if not request_id:
            return None
        return await self._store.run(self._store.job_by_request_id, request_id, owner)

    async def submit(self, job: JobRecord) -> JobRecord:
        """Stores a new job with its first event, for a gateway to take; with
        a request id already used, returns the job created with it instead."""
        await self.check_queue_space(job.priority)
        first = self._events.make(job, state_changed=True)
        stored = await self._store.run(self._store.insert_job, job, first)
        if stored.job_id != job.job_id:
            self._discard_upload(job)
            return stored
        self._events.deliver(first)
        self._wake.set()
        return job

    def queue_position(self, job_id: str) -> int:
        """A waiting job's place in the queue (1 is next), as last read; 0 if
        it is not waiting."""
        return self._positions.get(job_id, 0)

    async def start(self) -> int:
        """Starts taking jobs from the store (first those an earlier run of
        this gateway left, for a SQLite store) and renewing their leases.
        Returns how many unfinished jobs the store holds."""
        if not self._store.shared:
            await self._store.run(self._store.clear_leases)
        recent = await self._store.run(
            lambda: self._store.list_jobs(limit=RECENT_JOBS, before=None, state=JobState.SUCCEEDED)
        )
        for job in recent:  # what jobs' audio lasts, before any ends here
            self.admission.sizes.record(job.audio_duration_s)
        unfinished = len(await self._store.run(self._store.unfinished_jobs))
        loop = asyncio.get_running_loop()
        self._loops = [
            loop.create_task(self._dispatch_forever(), name="job-dispatch"),
            loop.create_task(self._heartbeat_forever(), name="job-leases"),
        ]
        async with self._claiming:
            await self._dispatch()
        return unfinished

    async def _dispatch_forever(self) -> None:
        """Takes jobs when woken (a job created or finished here) and, on a
        shared store, every `poll_s` (jobs created or left by others)."""
        # A SQLite store has no other gateway to hear of; its poll only
        # retakes a job whose lease could not be given back.
        poll_s = self._config.poll_s if self._store.shared else self._config.lease_s
        while not self._stopping:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), poll_s)
            woken = self._wake.is_set()  # a job created or finished here
            self._wake.clear()
            try:
                async with self._claiming:
                    await self._dispatch()
                await self._estimate_wait(0.0 if woken else WAIT_REFRESH_S)
            except Exception:  # the store is unreachable: try again on the next round
                logger.exception("could not take jobs from the store")
                await asyncio.sleep(self._config.poll_s)

    async def _dispatch(self) -> None:
        """Leases and starts jobs while there is room, then publishes where
        the waiting ones stand."""
        while len(self._running) < self._config.max_concurrent_jobs and not self._stopping:
            claim = await self._store.run(self._store.claim_next, self._config.lease_s, list(self._running))
            if claim is None:
                break
            await self._adopt(claim)
        queued = await self._store.run(self._store.queued_jobs)
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
                await self._release_stored_audio(job.job_id)
                await self._finish_cancelled(job, time.monotonic())
                return
            failure: JobFailure | None = job.failure  # set when its row could not be read
            checkpoint: Checkpoint | None = None
            if failure is None and job.uploaded and not await asyncio.to_thread(Path(job.media_path).exists):
                failure = JobFailure(grpc.StatusCode.DATA_LOSS.name, "the uploaded file was lost", Stage.DECODE)
            if failure is None:
                try:
                    checkpoint = await self._store.run(self._store.checkpoint, job.job_id)
                except CorruptRecordError as error:
                    failure = JobFailure("DATA_LOSS", str(error), job.stage)
            if failure is not None or checkpoint is None:
                await self._release_stored_audio(job.job_id)
                await self._fail(job, failure or JobFailure("DATA_LOSS", "no checkpoint", job.stage), time.monotonic())
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
        self._start(job, checkpoint if _has_progress(checkpoint) else None)

    async def _heartbeat_forever(self) -> None:
        """Renews the leases of the jobs this gateway runs; stops those
        another gateway took over (this one's lease lapsed) and cancels those
        a client asked, on any gateway, to cancel. When renewals have failed
        for a whole lease (the store out of reach), every job here is
        stopped: another gateway may have taken it, or it is taken again
        from its checkpoint once the store answers."""
        interval_s = self._config.lease_s / 3
        renewed_at = time.monotonic()
        while True:
            try:
                leases = await asyncio.to_thread(self._store.companion)
                break
            except Exception as error:  # noqa: BLE001 - the store out of reach: the heartbeat waits for it
                logger.warning("the heartbeat cannot reach the job store (%s); trying again", error)
                await asyncio.sleep(interval_s)
        try:
            while not self._stopping:
                await asyncio.sleep(interval_s)
                renewed_at = await self._renew(leases, renewed_at)
        finally:
            await asyncio.to_thread(leases.close)

    async def _renew(self, leases: JobStore, renewed_at: float) -> float:
        """One round of the heartbeat; returns when leases were last renewed."""
        job_ids = list(self._running)
        try:
            kept, cancelled = await leases.run(leases.renew_leases, job_ids, self._config.lease_s)
        except StoreUnavailableError as error:
            logger.warning("could not renew the leases of %d jobs: %s", len(job_ids), error)
            if time.monotonic() - renewed_at > self._config.lease_s:
                for job_id in job_ids:
                    self._stop_lost(job_id)
            return renewed_at
        for job_id in job_ids:
            if job_id not in self._running:
                continue  # finished meanwhile
            if job_id not in kept:
                logger.warning("job %s was taken over by another gateway: stopping it here", job_id)
                self._stop_lost(job_id)
            elif job_id in cancelled and job_id not in self._cancel_requested:
                self._spawn(self._drop(job_id))
        return time.monotonic()

    async def _release_lease(self, job_id: str) -> None:
        with contextlib.suppress(Exception):  # unreachable still: the lease lapses instead
            await self._store.run(self._store.release_leases, [job_id])
        self._wake.set()

    def _stop_lost(self, job_id: str) -> None:
        running = self._running.get(job_id)
        if running is None:
            return
        self._lost.add(job_id)
        running[1].keep_audio = True  # its new gateway goes on with it
        running[0].cancel()

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _start(self, job: JobRecord, checkpoint: Checkpoint | None = None) -> None:
        if job.job_id in self._running:
            return  # runs here already (claims pass over this gateway's own jobs)
        pipeline = JobPipeline(job, self._peers, self._store, self._events, self._config, checkpoint)
        task = asyncio.get_running_loop().create_task(self._run(job, pipeline), name=f"job-{job.job_id}")
        self._running[job.job_id] = (task, pipeline)
        self._positions.pop(job.job_id, None)
        logger.info("job %s runs on this gateway (%s)", job.job_id, self._store.owner_id)

        def finished(_: asyncio.Task[None]) -> None:
            self._running.pop(job.job_id, None)
            self._work.pop(job.job_id, None)
            self._cancel_requested.discard(job.job_id)
            lost = job.job_id in self._lost
            self._lost.discard(job.job_id)
            if not job.state.finished and not lost and not self._stopping:
                # Stopped unfinished (the store out of reach): free its lease
                # so that it is taken again as soon as the store answers.
                self._spawn(self._release_lease(job.job_id))
            self._wake.set()

        task.add_done_callback(finished)

    async def _run(self, job: JobRecord, pipeline: JobPipeline) -> None:
        """Runs a job and records how it ended. CancelJob cancels only the
        pipeline's own task (`_work`), never this bookkeeping; gateway shutdown
        cancels this task, leaving the job to the next start (or another
        gateway). A job another gateway took over is left to it unwritten."""
        try:
            await self._run_leased(job, pipeline)
        except LeaseLostError as error:
            logger.warning("stopped job %s: %s", job.job_id, error)
        except StoreUnavailableError:
            # Nothing more can be stored: leave the job to be taken again
            # (here or elsewhere) from its checkpoint once its lease lapses
            # and the store answers again.
            logger.warning("stopped job %s: the job store is unavailable; it resumes later", job.job_id)

    async def _run_leased(self, job: JobRecord, pipeline: JobPipeline) -> None:
        started = time.monotonic() - job.processing_s
        previous, job.state = job.state, JobState.RUNNING
        await self._store.save(job)
        await self._events.publish(job, state_changed=True, previous_state=previous)
        if job.job_id in self._cancel_requested:
            await self._finish_cancelled(job, started)
            return
        work = asyncio.ensure_future(pipeline.run())
        self._work[job.job_id] = work
        try:
            segments = await work
        except asyncio.CancelledError:
            if job.job_id in self._lost:
                raise  # another gateway runs it now: not a word more from this one
            if self._stopping or not work.cancelled():
                # Left RUNNING in the store, its audio kept: the next start resumes it.
                job.processing_s = time.monotonic() - started
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._store.save(job))
                raise
            await self._finish_cancelled(job, started)
            return
        except StageFailedError as failure:
            await self._fail(job, JobFailure(failure.code.name, failure.message, failure.stage), started)
            return
        except CorruptRecordError as error:
            await self._fail(job, JobFailure("DATA_LOSS", str(error), job.stage), started)
            return
        except (LeaseLostError, StoreUnavailableError):
            raise
        except Exception:  # a bug fails this job, not the gateway
            logger.exception("job %s failed with a bug", job.job_id)
            internal = JobFailure(grpc.StatusCode.INTERNAL.name, "internal error in the gateway", job.stage)
            await self._fail(job, internal, started)
            return
        previous, job.state = job.state, JobState.SUCCEEDED
        job.stage = Stage.NONE
        job.segment_count = len(segments)
        job.processing_s = time.monotonic() - started
        await self._store.save_finished(job, segments)
        await self._events.publish(job, state_changed=True, previous_state=previous)
        metrics.JOBS_FINISHED.labels("succeeded").inc()
        if job.audio_duration_s > 0:
            metrics.JOB_RTF.observe(job.processing_s / job.audio_duration_s)
        self.admission.sizes.record(job.audio_duration_s, await asyncio.to_thread(_upload_bytes, job))
        self._discard_upload(job)
        logger.info("job %s succeeded: %.1f s of audio in %.1f s", job.job_id, job.audio_duration_s, job.processing_s)

    async def _finish_cancelled(self, job: JobRecord, started: float) -> None:
        previous, job.state = job.state, JobState.CANCELLED
        job.stage = Stage.NONE
        job.waiting_reason = ""
        job.processing_s = time.monotonic() - started
        job.finished_s = time.time()
        await self._store.save(job)
        await self._events.publish(job, state_changed=True, previous_state=previous)
        metrics.JOBS_FINISHED.labels("cancelled").inc()
        self._discard_upload(job)

    async def _fail(self, job: JobRecord, failure: JobFailure, started: float) -> None:
        previous, job.state = job.state, JobState.FAILED
        job.failure = failure
        job.stage = Stage.NONE
        job.waiting_reason = ""
        job.processing_s = time.monotonic() - started
        job.finished_s = time.time()
        await self._store.save(job)
        await self._events.publish(
            job,
            state_changed=True,
            previous_state=previous,
            error=gateway_pb2.JobError(code=failure.code, message=failure.message, stage=int(failure.stage)),  # type: ignore[arg-type]
        )
        metrics.JOBS_FINISHED.labels("failed").inc()
        self._discard_upload(job)

    def _discard_upload(self, job: JobRecord) -> None:
        if job.uploaded and job.media_path:
            Path(job.media_path).unlink(missing_ok=True)

    def withdraw_later(self, job_id: str, submission: asyncio.Future[JobRecord]) -> None:
        """Removes a job whose creation the client abandoned, once it is
        submitted: its task, its upload and every record of it (unless the
        submission found an earlier job with the same request id)."""

        async def withdraw() -> None:
            job = await submission
            if job.job_id != job_id:
                return
            await self.cancel(job.job_id)
            self._discard_upload(job)
            await self._store.run(self._store.delete_job, job.job_id)
            logger.info("withdrew job %s: its upload was cut off", job.job_id)

        self._spawn(withdraw())

    async def _drop(self, job_id: str) -> None:
        """Stops a job this gateway runs; its task records it as cancelled."""
        running = self._running.get(job_id)
        if running is None:
            return
        self._cancel_requested.add(job_id)
        work = self._work.get(job_id)
        if work is not None:
            work.cancel()
        # Waits without passing a cancellation of this call on to the job.
        await asyncio.wait({running[0]})

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancels a queued or running job, wherever it runs; a finished one
        is returned unchanged."""
        job = await self._store.run(self._store.get_job, job_id)
        if job.state.finished:
            return job
        async with self._claiming:
            if job_id not in self._running:
                claim = await self._store.run(self._store.claim, job_id, self._config.lease_s)
                if claim is not None:
                    # Waiting, or left by a gateway that is gone: nothing runs it.
                    if claim.job.state == JobState.RUNNING:
                        await self._release_stored_audio(job_id)
                    with contextlib.suppress(LeaseLostError):
                        await self._finish_cancelled(claim.job, time.monotonic())
                    self._positions.pop(job_id, None)
                    self._wake.set()
                    return await self._store.run(self._store.get_job, job_id)
        if job_id in self._running:
            await self._drop(job_id)
            return await self._store.run(self._store.get_job, job_id)
        # Another gateway runs it: its heartbeat reads the request.
        await self._store.run(self._store.request_cancel, job_id)
        deadline = time.monotonic() + self._config.lease_s * 2
        while True:
            job = await self._store.run(self._store.get_job, job_id)
            if job.state.finished or time.monotonic() > deadline:
                return job
            await asyncio.sleep(min(0.2, self._config.poll_s))

    async def _release_stored_audio(self, job_id: str) -> None:
        """Gives back the audio a job that will not run again still holds."""
        try:
            handle = await self._store.run(self._store.audio_handle, job_id)
        except DecodeError:
            return  # unreadable: its lease frees it
        if handle is None:
            return
        await release_audio(self._peers.audio, self._store, job_id, handle)

    async def sweep_expired(self) -> int:
        """Deletes finished jobs older than the retention, with their files."""
        expired = await self._store.run(self._store.expired_jobs, time.time() - self._config.retention_s)
        for job in expired:
            self._discard_upload(job)
            await self._store.run(self._store.delete_job, job.job_id)
        if expired:
            logger.info("deleted %d jobs past their retention", len(expired))
        return len(expired)

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep_expired()
            except Exception:
                logger.exception("retention sweep failed")
            await asyncio.sleep(self._config.retention_sweep_interval_s)

    def check_upload_space(self, size_bytes: int) -> None:
        """RESOURCE_EXHAUSTED when storing `size_bytes` more would leave less
        free disk than the configured minimum."""
        free = shutil.disk_usage(self.uploads_dir).free
        if free - size_bytes < self._config.min_free_disk_bytes:
            raise ResourceExhaustedError(
                f"not enough disk space for uploads ({free} bytes free, {self._config.min_free_disk_bytes}"
                " kept free); try again later",
                retry_after_s=60,
            )

    async def shutdown(self) -> None:
        """Stops running jobs without marking them, keeping their audio, and
        gives up their leases: the next start, or another gateway at once,
        resumes them from their checkpoints."""
        self._stopping = True
        for task in [*self._loops, *self._background]:
            task.cancel()
        running = list(self._running.items())
        for _, (task, pipeline) in running:
            pipeline.keep_audio = True
            task.cancel()
        await asyncio.gather(*(task for _, (task, _) in running), *self._loops, return_exceptions=True)
        with contextlib.suppress(Exception):
            await self._store.run(self._store.release_leases, [job_id for job_id, _ in running])


def _upload_bytes(job: JobRecord) -> int:
    """The size of a job's kept upload (0: not an upload, or not on this host)."""
    if not (job.uploaded and job.media_path):
        return 0
    try:
        return Path(job.media_path).stat().st_size
    except OSError:
        return 0


def _has_progress(checkpoint: Checkpoint) -> bool:
    """Whether a job's checkpoint holds anything to go on from."""
    return bool(
        checkpoint.audio_handle
        or checkpoint.speech_chunks
        or checkpoint.detection_complete
        or checkpoint.transcripts
        or checkpoint.alignments
        or checkpoint.speaker_turns
    )

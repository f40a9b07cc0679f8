"""Job life cycle: creation (idempotent by request id), the priority queue in
front of a bounded number of running jobs, cancellation, recovery of
unfinished jobs when the gateway starts, and retention of finished ones."""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import logging
import shutil
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import grpc
from google.protobuf.message import DecodeError

from common import metrics
from common.errors import ResourceExhaustedError
from common.transcript import Segment
from gateway.audio_lease import release_audio
from gateway.config import GatewayConfig
from gateway.events import EventHub
from gateway.jobs import JobFailure, JobRecord, JobState, Stage
from gateway.pipeline import JobPipeline, Peers, StageFailedError
from gateway.store import Checkpoint, CorruptRecordError, JobStore
from subtitler.gateway.v1 import gateway_pb2

logger = logging.getLogger(__name__)

# Retry hint for a client refused because the queue is full.
QUEUE_FULL_RETRY_AFTER_S = 30.0


class JobScheduler:
    """Owns every job's task: at most `max_concurrent_jobs` run, the others
    wait in a queue ordered by priority, then arrival."""

    def __init__(self, store: JobStore, events: EventHub, peers: Peers, config: GatewayConfig) -> None:
        self._store = store
        self._events = events
        self._peers = peers
        self._config = config
        # (-priority, created_s, job_id) of queued jobs, and their records.
        self._queue: list[tuple[int, float, str]] = []
        self._queued: dict[str, JobRecord] = {}
        self._positions: dict[str, int] = {}
        self._running: dict[str, tuple[asyncio.Task[None], JobPipeline]] = {}
        # The pipeline task of each running job, and the jobs asked to stop.
        self._work: dict[str, asyncio.Future[list[Segment]]] = {}
        self._cancel_requested: set[str] = set()
        # Checkpoints of recovered jobs until they start.
        self._checkpoints: dict[str, Checkpoint] = {}
        self._background: set[asyncio.Task[object]] = set()
        self._stopping = False
        self.uploads_dir = config.data_dir / "uploads"
        self.uploads_dir.mkdir(parents=True, exist_ok=True)

    @property
    def running_count(self) -> int:
        """Jobs running now."""
        return len(self._running)

    @property
    def queued_count(self) -> int:
        """Jobs waiting in the queue now."""
        return len(self._queue)

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

    def check_queue_space(self) -> None:
        run_slot_free = len(self._running) + len(self._queue) < self._config.max_concurrent_jobs
        if not run_slot_free and len(self._queue) >= self._config.max_queued_jobs:
            raise ResourceExhaustedError(
                f"the queue is full ({len(self._queue)} jobs waiting); try again later",
                retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
            )

    async def existing(self, request_id: str, owner: str = "") -> JobRecord | None:
        """The job `owner` created with `request_id`, if any."""
        if not request_id:
            return None
        return await self._store.run(self._store.job_by_request_id, request_id, owner)

    async def submit(self, job: JobRecord) -> JobRecord:
        """Stores a new job and queues it; with a request id already used,
        returns the job created with it instead."""
        self.check_queue_space()
        stored = await self._store.run(self._store.insert_job, job)
        if stored.job_id != job.job_id:
            self._discard_upload(job)
            return stored
        await self._events.publish(job, state_changed=True)
        self._enqueue(job)
        return job

    def queue_position(self, job_id: str) -> int:
        return self._positions.get(job_id, 0)

    def _enqueue(self, job: JobRecord) -> None:
        heapq.heappush(self._queue, (-job.priority, job.created_s, job.job_id))
        self._queued[job.job_id] = job
        self._dispatch()

    def _dispatch(self) -> None:
        """Starts queued jobs while there is room, then tells the waiting ones
        where they stand."""
        while self._queue and len(self._running) < self._config.max_concurrent_jobs and not self._stopping:
            _, _, job_id = heapq.heappop(self._queue)
            job = self._queued.pop(job_id)
            self._positions.pop(job_id, None)
            self._start(job, self._checkpoints.pop(job_id, None))
        for position, (_, _, job_id) in enumerate(sorted(self._queue), start=1):
            if self._positions.get(job_id) != position:
                self._positions[job_id] = position
                self._spawn(self._events.publish(self._queued[job_id], queue_position=position))

    def _spawn(self, work: Coroutine[Any, Any, object]) -> None:
        task: asyncio.Task[object] = asyncio.get_running_loop().create_task(work)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _start(self, job: JobRecord, checkpoint: Checkpoint | None = None) -> None:
        pipeline = JobPipeline(job, self._peers, self._store, self._events, self._config, checkpoint)
        task = asyncio.get_running_loop().create_task(self._run(job, pipeline), name=f"job-{job.job_id}")
        self._running[job.job_id] = (task, pipeline)

        def finished(_: asyncio.Task[None]) -> None:
            self._running.pop(job.job_id, None)
            self._work.pop(job.job_id, None)
            self._cancel_requested.discard(job.job_id)
            self._dispatch()

        task.add_done_callback(finished)

    async def _run(self, job: JobRecord, pipeline: JobPipeline) -> None:
        """Runs a job and records how it ended. CancelJob cancels only the
        pipeline's own task (`_work`), never this bookkeeping; gateway shutdown
        cancels this task, leaving the job to the next start."""
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
            await self._drop(job.job_id)
            self._discard_upload(job)
            await self._store.run(self._store.delete_job, job.job_id)
            logger.info("withdrew job %s: its upload was cut off", job.job_id)

        self._spawn(withdraw())

    async def _drop(self, job_id: str) -> None:
        """Takes a job out of the queue, or stops it if it runs."""
        if self._queued.pop(job_id, None) is not None:
            self._checkpoints.pop(job_id, None)
            self._queue = [entry for entry in self._queue if entry[2] != job_id]
            heapq.heapify(self._queue)
            self._positions.pop(job_id, None)
            self._dispatch()
        running = self._running.get(job_id)
        if running is not None:
            self._cancel_requested.add(job_id)
            work = self._work.get(job_id)
            if work is not None:
                work.cancel()
            # Waits without passing a cancellation of this call on to the job.
            await asyncio.wait({running[0]})

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancels a queued or running job; a finished one is returned unchanged."""
        job = await self._store.run(self._store.get_job, job_id)
        if job.state.finished:
            return job
        queued = self._queued.get(job_id)
        running = self._running.get(job_id)
        await self._drop(job_id)
        if queued is not None:
            await self._finish_cancelled(queued, time.monotonic())
        elif running is None:
            # Known to the store only (left by a crash and not resumed yet).
            await self._release_stored_audio(job_id)
            await self._finish_cancelled(job, time.monotonic())
        return await self._store.run(self._store.get_job, job_id)

    async def recover(self) -> int:
        """Queues again every job a previous gateway left unfinished, to go on
        from its checkpoint. A job whose records cannot be read fails; the
        others go on."""
        jobs = await self._store.run(self._store.unfinished_jobs)
        for job in jobs:
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
                continue
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
            self._resume(job, checkpoint)
        return len(jobs)

    async def _release_stored_audio(self, job_id: str) -> None:
        """Gives back the audio a job that will not run again still holds."""
        try:
            handle = await self._store.run(self._store.audio_handle, job_id)
        except DecodeError:
            return  # unreadable: its lease frees it
        if handle is None:
            return
        await release_audio(self._peers.audio, self._store, job_id, handle)

    def _resume(self, job: JobRecord, checkpoint: Checkpoint) -> None:
        # Resumed jobs keep their place: they were created before any new one.
        self._checkpoints[job.job_id] = checkpoint
        self._enqueue(job)

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
        """Stops running jobs without marking them, keeping their audio: the
        next start resumes them from their checkpoints."""
        self._stopping = True
        for task in list(self._background):
            task.cancel()
        running = list(self._running.values())
        for task, pipeline in running:
            pipeline.keep_audio = True
            task.cancel()
        await asyncio.gather(*(task for task, _ in running), return_exceptions=True)

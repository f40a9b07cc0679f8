"""Job life cycle: creation, the bounded queue of running jobs, cancellation,
and recovery of unfinished jobs when the gateway starts."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import shutil
import time
import uuid
from pathlib import Path

import grpc

from common.errors import ResourceExhaustedError
from gateway.config import GatewayConfig
from gateway.events import EventHub
from gateway.jobs import JobFailure, JobRecord, JobState, Stage
from gateway.pipeline import JobPipeline, Peers, StageFailedError
from gateway.store import JobStore
from subtitler.gateway.v1 import gateway_pb2

logger = logging.getLogger(__name__)


class JobScheduler:
    """Owns every running job's task; at most `max_concurrent_jobs` run at once."""

    def __init__(self, store: JobStore, events: EventHub, peers: Peers, config: GatewayConfig) -> None:
        self._store = store
        self._events = events
        self._peers = peers
        self._config = config
        self._slots = asyncio.Semaphore(config.max_concurrent_jobs)
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._stopping = False
        self._withdrawals: set[asyncio.Task[None]] = set()
        self.uploads_dir = config.data_dir / "uploads"
        self.uploads_dir.mkdir(parents=True, exist_ok=True)

    def new_job(self, config: gateway_pb2.JobConfig, source: str, media_path: str, *, uploaded: bool) -> JobRecord:
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
        )

    async def submit(self, job: JobRecord) -> JobRecord:
        """Stores a new job and queues it."""
        await self._store.run(self._store.insert_job, job)
        await self._events.publish(job)
        self._start(job)
        return job

    def _start(self, job: JobRecord) -> None:
        task = asyncio.get_running_loop().create_task(self._run(job), name=f"job-{job.job_id}")
        self._tasks[job.job_id] = task
        task.add_done_callback(lambda _: self._tasks.pop(job.job_id, None))

    async def _run(self, job: JobRecord) -> None:
        async with self._slots:
            started = time.monotonic()
            job.state = JobState.RUNNING
            await self._store.run(self._store.update_job, job)
            await self._events.publish(job)
            pipeline = JobPipeline(job, self._peers, self._store, self._events, self._config)
            try:
                segments = await pipeline.run()
            except asyncio.CancelledError:
                if self._stopping:
                    raise  # left RUNNING in the store: the next start recovers it
                job.state = JobState.CANCELLED
                job.stage = Stage.NONE
                job.processing_s = time.monotonic() - started
                await self._store.run(self._store.update_job, job)
                await self._events.publish(job)
                self._discard_upload(job)
                return
            except StageFailedError as failure:
                await self._fail(job, JobFailure(failure.code.name, failure.message, failure.stage), started)
                return
            except Exception:  # a bug fails this job, not the gateway
                logger.exception("job %s failed with a bug", job.job_id)
                internal = JobFailure(grpc.StatusCode.INTERNAL.name, "internal error in the gateway", job.stage)
                await self._fail(job, internal, started)
                return
            job.state = JobState.SUCCEEDED
            job.stage = Stage.NONE
            job.segment_count = len(segments)
            job.processing_s = time.monotonic() - started
            await self._store.run(self._store.finish_job, job, segments)
            await self._events.publish(job)
            self._discard_upload(job)
            logger.info(
                "job %s succeeded: %.1f s of audio in %.1f s", job.job_id, job.audio_duration_s, job.processing_s
            )

    async def _fail(self, job: JobRecord, failure: JobFailure, started: float) -> None:
        job.state = JobState.FAILED
        job.failure = failure
        job.stage = Stage.NONE
        job.processing_s = time.monotonic() - started
        await self._store.run(self._store.update_job, job)
        await self._events.publish(
            job,
            error=gateway_pb2.JobError(code=failure.code, message=failure.message, stage=int(failure.stage)),  # type: ignore[arg-type]
        )
        self._discard_upload(job)

    def _discard_upload(self, job: JobRecord) -> None:
        if job.uploaded:
            Path(job.media_path).unlink(missing_ok=True)

    def withdraw_later(self, submission: asyncio.Future[JobRecord]) -> None:
        """Removes a job whose creation the client abandoned, once it is submitted:
        its task, its upload and every record of it."""

        async def withdraw() -> None:
            job = await submission
            task = self._tasks.pop(job.job_id, None)
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
            self._discard_upload(job)
            await self._store.run(self._store.delete_job, job.job_id)
            logger.info("withdrew job %s: its upload was cut off", job.job_id)

        task = asyncio.get_running_loop().create_task(withdraw())
        self._withdrawals.add(task)
        task.add_done_callback(self._withdrawals.discard)

    async def cancel(self, job_id: str) -> JobRecord:
        """Cancels a queued or running job; a finished one is returned unchanged."""
        job = await self._store.run(self._store.get_job, job_id)
        if job.state.finished:
            return job
        task = self._tasks.get(job_id)
        if task is not None:
            task.cancel()
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(asyncio.shield(task), timeout=30)
        return await self._store.run(self._store.get_job, job_id)

    async def recover(self) -> int:
        """Queues again every job a previous gateway left unfinished. This
        version runs them from the start (earlier stage outputs are dropped)."""
        jobs = await self._store.run(self._store.unfinished_jobs)
        for job in jobs:
            if job.uploaded and not await asyncio.to_thread(Path(job.media_path).exists):
                lost = JobFailure(grpc.StatusCode.FAILED_PRECONDITION.name, "the uploaded file was lost", Stage.DECODE)
                await self._fail(job, lost, time.monotonic())
                continue
            await self._store.run(self._store.clear_stage_outputs, job.job_id)
            job.state = JobState.QUEUED
            job.stage = Stage.NONE
            job.stage_fractions = {}
            job.segment_count = 0
            await self._store.run(self._store.update_job, job)
            await self._events.publish(job)
            self._start(job)
        return len(jobs)

    async def shutdown(self) -> None:
        """Stops running jobs without marking them: the next start recovers them."""
        self._stopping = True
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def require_upload_space(self, size_bytes: int) -> None:
        free = shutil.disk_usage(self.uploads_dir).free
        if size_bytes and size_bytes > free:
            raise ResourceExhaustedError(
                f"not enough disk space for a {size_bytes}-byte upload ({free} bytes free)", retry_after_s=60
            )

"""How a job ended, recorded: its final state saved with its event, the
metrics counted, its upload deleted and, for a job that will not run again,
its audio given back."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence

from google.protobuf.message import DecodeError

from common.rpc import metrics
from common.transcript import Segment
from gateway.jobs.admission import JobSizes
from gateway.jobs.events import EventHub
from gateway.jobs.run.audio_lease import release_audio
from gateway.jobs.run.pipeline import Peers
from gateway.jobs.uploads import discard_upload, upload_bytes
from gateway.records import JobFailure, JobRecord, JobState, Stage
from gateway.store.async_store import AsyncJobStore
from subtitler.gateway.v1 import gateway_pb2

logger = logging.getLogger(__name__)


class OutcomeRecorder:
    """Writes the end of a job (succeeded, cancelled or failed). `started`
    is the `time.monotonic()` its processing time counts from. Every write
    checks the lease like any other (LeaseLostError)."""

    def __init__(self, store: AsyncJobStore, events: EventHub, peers: Peers, sizes: JobSizes) -> None:
        self._store = store
        self._events = events
        self._peers = peers
        # What finished jobs' audio lasted, for the admission's estimates.
        self._sizes = sizes

    async def succeeded(self, job: JobRecord, segments: Sequence[Segment], started: float) -> None:
        previous, job.state = job.state, JobState.SUCCEEDED
        job.stage = Stage.NONE
        job.segment_count = len(segments)
        job.processing_s = time.monotonic() - started
        await self._store.save_finished(job, segments)
        await self._events.publish(job, state_changed=True, previous_state=previous)
        metrics.JOBS_FINISHED.labels("succeeded").inc()
        if job.audio_duration_s > 0:
            metrics.JOB_RTF.observe(job.processing_s / job.audio_duration_s)
        self._sizes.record(job.audio_duration_s, await asyncio.to_thread(upload_bytes, job))
        discard_upload(job)
        logger.info("job %s succeeded: %.1f s of audio in %.1f s", job.job_id, job.audio_duration_s, job.processing_s)

    async def cancelled(self, job: JobRecord, started: float) -> None:
        previous, job.state = job.state, JobState.CANCELLED
        job.stage = Stage.NONE
        job.waiting_reason = ""
        job.processing_s = time.monotonic() - started
        job.finished_s = time.time()
        await self._store.save(job)
        await self._events.publish(job, state_changed=True, previous_state=previous)
        metrics.JOBS_FINISHED.labels("cancelled").inc()
        discard_upload(job)

    async def failed(self, job: JobRecord, failure: JobFailure, started: float) -> None:
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
        discard_upload(job)

    async def release_stored_audio(self, job_id: str) -> None:
        """Gives back the audio a job that will not run again still holds."""
        try:
            handle = await self._store.audio_handle(job_id)
        except DecodeError:
            return  # unreadable: its lease frees it
        if handle is None:
            return
        await release_audio(self._peers.audio, self._store, job_id, handle)

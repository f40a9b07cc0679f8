"""The job store for async code: every operation the gateway's event loop
asks of the store is an `async def` here that runs the blocking call on the
store's own thread (`StoreThread`: tried once more on a dropped connection,
StoreUnavailableError when the database cannot be reached), so async code
cannot call a blocking method by mistake."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path

from common.transcript import Segment, TimeRange
from gateway.records import JobRecord, JobState
from gateway.store.job_queue import Claim
from gateway.store.job_store import JobStore
from gateway.store.stage_outputs import Checkpoint
from subtitler.common.v1 import common_pb2
from subtitler.diarize.v1 import diarize_pb2
from subtitler.gateway.v1 import gateway_pb2


class AsyncJobStore:
    """A `JobStore` seen from the event loop. Its operations run one at a
    time on the store's thread (`JobStore.thread`)."""

    def __init__(self, store: JobStore) -> None:
        self._store = store
        self._run = store.thread.run
        # Several gateways may share a PostgreSQL store; a SQLite file is one gateway's.
        self.shared = store.shared
        # This gateway, as the holder of its jobs' leases.
        self.owner_id = store.owner_id

    @classmethod
    async def open(cls, location: Path | str, *, owner_id: str = "") -> AsyncJobStore:
        """Opens (and migrates) the store off the event loop; see `JobStore`."""
        return cls(await asyncio.to_thread(JobStore, location, owner_id=owner_id))

    async def companion(self) -> AsyncJobStore:
        """The same store for the same gateway on a connection and thread of
        its own (`JobStore.companion`), for the lease heartbeat."""
        return AsyncJobStore(await asyncio.to_thread(self._store.companion))

    async def close(self) -> None:
        """Waits for the operation under way and closes the connection, off the event loop."""
        await asyncio.to_thread(self._store.close)

    # Jobs

    async def save(self, job: JobRecord) -> None:
        """Stores the job's state. The record is copied on the calling (event
        loop) thread, since the loop goes on changing it meanwhile.
        LeaseLostError: another gateway runs the job now."""
        job.updated_s = time.time()
        await self._run(self._store.jobs.update_job, job.snapshot())

    async def save_finished(self, job: JobRecord, segments: Sequence[Segment]) -> None:
        """Stores a succeeded job's result and state (see `save`)."""
        job.updated_s = job.finished_s = time.time()
        job.waiting_reason = ""
        await self._run(self._store.outputs.finish_job, job.snapshot(), segments)

    async def insert_job(self, job: JobRecord, first_event: gateway_pb2.JobEvent | None = None) -> JobRecord:
        return await self._run(self._store.jobs.insert_job, job, first_event)

    async def job_by_request_id(self, request_id: str, owner: str = "") -> JobRecord | None:
        return await self._run(self._store.jobs.job_by_request_id, request_id, owner)

    async def get_job(self, job_id: str) -> JobRecord:
        return await self._run(self._store.jobs.get_job, job_id)

    async def add_retry(self, job_id: str, attempt: gateway_pb2.RetryAttempt) -> None:
        await self._run(self._store.jobs.add_retry, job_id, attempt)

    async def request_cancel(self, job_id: str) -> None:
        await self._run(self._store.jobs.request_cancel, job_id)

    async def expired_jobs(self, finished_before_s: float) -> list[JobRecord]:
        return await self._run(self._store.jobs.expired_jobs, finished_before_s)

    async def list_jobs(
        self, *, limit: int, before: tuple[float, str] | None, state: JobState | None, owner: str | None = None
    ) -> list[JobRecord]:
        return await self._run(self._store.jobs.list_jobs, limit=limit, before=before, state=state, owner=owner)

    async def delete_job(self, job_id: str) -> None:
        await self._run(self._store.jobs.delete_job, job_id)

    async def unfinished_jobs(self) -> list[JobRecord]:
        return await self._run(self._store.jobs.unfinished_jobs)

    # Leases and the queue

    async def claim_next(self, lease_s: float, running: Sequence[str] = ()) -> Claim | None:
        return await self._run(self._store.queue.claim_next, lease_s, running)

    async def claim(self, job_id: str, lease_s: float) -> Claim | None:
        return await self._run(self._store.queue.claim, job_id, lease_s)

    async def renew_leases(self, job_ids: Sequence[str], lease_s: float) -> tuple[set[str], set[str]]:
        return await self._run(self._store.queue.renew_leases, job_ids, lease_s)

    async def release_leases(self, job_ids: Sequence[str]) -> None:
        await self._run(self._store.queue.release_leases, job_ids)

    async def clear_leases(self) -> int:
        return await self._run(self._store.queue.clear_leases)

    async def queued_jobs(self) -> list[tuple[JobRecord, int]]:
        return await self._run(self._store.queue.queued_jobs)

    async def queued_count(self) -> int:
        return await self._run(self._store.queue.queued_count)

    async def publish_queue_position(self, event: gateway_pb2.JobEvent) -> gateway_pb2.JobEvent | None:
        return await self._run(self._store.queue.publish_queue_position, event)

    # Events

    async def append_event(self, event: gateway_pb2.JobEvent) -> gateway_pb2.JobEvent:
        return await self._run(self._store.events.append_event, event)

    async def events_after(self, job_id: str, sequence: int) -> list[gateway_pb2.JobEvent]:
        return await self._run(self._store.events.events_after, job_id, sequence)

    async def listen_for_events(self, on_event: Callable[[str], None]) -> Callable[[], Awaitable[None]] | None:
        """On a shared store: calls `on_event(job_id)` on the listener's own
        thread (not the event loop) whenever another gateway stores an
        event; returns what stops it, which waits for that thread off the
        loop. None for a store only this gateway writes. Starting the
        listener reads nothing, so it does not wait for the store's thread."""
        stop = self._store.events.listen_for_events(on_event)
        if stop is None:
            return None

        async def stop_listening() -> None:
            await asyncio.to_thread(stop)

        return stop_listening

    # Stage outputs

    async def save_audio_handle(self, job_id: str, handle: common_pb2.AudioHandle | None) -> None:
        await self._run(self._store.outputs.save_audio_handle, job_id, handle)

    async def audio_handle(self, job_id: str) -> common_pb2.AudioHandle | None:
        return await self._run(self._store.outputs.audio_handle, job_id)

    async def save_speech_chunk(
        self, job_id: str, chunk_index: int, time_range: TimeRange, speech_ranges: Sequence[TimeRange] = ()
    ) -> None:
        await self._run(self._store.outputs.save_speech_chunk, job_id, chunk_index, time_range, speech_ranges)

    async def mark_detection_complete(self, job_id: str) -> None:
        await self._run(self._store.outputs.mark_detection_complete, job_id)

    async def checkpoint(self, job_id: str) -> Checkpoint:
        return await self._run(self._store.outputs.checkpoint, job_id)

    async def speaker_turns(self, job_id: str) -> diarize_pb2.DiarizeResponse | None:
        return await self._run(self._store.outputs.speaker_turns, job_id)

    async def save_speaker_turns(self, job_id: str, turns: diarize_pb2.DiarizeResponse) -> None:
        await self._run(self._store.outputs.save_speaker_turns, job_id, turns)

    async def save_chunk_transcript(
        self, job_id: str, chunk_index: int, language_code: str, segments: Sequence[Segment]
    ) -> None:
        await self._run(self._store.outputs.save_chunk_transcript, job_id, chunk_index, language_code, segments)

    async def save_chunk_alignment(
        self, job_id: str, chunk_index: int, method: int, segments: Sequence[Segment]
    ) -> None:
        await self._run(self._store.outputs.save_chunk_alignment, job_id, chunk_index, method, segments)

    async def result(self, job_id: str) -> list[Segment]:
        return await self._run(self._store.outputs.result, job_id)

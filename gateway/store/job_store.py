"""The job store: jobs, their events and every stage's output, in one SQLite
file (the embedded default) or a PostgreSQL database that several gateways
share (gateway/store/database.py).

`JobStore` opens the database, migrates its schema (gateway/store/schema.py)
and composes the parts that each own a group of tables, all on one
connection and one transaction model (gateway/store/session.py):
`jobs` (job records and retries, gateway/store/job_table.py), `queue`
(claims, leases and queue positions, gateway/store/job_queue.py), `events`
(gateway/store/event_log.py) and `outputs` (the stage outputs a job resumes
from, gateway/store/stage_outputs.py). Its methods of the same names are
the parts' own, for the callers that use them through the store.

The store is synchronous and not thread-safe by itself. The gateway's async
code holds only an `AsyncJobStore` (gateway/store/async_store.py), whose
every operation is an `async def` run on the store's one thread
(gateway/store/store_thread.py): the event loop cannot block on disk by
mistake, and writes are serialised. Tests and benchmarks call the store
directly.
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

from common.transcript import Segment, TimeRange
from gateway.records import JobRecord, JobState
from gateway.store.database import open_database
from gateway.store.event_log import EventLog
from gateway.store.job_queue import Claim, JobQueue
from gateway.store.job_table import JobTable
from gateway.store.schema import migrate
from gateway.store.session import StoreSession
from gateway.store.stage_outputs import Checkpoint, StageOutputs
from gateway.store.store_thread import StoreThread
from subtitler.common.v1 import common_pb2
from subtitler.diarize.v1 import diarize_pb2
from subtitler.gateway.v1 import gateway_pb2


class JobStore:
    """Jobs and their stage outputs in one SQLite file (the embedded
    default) or a PostgreSQL database (gateway/store/database.py)."""

    def __init__(self, location: Path | str, *, owner_id: str = "") -> None:
        """`location`: the SQLite file, or a `postgresql://` URL. `owner_id`:
        the gateway this store writes for (default: a new one)."""
        self._location = location
        self._connection = open_database(location)
        self.dialect = self._connection.dialect
        # Several gateways may share a PostgreSQL store; a SQLite file is one gateway's.
        self.shared = self.dialect == "postgresql"
        # This gateway, as the holder of its jobs' leases.
        self.owner_id = owner_id or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        # The one thread the connection is used on from async code (AsyncJobStore's operations).
        self.thread = StoreThread(self._connection)
        session = StoreSession(self._connection, self.owner_id)
        migrate(session)
        self.events = EventLog(session)
        self.jobs = JobTable(session, self.events)
        self.queue = JobQueue(session, self.events)
        self.outputs = StageOutputs(session)

    def companion(self) -> JobStore:
        """The same store for the same gateway on a connection and thread of
        its own: lease renewals there never wait behind the store's other
        work (many watchers reading, a slow write)."""
        return JobStore(self._location, owner_id=self.owner_id)

    def close(self) -> None:
        self.thread.close()
        self._connection.close()

    # Leases and the queue (JobQueue)

    def claim_next(self, lease_s: float, running: Sequence[str] = ()) -> Claim | None:
        return self.queue.claim_next(lease_s, running)

    def claim(self, job_id: str, lease_s: float) -> Claim | None:
        return self.queue.claim(job_id, lease_s)

    def renew_leases(self, job_ids: Sequence[str], lease_s: float) -> tuple[set[str], set[str]]:
        return self.queue.renew_leases(job_ids, lease_s)

    def release_leases(self, job_ids: Sequence[str]) -> None:
        self.queue.release_leases(job_ids)

    def clear_leases(self) -> int:
        return self.queue.clear_leases()

    def queued_jobs(self) -> list[tuple[JobRecord, int]]:
        return self.queue.queued_jobs()

    def queued_count(self) -> int:
        return self.queue.queued_count()

    def publish_queue_position(self, event: gateway_pb2.JobEvent) -> gateway_pb2.JobEvent | None:
        return self.queue.publish_queue_position(event)

    # Jobs (JobTable)

    def insert_job(self, job: JobRecord, first_event: gateway_pb2.JobEvent | None = None) -> JobRecord:
        return self.jobs.insert_job(job, first_event)

    def job_by_request_id(self, request_id: str, owner: str = "") -> JobRecord | None:
        return self.jobs.job_by_request_id(request_id, owner)

    def update_job(self, job: JobRecord) -> None:
        self.jobs.update_job(job)

    def get_job(self, job_id: str) -> JobRecord:
        return self.jobs.get_job(job_id)

    def add_retry(self, job_id: str, attempt: gateway_pb2.RetryAttempt) -> None:
        self.jobs.add_retry(job_id, attempt)

    def request_cancel(self, job_id: str) -> None:
        self.jobs.request_cancel(job_id)

    def expired_jobs(self, finished_before_s: float) -> list[JobRecord]:
        return self.jobs.expired_jobs(finished_before_s)

    def list_jobs(
        self, *, limit: int, before: tuple[float, str] | None, state: JobState | None, owner: str | None = None
    ) -> list[JobRecord]:
        return self.jobs.list_jobs(limit=limit, before=before, state=state, owner=owner)

    def delete_job(self, job_id: str) -> None:
        self.jobs.delete_job(job_id)

    def unfinished_jobs(self) -> list[JobRecord]:
        return self.jobs.unfinished_jobs()

    # Events (EventLog)

    def append_event(self, event: gateway_pb2.JobEvent) -> gateway_pb2.JobEvent:
        return self.events.append_event(event)

    def listen_for_events(self, on_event: Callable[[str], None]) -> Callable[[], None] | None:
        return self.events.listen_for_events(on_event)

    def events_after(self, job_id: str, sequence: int) -> list[gateway_pb2.JobEvent]:
        return self.events.events_after(job_id, sequence)

    # Stage outputs (StageOutputs)

    def save_audio_handle(self, job_id: str, handle: common_pb2.AudioHandle | None) -> None:
        self.outputs.save_audio_handle(job_id, handle)

    def audio_handle(self, job_id: str) -> common_pb2.AudioHandle | None:
        return self.outputs.audio_handle(job_id)

    def save_speech_chunk(
        self, job_id: str, chunk_index: int, time_range: TimeRange, speech_ranges: Sequence[TimeRange] = ()
    ) -> None:
        self.outputs.save_speech_chunk(job_id, chunk_index, time_range, speech_ranges)

    def mark_detection_complete(self, job_id: str) -> None:
        self.outputs.mark_detection_complete(job_id)

    def checkpoint(self, job_id: str) -> Checkpoint:
        return self.outputs.checkpoint(job_id)

    def speaker_turns(self, job_id: str) -> diarize_pb2.DiarizeResponse | None:
        return self.outputs.speaker_turns(job_id)

    def save_speaker_turns(self, job_id: str, turns: diarize_pb2.DiarizeResponse) -> None:
        self.outputs.save_speaker_turns(job_id, turns)

    def save_chunk_transcript(
        self, job_id: str, chunk_index: int, language_code: str, segments: Sequence[Segment]
    ) -> None:
        self.outputs.save_chunk_transcript(job_id, chunk_index, language_code, segments)

    def save_chunk_alignment(self, job_id: str, chunk_index: int, method: int, segments: Sequence[Segment]) -> None:
        self.outputs.save_chunk_alignment(job_id, chunk_index, method, segments)

    def finish_job(self, job: JobRecord, segments: Sequence[Segment]) -> None:
        self.outputs.finish_job(job, segments)

    def result(self, job_id: str) -> list[Segment]:
        return self.outputs.result(job_id)

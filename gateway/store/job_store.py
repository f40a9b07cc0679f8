"""SQLite store of jobs, their events and every stage's output.

Each step of a job is committed in its own transaction as it is produced: the
audio handle, the speech chunks (time ranges only), each chunk's transcript,
each chunk's aligned words, and the final result. A job's events are stored
with their sequence numbers so watchers can replay them. The schema carries a
version and is migrated on open.

The store is synchronous and not thread-safe by itself: the gateway calls it
from one dedicated thread (`JobStore.run`), so the event loop never blocks
on disk and writes are serialised.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from google.protobuf.message import DecodeError

from common.errors import DataLossError, NotFoundError, UnavailableError
from common.transcript import Segment, TimeRange, Word
from gateway.records import JobFailure, JobRecord, JobState, Stage
from gateway.store.database import DATABASE_ERRORS as _DATABASE_ERRORS
from gateway.store.database import INTEGRITY_ERRORS, Database, Row, open_database, schema_sql
from subtitler.common.v1 import common_pb2
from subtitler.diarize.v1 import diarize_pb2
from subtitler.gateway.v1 import gateway_pb2

T = TypeVar("T")

logger = logging.getLogger(__name__)

SCHEMA_VERSION = 5

# Migrations from version N-1 to N, applied in order on open.
_MIGRATIONS: dict[int, Sequence[str]] = {
    1: (
        """CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            state INTEGER NOT NULL,
            config {blob} NOT NULL,              -- gateway.v1.JobConfig
            source TEXT NOT NULL,
            media_path TEXT NOT NULL,
            uploaded INTEGER NOT NULL,
            created_s {real} NOT NULL,
            updated_s {real} NOT NULL,
            stage INTEGER NOT NULL DEFAULT 0,
            stage_fractions TEXT NOT NULL DEFAULT '{{}}',
            failure TEXT,                      -- JSON of JobFailure
            audio_duration_s {real} NOT NULL DEFAULT 0,
            language_code TEXT NOT NULL DEFAULT '',
            language_probability {real} NOT NULL DEFAULT 0,
            segment_count INTEGER NOT NULL DEFAULT 0,
            processing_s {real} NOT NULL DEFAULT 0,
            audio_handle {blob},                 -- common.v1.AudioHandle
            request_id TEXT,                   -- client's idempotency key
            priority INTEGER NOT NULL DEFAULT 0,
            detection_complete INTEGER NOT NULL DEFAULT 0,
            waiting_reason TEXT NOT NULL DEFAULT '',
            finished_s {real} NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX jobs_by_creation ON jobs (created_s DESC, job_id DESC)",
        "CREATE UNIQUE INDEX jobs_by_request_id ON jobs (request_id) WHERE request_id IS NOT NULL",
        "CREATE INDEX jobs_by_finish ON jobs (finished_s) WHERE finished_s > 0",
        """CREATE TABLE job_retries (
            job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            sequence INTEGER NOT NULL,
            attempt {blob} NOT NULL,             -- gateway.v1.RetryAttempt
            PRIMARY KEY (job_id, sequence)
        )""",
        """CREATE TABLE job_events (
            job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            sequence INTEGER NOT NULL,
            event {blob} NOT NULL,               -- gateway.v1.JobEvent
            PRIMARY KEY (job_id, sequence)
        )""",
        """CREATE TABLE speech_chunks (
            job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            chunk_index INTEGER NOT NULL,
            start_s {real} NOT NULL,
            end_s {real} NOT NULL,
            PRIMARY KEY (job_id, chunk_index)
        )""",
        """CREATE TABLE chunk_transcripts (
            job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            chunk_index INTEGER NOT NULL,
            language_code TEXT NOT NULL,
            segments TEXT NOT NULL,            -- JSON list of segments
            PRIMARY KEY (job_id, chunk_index)
        )""",
        """CREATE TABLE chunk_alignments (
            job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            chunk_index INTEGER NOT NULL,
            method INTEGER NOT NULL,
            segments TEXT NOT NULL,            -- JSON list of segments with words
            PRIMARY KEY (job_id, chunk_index)
        )""",
        """CREATE TABLE results (
            job_id TEXT PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
            segments TEXT NOT NULL             -- JSON list of the final segments
        )""",
    ),
    # Jobs belong to the client whose token created them (empty: no tokens);
    # request ids are one client's own.
    2: (
        "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
        "DROP INDEX jobs_by_request_id",
        "CREATE UNIQUE INDEX jobs_by_owner_request_id ON jobs (owner, request_id) WHERE request_id IS NOT NULL",
        "CREATE INDEX jobs_by_owner ON jobs (owner, created_s DESC, job_id DESC)",
    ),
    # Who spoke when, once a job's diarization is done.
    3: (
        """CREATE TABLE speaker_turns (
            job_id TEXT PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
            turns {blob} NOT NULL                -- diarize.v1.DiarizeResponse
        )""",
    ),
    # Several gateways on one store: the gateway running a job holds its
    # lease (renewed by a heartbeat, timed by the database's clock); any
    # gateway may ask for a job to be cancelled; a queued job's last
    # published position, so two gateways never publish the same one twice.
    4: (
        "ALTER TABLE jobs ADD COLUMN lease_owner TEXT",
        "ALTER TABLE jobs ADD COLUMN lease_expires_s {real} NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN queue_position INTEGER NOT NULL DEFAULT 0",
        f"CREATE INDEX jobs_unfinished ON jobs (priority DESC, created_s, job_id)"
        f" WHERE state IN ({int(JobState.QUEUED)}, {int(JobState.RUNNING)})",
    ),
    # The speech ranges (the VAD's) merged into each chunk, for the coverage
    # check: a JSON list of [start_s, end_s].
    5: ("ALTER TABLE speech_chunks ADD COLUMN speech_ranges TEXT NOT NULL DEFAULT '[]'",),
}

_UNFINISHED = (int(JobState.QUEUED), int(JobState.RUNNING))


class CorruptRecordError(DataLossError):
    """A stored record cannot be read."""


class StoreUnavailableError(UnavailableError):
    """The job store cannot be reached or written now (a PostgreSQL server
    restarting, a disk error): the operation can be tried again."""


class LeaseLostError(Exception):
    """Another gateway holds the lease of the job this one meant to write:
    it took the job over (this one's heartbeat lapsed), so this one must
    stop it without writing anything more."""


@dataclass(frozen=True)
class Claim:
    """A job a gateway has just leased, and whether a client asked (on any
    gateway) for it to be cancelled."""

    job: JobRecord
    cancel_requested: bool


@dataclass(frozen=True)
class Checkpoint:
    """What a job had finished when it stopped: every stage output stored."""

    audio_handle: common_pb2.AudioHandle | None
    speech_chunks: dict[int, TimeRange]
    detection_complete: bool
    # chunk index -> (language code, segments)
    transcripts: dict[int, tuple[str, list[Segment]]]
    # chunk index -> (align method, segments with words)
    alignments: dict[int, tuple[int, list[Segment]]]
    # The diarization, when done.
    speaker_turns: diarize_pb2.DiarizeResponse | None = None
    # chunk index -> the speech ranges merged into it (empty for chunks stored before schema 5)
    speech_ranges: dict[int, tuple[TimeRange, ...]] = field(default_factory=dict)


def segments_to_json(segments: Sequence[Segment]) -> str:
    return json.dumps([asdict(segment) for segment in segments], separators=(",", ":"))


def segments_from_json(text: str) -> list[Segment]:
    try:
        return [
            Segment(**{**item, "words": tuple(Word(**word) for word in item["words"])}) for item in json.loads(text)
        ]
    except (ValueError, TypeError, KeyError) as error:
        raise CorruptRecordError(f"stored segments cannot be read: {error}") from error


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
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-store")
        self._migrate()

    def companion(self) -> JobStore:
        """The same store for the same gateway on a connection and thread of
        its own: lease renewals there never wait behind the store's other
        work (many watchers reading, a slow write)."""
        return JobStore(self._location, owner_id=self.owner_id)

    async def save(self, job: JobRecord) -> None:
        """Stores the job's state. The record is copied on the calling (event
        loop) thread, since the loop goes on changing it meanwhile."""
        job.updated_s = time.time()
        await self.run(self.update_job, job.snapshot())

    async def save_finished(self, job: JobRecord, segments: Sequence[Segment]) -> None:
        """Stores a succeeded job's result and state (see `save`)."""
        job.updated_s = job.finished_s = time.time()
        job.waiting_reason = ""
        await self.run(self.finish_job, job.snapshot(), segments)

    async def run(self, operation: Callable[..., T], *args: Any) -> T:
        """Runs a store operation on the store's own thread. An operation
        that met a connection the server had dropped (a restart, a failover)
        is tried once more on a new one: each is one transaction, undone
        when it failed. StoreUnavailableError: the database cannot be
        reached."""

        def attempt() -> T:
            try:
                return operation(*args)
            except _DATABASE_ERRORS:
                if not self._connection.lost():
                    raise
                logger.warning("the job store's connection was lost; connecting again")
                return operation(*args)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, attempt)
        except _DATABASE_ERRORS as error:
            logger.warning("job store operation %s failed: %s", getattr(operation, "__name__", operation), error)
            raise StoreUnavailableError("the job store is unavailable; try again shortly") from error

    def close(self) -> None:
        self._executor.shutdown(wait=True)
        self._connection.close()

    @contextmanager
    def _transaction(self) -> Iterator[Database]:
        self._connection.begin()
        try:
            yield self._connection
        except BaseException:
            self._connection.rollback()
            raise
        try:
            self._connection.commit()
        except _DATABASE_ERRORS as error:
            # The server may have committed before the connection broke:
            # doing it again could store it twice, so it is not retried.
            raise StoreUnavailableError("the job store was lost while committing; try again shortly") from error

    def _migrate(self) -> None:
        with self._connection.migration_lock():
            version = self._connection.schema_version()
            if version > SCHEMA_VERSION:
                raise RuntimeError(
                    f"the job store was written by a newer gateway (schema {version}, this one knows {SCHEMA_VERSION})"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                with self._transaction() as db:
                    for statement in _MIGRATIONS[target]:
                        db.execute(schema_sql(statement, self.dialect))
                    db.set_schema_version(target)

    def _check_writable(self, db: Database, job_id: str) -> None:
        """Locks the job's row for the transaction and raises LeaseLostError
        when another gateway holds its lease, or the job is gone (deleted
        while it ran)."""
        row = db.execute(f"SELECT lease_owner FROM jobs WHERE job_id = ?{db.for_update}", (job_id,)).fetchone()
        if row is None:
            raise LeaseLostError(f"job {job_id} is gone")
        holder = row["lease_owner"]
        if holder is not None and holder != self.owner_id:
            raise LeaseLostError(f"gateway {holder} runs job {job_id} now")

    # Leases

    def claim_next(self, lease_s: float, running: Sequence[str] = ()) -> Claim | None:
        """Leases the first unfinished job no live gateway holds (highest
        priority, then oldest): a queued one, or one whose gateway's lease
        lapsed, but none of `running` (this gateway's own jobs, whose lease
        may have lapsed while the store was out of reach). Gateways claiming
        at once each get a different job."""
        now = self._connection.now_sql
        others = f" AND job_id NOT IN ({', '.join('?' * len(running))})" if running else ""
        with self._transaction() as db:
            row = db.execute(
                f"SELECT * FROM jobs WHERE state IN (?, ?) AND (lease_owner IS NULL OR lease_expires_s < {now}){others}"
                f" ORDER BY priority DESC, created_s, job_id LIMIT 1{db.for_update_skip_locked}",
                (*_UNFINISHED, *running),
            ).fetchone()
            if row is None:
                return None
            self._lease(db, row["job_id"], lease_s)
        return Claim(_job_from_row(row), bool(row["cancel_requested"]))

    def claim(self, job_id: str, lease_s: float) -> Claim | None:
        """Leases one unfinished job if no other live gateway holds it (or
        this one does already); None otherwise."""
        now = self._connection.now_sql
        with self._transaction() as db:
            row = db.execute(
                f"SELECT * FROM jobs WHERE job_id = ? AND state IN (?, ?)"
                f" AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_s < {now}){db.for_update}",
                (job_id, *_UNFINISHED, self.owner_id),
            ).fetchone()
            if row is None:
                return None
            self._lease(db, job_id, lease_s)
        return Claim(_job_from_row(row), bool(row["cancel_requested"]))

    def _lease(self, db: Database, job_id: str, lease_s: float) -> None:
        db.execute(
            f"UPDATE jobs SET lease_owner = ?, lease_expires_s = {self._connection.now_sql} + ? WHERE job_id = ?",
            (self.owner_id, lease_s, job_id),
        )

    def renew_leases(self, job_ids: Sequence[str], lease_s: float) -> tuple[set[str], set[str]]:
        """Extends this gateway's leases of `job_ids`. Returns the jobs it
        still holds, and those of them a client asked to cancel."""
        if not job_ids:
            return set(), set()
        marks = ", ".join("?" * len(job_ids))
        with self._transaction() as db:
            rows = db.execute(
                f"UPDATE jobs SET lease_expires_s = {self._connection.now_sql} + ?"
                f" WHERE lease_owner = ? AND job_id IN ({marks}) RETURNING job_id, cancel_requested",
                (lease_s, self.owner_id, *job_ids),
            ).fetchall()
        return {row["job_id"] for row in rows}, {row["job_id"] for row in rows if row["cancel_requested"]}

    def release_leases(self, job_ids: Sequence[str]) -> None:
        """Gives up this gateway's leases of `job_ids`: another gateway may
        take those jobs over at once."""
        if not job_ids:
            return
        marks = ", ".join("?" * len(job_ids))
        with self._transaction() as db:
            db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_s = 0"
                f" WHERE lease_owner = ? AND job_id IN ({marks})",
                (self.owner_id, *job_ids),
            )

    def clear_leases(self) -> int:
        """Drops every unfinished job's lease: for a store only this gateway
        uses (a SQLite file), whose leases were held by its previous runs."""
        with self._transaction() as db:
            rows = db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_s = 0 WHERE lease_owner IS NOT NULL"
                " AND state IN (?, ?) RETURNING job_id",
                _UNFINISHED,
            ).fetchall()
        return len(rows)

    def request_cancel(self, job_id: str) -> None:
        """Asks the gateway running a job to cancel it (its heartbeat reads this)."""
        with self._transaction() as db:
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", (job_id,))

    def queued_jobs(self) -> list[tuple[JobRecord, int]]:
        """Jobs waiting for a gateway, in the order they will be claimed,
        each with the queue position last published for it (0: none)."""
        rows = self._connection.execute(
            "SELECT * FROM jobs WHERE state = ? AND lease_owner IS NULL ORDER BY priority DESC, created_s, job_id",
            (int(JobState.QUEUED),),
        ).fetchall()
        return [(_job_from_row(row), int(row["queue_position"])) for row in rows]

    def queued_count(self) -> int:
        (count,) = self._connection.execute(
            "SELECT COUNT(*) FROM jobs WHERE state = ? AND lease_owner IS NULL", (int(JobState.QUEUED),)
        ).fetchone()
        return int(count)

    def publish_queue_position(self, event: gateway_pb2.JobEvent) -> gateway_pb2.JobEvent | None:
        """Stores `event` with its job's place in the queue (counted in the
        same transaction: 1 is next) if the job still waits unleased and
        that place differs from the last published; else stores nothing. A
        row another gateway has locked (claiming it) is passed over."""
        with self._transaction() as db:
            row = db.execute(
                "SELECT state, lease_owner, queue_position, priority, created_s FROM jobs"
                f" WHERE job_id = ?{db.for_update_skip_locked}",
                (event.job_id,),
            ).fetchone()
            if row is None or row["lease_owner"] is not None or row["state"] != int(JobState.QUEUED):
                return None
            (ahead,) = db.execute(
                "SELECT COUNT(*) FROM jobs WHERE state = ? AND lease_owner IS NULL"
                " AND (priority > ? OR (priority = ? AND (created_s, job_id) < (?, ?)))",
                (int(JobState.QUEUED), row["priority"], row["priority"], row["created_s"], event.job_id),
            ).fetchone()
            position = int(ahead) + 1
            if row["queue_position"] == position:
                return None
            event.queue_position = position
            db.execute("UPDATE jobs SET queue_position = ? WHERE job_id = ?", (position, event.job_id))
            return self._append_event(db, event)

    # Jobs

    def insert_job(self, job: JobRecord, first_event: gateway_pb2.JobEvent | None = None) -> JobRecord:
        """Stores a new job and its first event (in the same transaction, so
        no gateway runs the job before its first event is stored; the event
        gets its sequence number); when its request id was used already,
        stores nothing and returns the job created with it (also when
        another gateway stores it at the same moment)."""
        try:
            return self._insert_job(job, first_event)
        except INTEGRITY_ERRORS:
            if not job.request_id:
                raise
            existing = self.job_by_request_id(job.request_id, job.owner)
            if existing is None:
                raise
            return existing

    def _insert_job(self, job: JobRecord, first_event: gateway_pb2.JobEvent | None) -> JobRecord:
        with self._transaction() as db:
            if job.request_id:
                row = db.execute(
                    "SELECT * FROM jobs WHERE request_id = ? AND owner = ?", (job.request_id, job.owner)
                ).fetchone()
                if row is not None:
                    return _job_from_row(row)
            db.execute(
                "INSERT INTO jobs (job_id, state, config, source, media_path, uploaded, created_s, updated_s,"
                " request_id, priority, owner) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    job.job_id,
                    int(job.state),
                    job.config.SerializeToString(),
                    job.source,
                    job.media_path,
                    int(job.uploaded),
                    job.created_s,
                    job.updated_s,
                    job.request_id or None,
                    job.priority,
                    job.owner,
                ),
            )
            if first_event is not None:
                self._append_event(db, first_event)
        return job

    def job_by_request_id(self, request_id: str, owner: str = "") -> JobRecord | None:
        row = self._connection.execute(
            "SELECT * FROM jobs WHERE request_id = ? AND owner = ?", (request_id, owner)
        ).fetchone()
        return None if row is None else _job_from_row(row)

    def update_job(self, job: JobRecord) -> None:
        """LeaseLostError: another gateway runs the job now."""
        with self._transaction() as db:
            self._check_writable(db, job.job_id)
            _update_job_row(db, job)

    def get_job(self, job_id: str) -> JobRecord:
        row = self._connection.execute("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r}")
        job = _job_from_row(row)
        job.retries = [
            gateway_pb2.RetryAttempt.FromString(item["attempt"])
            for item in self._connection.execute(
                "SELECT attempt FROM job_retries WHERE job_id = ? ORDER BY sequence", (job_id,)
            )
        ]
        return job

    def add_retry(self, job_id: str, attempt: gateway_pb2.RetryAttempt) -> None:
        with self._transaction() as db:
            self._check_writable(db, job_id)
            (last,) = db.execute(
                "SELECT COALESCE(MAX(sequence), 0) FROM job_retries WHERE job_id = ?", (job_id,)
            ).fetchone()
            db.execute(
                "INSERT INTO job_retries (job_id, sequence, attempt) VALUES (?, ?, ?)",
                (job_id, last + 1, attempt.SerializeToString()),
            )

    def expired_jobs(self, finished_before_s: float) -> list[JobRecord]:
        """Finished jobs that finished before `finished_before_s`, oldest first."""
        rows = self._connection.execute(
            "SELECT * FROM jobs WHERE finished_s > 0 AND finished_s < ? ORDER BY finished_s", (finished_before_s,)
        ).fetchall()
        return [_job_from_row(row) for row in rows]

    def list_jobs(
        self, *, limit: int, before: tuple[float, str] | None, state: JobState | None, owner: str | None = None
    ) -> list[JobRecord]:
        """Newest first; only `owner`'s when given."""
        clauses: list[str] = []
        arguments: list[object] = []
        if owner is not None:
            clauses.append("owner = ?")
            arguments.append(owner)
        if before is not None:
            clauses.append("(created_s, job_id) < (?, ?)")
            arguments.extend(before)
        if state is not None:
            clauses.append("state = ?")
            arguments.append(int(state))
        where = f"WHERE {' AND '.join(clauses)}" if clauses else ""
        rows = self._connection.execute(
            f"SELECT * FROM jobs {where} ORDER BY created_s DESC, job_id DESC LIMIT ?", (*arguments, limit)
        ).fetchall()
        return [_job_from_row(row) for row in rows]

    def delete_job(self, job_id: str) -> None:
        """Removes a job with its events and stage outputs."""
        with self._transaction() as db:
            db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def unfinished_jobs(self) -> list[JobRecord]:
        """Queued and running jobs, highest priority first, then oldest."""
        rows = self._connection.execute(
            "SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY priority DESC, created_s, job_id",
            (int(JobState.QUEUED), int(JobState.RUNNING)),
        ).fetchall()
        return [_job_from_row(row) for row in rows]

    # Events

    def append_event(self, event: gateway_pb2.JobEvent) -> gateway_pb2.JobEvent:
        """Stores the event with the job's next sequence number and returns
        it. LeaseLostError: another gateway runs the job now."""
        with self._transaction() as db:
            self._check_writable(db, event.job_id)
            return self._append_event(db, event)

    def _append_event(self, db: Database, event: gateway_pb2.JobEvent) -> gateway_pb2.JobEvent:
        # The caller holds the job's row lock: one writer numbers its events at a time.
        (last,) = db.execute(
            "SELECT COALESCE(MAX(sequence), 0) FROM job_events WHERE job_id = ?", (event.job_id,)
        ).fetchone()
        event.sequence = last + 1
        db.execute(
            "INSERT INTO job_events (job_id, sequence, event) VALUES (?, ?, ?)",
            (event.job_id, event.sequence, event.SerializeToString()),
        )
        db.notify(f"{event.job_id} {self.owner_id}")
        return event

    def listen_for_events(self, on_event: Callable[[str], None]) -> Callable[[], None] | None:
        """On a shared store: calls `on_event(job_id)` (on a thread of its
        own) whenever another gateway stores an event; returns what stops
        it. None for a store only this gateway writes."""
        listen = getattr(self._connection, "listen", None)
        if listen is None:
            return None
        stopped = threading.Event()

        def on_payload(payload: str) -> None:
            job_id, _, writer = payload.partition(" ")
            if writer != self.owner_id:
                on_event(job_id)

        thread = threading.Thread(target=listen, args=(on_payload, stopped), name="job-events", daemon=True)
        thread.start()

        def stop() -> None:
            stopped.set()
            thread.join(timeout=5)

        return stop

    def events_after(self, job_id: str, sequence: int) -> list[gateway_pb2.JobEvent]:
        rows = self._connection.execute(
            "SELECT event FROM job_events WHERE job_id = ? AND sequence > ? ORDER BY sequence", (job_id, sequence)
        ).fetchall()
        try:
            return [gateway_pb2.JobEvent.FromString(row["event"]) for row in rows]
        except DecodeError as error:
            raise CorruptRecordError(f"a stored event of job {job_id} cannot be read: {error}") from error

    # Stage outputs

    def save_audio_handle(self, job_id: str, handle: common_pb2.AudioHandle | None) -> None:
        with self._transaction() as db:
            self._check_writable(db, job_id)
            db.execute(
                "UPDATE jobs SET audio_handle = ? WHERE job_id = ?",
                (handle.SerializeToString() if handle is not None else None, job_id),
            )

    def audio_handle(self, job_id: str) -> common_pb2.AudioHandle | None:
        row = self._connection.execute("SELECT audio_handle FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None or row["audio_handle"] is None:
            return None
        return common_pb2.AudioHandle.FromString(row["audio_handle"])

    def save_speech_chunk(
        self, job_id: str, chunk_index: int, time_range: TimeRange, speech_ranges: Sequence[TimeRange] = ()
    ) -> None:
        ranges = json.dumps([[item.start_s, item.end_s] for item in speech_ranges])
        with self._transaction() as db:
            self._check_writable(db, job_id)
            db.execute(
                "INSERT INTO speech_chunks (job_id, chunk_index, start_s, end_s, speech_ranges) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (job_id, chunk_index) DO UPDATE SET start_s = excluded.start_s, end_s = excluded.end_s,"
                " speech_ranges = excluded.speech_ranges",
                (job_id, chunk_index, time_range.start_s, time_range.end_s, ranges),
            )

    def mark_detection_complete(self, job_id: str) -> None:
        with self._transaction() as db:
            self._check_writable(db, job_id)
            db.execute("UPDATE jobs SET detection_complete = 1 WHERE job_id = ?", (job_id,))

    def checkpoint(self, job_id: str) -> Checkpoint:
        """Every stage output stored for a job. CorruptRecordError: one cannot be read."""
        db = self._connection
        row = db.execute("SELECT audio_handle, detection_complete FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r}")
        try:
            handle = common_pb2.AudioHandle.FromString(row["audio_handle"]) if row["audio_handle"] else None
        except DecodeError as error:
            raise CorruptRecordError(f"the stored audio handle cannot be read: {error}") from error
        chunk_rows = db.execute("SELECT * FROM speech_chunks WHERE job_id = ?", (job_id,)).fetchall()
        chunks = {item["chunk_index"]: TimeRange(item["start_s"], item["end_s"]) for item in chunk_rows}
        try:
            speech_ranges = {
                item["chunk_index"]: tuple(
                    TimeRange(float(start), float(end)) for start, end in json.loads(item["speech_ranges"])
                )
                for item in chunk_rows
            }
        except (ValueError, TypeError) as error:
            raise CorruptRecordError(f"stored speech ranges cannot be read: {error}") from error
        transcripts = {
            item["chunk_index"]: (item["language_code"], segments_from_json(item["segments"]))
            for item in db.execute("SELECT * FROM chunk_transcripts WHERE job_id = ?", (job_id,))
        }
        alignments = {
            item["chunk_index"]: (item["method"], segments_from_json(item["segments"]))
            for item in db.execute("SELECT * FROM chunk_alignments WHERE job_id = ?", (job_id,))
        }
        turns = self.speaker_turns(job_id)
        return Checkpoint(
            handle, chunks, bool(row["detection_complete"]), transcripts, alignments, turns, speech_ranges
        )

    def speaker_turns(self, job_id: str) -> diarize_pb2.DiarizeResponse | None:
        """A job's diarization; None when it has none."""
        row = self._connection.execute("SELECT turns FROM speaker_turns WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        try:
            return diarize_pb2.DiarizeResponse.FromString(row["turns"])
        except DecodeError as error:
            raise CorruptRecordError(f"the stored speaker turns cannot be read: {error}") from error

    def save_speaker_turns(self, job_id: str, turns: diarize_pb2.DiarizeResponse) -> None:
        with self._transaction() as db:
            self._check_writable(db, job_id)
            db.execute(
                "INSERT INTO speaker_turns (job_id, turns) VALUES (?, ?)"
                " ON CONFLICT (job_id) DO UPDATE SET turns = excluded.turns",
                (job_id, turns.SerializeToString()),
            )

    def save_chunk_transcript(
        self, job_id: str, chunk_index: int, language_code: str, segments: Sequence[Segment]
    ) -> None:
        with self._transaction() as db:
            self._check_writable(db, job_id)
            db.execute(
                "INSERT INTO chunk_transcripts (job_id, chunk_index, language_code, segments) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (job_id, chunk_index) DO UPDATE"
                " SET language_code = excluded.language_code, segments = excluded.segments",
                (job_id, chunk_index, language_code, segments_to_json(segments)),
            )

    def save_chunk_alignment(self, job_id: str, chunk_index: int, method: int, segments: Sequence[Segment]) -> None:
        with self._transaction() as db:
            self._check_writable(db, job_id)
            db.execute(
                "INSERT INTO chunk_alignments (job_id, chunk_index, method, segments) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (job_id, chunk_index) DO UPDATE"
                " SET method = excluded.method, segments = excluded.segments",
                (job_id, chunk_index, method, segments_to_json(segments)),
            )

    def finish_job(self, job: JobRecord, segments: Sequence[Segment]) -> None:
        """Stores the final result and the job's final state in one
        transaction. LeaseLostError: another gateway runs the job now."""
        with self._transaction() as db:
            self._check_writable(db, job.job_id)
            db.execute(
                "INSERT INTO results (job_id, segments) VALUES (?, ?)"
                " ON CONFLICT (job_id) DO UPDATE SET segments = excluded.segments",
                (job.job_id, segments_to_json(segments)),
            )
            _update_job_row(db, job)

    def result(self, job_id: str) -> list[Segment]:
        row = self._connection.execute("SELECT segments FROM results WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"job {job_id!r} has no stored result")
        return segments_from_json(row["segments"])


def _job_from_row(row: Row) -> JobRecord:
    """A job from its row; a row that cannot be read gives a FAILED job that
    says why (its stored state stays as it was until the job is saved)."""
    try:
        return _parse_job_row(row)
    except (DecodeError, ValueError, KeyError, TypeError) as error:
        return JobRecord(
            job_id=row["job_id"],
            state=JobState.FAILED,
            config=gateway_pb2.JobConfig(),
            source=str(row["source"]),
            created_s=float(row["created_s"] or 0),
            updated_s=float(row["updated_s"] or 0),
            failure=JobFailure("DATA_LOSS", f"the stored record of this job cannot be read ({error})", Stage.NONE),
        )


def _parse_job_row(row: Row) -> JobRecord:
    failure = json.loads(row["failure"]) if row["failure"] else None
    return JobRecord(
        job_id=row["job_id"],
        state=JobState(row["state"]),
        config=gateway_pb2.JobConfig.FromString(row["config"]),
        source=row["source"],
        media_path=row["media_path"],
        uploaded=bool(row["uploaded"]),
        created_s=row["created_s"],
        updated_s=row["updated_s"],
        stage=Stage(row["stage"]),
        stage_fractions={Stage(int(key)): value for key, value in json.loads(row["stage_fractions"]).items()},
        failure=JobFailure(failure["code"], failure["message"], Stage(failure["stage"])) if failure else None,
        audio_duration_s=row["audio_duration_s"],
        language_code=row["language_code"],
        language_probability=row["language_probability"],
        segment_count=row["segment_count"],
        processing_s=row["processing_s"],
        request_id=row["request_id"] or "",
        owner=row["owner"],
        priority=row["priority"],
        waiting_reason=row["waiting_reason"],
        finished_s=row["finished_s"],
    )


def _update_job_row(db: Database, job: JobRecord) -> None:
    db.execute(
        "UPDATE jobs SET state = ?, updated_s = ?, stage = ?, stage_fractions = ?, failure = ?,"
        " audio_duration_s = ?, language_code = ?, language_probability = ?, segment_count = ?,"
        " processing_s = ?, waiting_reason = ?, finished_s = ? WHERE job_id = ?",
        (
            int(job.state),
            job.updated_s,
            int(job.stage),
            json.dumps({int(stage): fraction for stage, fraction in job.stage_fractions.items()}),
            json.dumps(asdict(job.failure)) if job.failure else None,
            job.audio_duration_s,
            job.language_code,
            job.language_probability,
            job.segment_count,
            job.processing_s,
            job.waiting_reason,
            job.finished_s,
            job.job_id,
        ),
    )

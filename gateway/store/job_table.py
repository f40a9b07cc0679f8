"""The job records: the `jobs` table (a job's configuration, state and
progress, its client's request id, a cancel asked for it) and its retries
(`job_retries`)."""

from __future__ import annotations

from common.errors import NotFoundError
from gateway.records import JobRecord, JobState
from gateway.store.database import INTEGRITY_ERRORS
from gateway.store.event_log import EventLog
from gateway.store.job_rows import UNFINISHED_STATES, job_from_row, update_job_row
from gateway.store.session import StoreSession
from subtitler.gateway.v1 import gateway_pb2


class JobTable:
    """Creates, reads, updates and deletes jobs through one gateway's session."""

    def __init__(self, session: StoreSession, events: EventLog) -> None:
        self._session = session
        self._events = events

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
        with self._session.transaction() as db:
            if job.request_id:
                row = db.execute(
                    "SELECT * FROM jobs WHERE request_id = ? AND owner = ?", (job.request_id, job.owner)
                ).fetchone()
                if row is not None:
                    return job_from_row(row)
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
                self._events.append_in(db, first_event)
        return job

    def job_by_request_id(self, request_id: str, owner: str = "") -> JobRecord | None:
        """The job `owner` created with `request_id`; None when there is none."""
        row = self._session.read(
            "SELECT * FROM jobs WHERE request_id = ? AND owner = ?", (request_id, owner)
        ).fetchone()
        return None if row is None else job_from_row(row)

    def update_job(self, job: JobRecord) -> None:
        """LeaseLostError: another gateway runs the job now."""
        with self._session.transaction() as db:
            self._session.check_writable(db, job.job_id)
            update_job_row(db, job)

    def get_job(self, job_id: str) -> JobRecord:
        """The job with its retries. NotFoundError: there is no such job."""
        row = self._session.read("SELECT * FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r}")
        job = job_from_row(row)
        job.retries = [
            gateway_pb2.RetryAttempt.FromString(item["attempt"])
            for item in self._session.read(
                "SELECT attempt FROM job_retries WHERE job_id = ? ORDER BY sequence", (job_id,)
            )
        ]
        return job

    def add_retry(self, job_id: str, attempt: gateway_pb2.RetryAttempt) -> None:
        """Appends a retried stage call to the job's retries. LeaseLostError: another gateway runs the job now."""
        with self._session.transaction() as db:
            self._session.check_writable(db, job_id)
            (last,) = db.execute(
                "SELECT COALESCE(MAX(sequence), 0) FROM job_retries WHERE job_id = ?", (job_id,)
            ).fetchone()
            db.execute(
                "INSERT INTO job_retries (job_id, sequence, attempt) VALUES (?, ?, ?)",
                (job_id, last + 1, attempt.SerializeToString()),
            )

    def request_cancel(self, job_id: str) -> None:
        """Asks the gateway running a job to cancel it (its heartbeat reads this)."""
        with self._session.transaction() as db:
            db.execute("UPDATE jobs SET cancel_requested = 1 WHERE job_id = ?", (job_id,))

    def expired_jobs(self, finished_before_s: float) -> list[JobRecord]:
        """Finished jobs that finished before `finished_before_s`, oldest first."""
        rows = self._session.read(
            "SELECT * FROM jobs WHERE finished_s > 0 AND finished_s < ? ORDER BY finished_s", (finished_before_s,)
        ).fetchall()
        return [job_from_row(row) for row in rows]

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
        rows = self._session.read(
            f"SELECT * FROM jobs {where} ORDER BY created_s DESC, job_id DESC LIMIT ?", (*arguments, limit)
        ).fetchall()
        return [job_from_row(row) for row in rows]

    def delete_job(self, job_id: str) -> None:
        """Removes a job with its events and stage outputs."""
        with self._session.transaction() as db:
            db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    def unfinished_jobs(self) -> list[JobRecord]:
        """Queued and running jobs, highest priority first, then oldest."""
        rows = self._session.read(
            "SELECT * FROM jobs WHERE state IN (?, ?) ORDER BY priority DESC, created_s, job_id", UNFINISHED_STATES
        ).fetchall()
        return [job_from_row(row) for row in rows]

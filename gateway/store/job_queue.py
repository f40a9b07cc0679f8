"""The queue of unfinished jobs and their leases: which gateway runs each
job (claimed with `FOR UPDATE SKIP LOCKED`, held by a lease its heartbeat
renews, timed by the database's clock), and the queue positions published
to the watchers of waiting jobs."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from gateway.records import JobRecord, JobState
from gateway.store.database import Database
from gateway.store.event_log import EventLog
from gateway.store.job_rows import UNFINISHED_STATES, job_from_row
from gateway.store.session import StoreSession
from subtitler.gateway.v1 import gateway_pb2


@dataclass(frozen=True)
class Claim:
    """A job a gateway has just leased, and whether a client asked (on any
    gateway) for it to be cancelled."""

    job: JobRecord
    cancel_requested: bool


class JobQueue:
    """Claims, leases and queue places of jobs, for one gateway's session."""

    def __init__(self, session: StoreSession, events: EventLog) -> None:
        self._session = session
        self._events = events

    def claim_next(self, lease_s: float, running: Sequence[str] = ()) -> Claim | None:
        """Leases the first unfinished job no live gateway holds (highest
        priority, then oldest): a queued one, or one whose gateway's lease
        lapsed, but none of `running` (this gateway's own jobs, whose lease
        may have lapsed while the store was out of reach). Gateways claiming
        at once each get a different job."""
        now = self._session.database.now_sql
        others = f" AND job_id NOT IN ({', '.join('?' * len(running))})" if running else ""
        with self._session.transaction() as db:
            row = db.execute(
                f"SELECT * FROM jobs WHERE state IN (?, ?) AND (lease_owner IS NULL OR lease_expires_s < {now}){others}"
                f" ORDER BY priority DESC, created_s, job_id LIMIT 1{db.for_update_skip_locked}",
                (*UNFINISHED_STATES, *running),
            ).fetchone()
            if row is None:
                return None
            self._lease(db, row["job_id"], lease_s)
        return Claim(job_from_row(row), bool(row["cancel_requested"]))

    def claim(self, job_id: str, lease_s: float) -> Claim | None:
        """Leases one unfinished job if no other live gateway holds it (or
        this one does already); None otherwise."""
        now = self._session.database.now_sql
        with self._session.transaction() as db:
            row = db.execute(
                f"SELECT * FROM jobs WHERE job_id = ? AND state IN (?, ?)"
                f" AND (lease_owner IS NULL OR lease_owner = ? OR lease_expires_s < {now}){db.for_update}",
                (job_id, *UNFINISHED_STATES, self._session.owner_id),
            ).fetchone()
            if row is None:
                return None
            self._lease(db, job_id, lease_s)
        return Claim(job_from_row(row), bool(row["cancel_requested"]))

    def _lease(self, db: Database, job_id: str, lease_s: float) -> None:
        db.execute(
            f"UPDATE jobs SET lease_owner = ?, lease_expires_s = {db.now_sql} + ? WHERE job_id = ?",
            (self._session.owner_id, lease_s, job_id),
        )

    def renew_leases(self, job_ids: Sequence[str], lease_s: float) -> tuple[set[str], set[str]]:
        """Extends this gateway's leases of `job_ids`. Returns the jobs it
        still holds, and those of them a client asked to cancel."""
        if not job_ids:
            return set(), set()
        marks = ", ".join("?" * len(job_ids))
        with self._session.transaction() as db:
            rows = db.execute(
                f"UPDATE jobs SET lease_expires_s = {db.now_sql} + ?"
                f" WHERE lease_owner = ? AND job_id IN ({marks}) RETURNING job_id, cancel_requested",
                (lease_s, self._session.owner_id, *job_ids),
            ).fetchall()
        return {row["job_id"] for row in rows}, {row["job_id"] for row in rows if row["cancel_requested"]}

    def release_leases(self, job_ids: Sequence[str]) -> None:
        """Gives up this gateway's leases of `job_ids`: another gateway may
        take those jobs over at once."""
        if not job_ids:
            return
        marks = ", ".join("?" * len(job_ids))
        with self._session.transaction() as db:
            db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_s = 0"
                f" WHERE lease_owner = ? AND job_id IN ({marks})",
                (self._session.owner_id, *job_ids),
            )

    def clear_leases(self) -> int:
        """Drops every unfinished job's lease: for a store only this gateway
        uses (a SQLite file), whose leases were held by its previous runs."""
        with self._session.transaction() as db:
            rows = db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_s = 0 WHERE lease_owner IS NOT NULL"
                " AND state IN (?, ?) RETURNING job_id",
                UNFINISHED_STATES,
            ).fetchall()
        return len(rows)

    def queued_jobs(self) -> list[tuple[JobRecord, int]]:
        """Jobs waiting for a gateway, in the order they will be claimed,
        each with the queue position last published for it (0: none)."""
        rows = self._session.read(
            "SELECT * FROM jobs WHERE state = ? AND lease_owner IS NULL ORDER BY priority DESC, created_s, job_id",
            (int(JobState.QUEUED),),
        ).fetchall()
        return [(job_from_row(row), int(row["queue_position"])) for row in rows]

    def queued_count(self) -> int:
        """How many jobs wait for a gateway."""
        (count,) = self._session.read(
            "SELECT COUNT(*) FROM jobs WHERE state = ? AND lease_owner IS NULL", (int(JobState.QUEUED),)
        ).fetchone()
        return int(count)

    def publish_queue_position(self, event: gateway_pb2.JobEvent) -> gateway_pb2.JobEvent | None:
        """Stores `event` with its job's place in the queue (counted in the
        same transaction: 1 is next) if the job still waits unleased and
        that place differs from the last published; else stores nothing. A
        row another gateway has locked (claiming it) is passed over."""
        with self._session.transaction() as db:
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
            return self._events.append_in(db, event)

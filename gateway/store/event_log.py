"""The `job_events` table: each job's events numbered in order, for watchers
to replay, and on a shared (PostgreSQL) store announced to the other
gateways with LISTEN/NOTIFY."""

from __future__ import annotations

import threading
from collections.abc import Callable

from google.protobuf.message import DecodeError

from gateway.store.database import Database
from gateway.store.errors import CorruptRecordError
from gateway.store.session import StoreSession
from subtitler.gateway.v1 import gateway_pb2


class EventLog:
    """Appends and reads the events of jobs through one gateway's session."""

    def __init__(self, session: StoreSession) -> None:
        self._session = session

    def append_event(self, event: gateway_pb2.JobEvent) -> gateway_pb2.JobEvent:
        """Stores the event with the job's next sequence number and returns
        it. LeaseLostError: another gateway runs the job now."""
        with self._session.transaction() as db:
            self._session.check_writable(db, event.job_id)
            return self.append_in(db, event)

    def append_in(self, db: Database, event: gateway_pb2.JobEvent) -> gateway_pb2.JobEvent:
        """`append_event` inside the caller's transaction, which holds the
        job's row lock: one writer numbers its events at a time."""
        (last,) = db.execute(
            "SELECT COALESCE(MAX(sequence), 0) FROM job_events WHERE job_id = ?", (event.job_id,)
        ).fetchone()
        event.sequence = last + 1
        db.execute(
            "INSERT INTO job_events (job_id, sequence, event) VALUES (?, ?, ?)",
            (event.job_id, event.sequence, event.SerializeToString()),
        )
        db.notify(f"{event.job_id} {self._session.owner_id}")
        return event

    def listen_for_events(self, on_event: Callable[[str], None]) -> Callable[[], None] | None:
        """On a shared store: calls `on_event(job_id)` (on a thread of its
        own) whenever another gateway stores an event; returns what stops
        it. None for a store only this gateway writes."""
        listen = getattr(self._session.database, "listen", None)
        if listen is None:
            return None
        stopped = threading.Event()
        owner_id = self._session.owner_id

        def on_payload(payload: str) -> None:
            job_id, _, writer = payload.partition(" ")
            if writer != owner_id:
                on_event(job_id)

        thread = threading.Thread(target=listen, args=(on_payload, stopped), name="job-events", daemon=True)
        thread.start()

        def stop() -> None:
            stopped.set()
            thread.join(timeout=5)

        return stop

    def events_after(self, job_id: str, sequence: int) -> list[gateway_pb2.JobEvent]:
        """The job's events numbered after `sequence`, in order. CorruptRecordError: one cannot be read."""
        rows = self._session.read(
            "SELECT event FROM job_events WHERE job_id = ? AND sequence > ? ORDER BY sequence", (job_id, sequence)
        ).fetchall()
        try:
            return [gateway_pb2.JobEvent.FromString(row["event"]) for row in rows]
        except DecodeError as error:
            raise CorruptRecordError(f"a stored event of job {job_id} cannot be read: {error}") from error

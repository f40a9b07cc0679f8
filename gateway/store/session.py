"""One gateway's connection to the job store: the reads, the transactions
(each write is one, undone when it fails) and the lease check that every
write to a running job makes. The store's parts share one session, so they
share one connection and one transaction model."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager

from gateway.store.database import DATABASE_ERRORS, Cursor, Database
from gateway.store.errors import LeaseLostError, StoreUnavailableError


class StoreSession:
    """A database connection used by one gateway (`owner_id`, the holder of
    its jobs' leases). Not thread-safe: one thread uses it at a time."""

    def __init__(self, database: Database, owner_id: str) -> None:
        self.database = database
        self.owner_id = owner_id

    def read(self, sql: str, parameters: Sequence[object] = ()) -> Cursor:
        """Runs a statement outside any transaction (a read)."""
        return self.database.execute(sql, parameters)

    @contextmanager
    def transaction(self) -> Iterator[Database]:
        """The database, inside a transaction that commits when the block
        ends and rolls back when it raises. StoreUnavailableError: the
        connection broke while committing."""
        self.database.begin()
        try:
            yield self.database
        except BaseException:
            self.database.rollback()
            raise
        try:
            self.database.commit()
        except DATABASE_ERRORS as error:
            # The server may have committed before the connection broke:
            # doing it again could store it twice, so it is not retried.
            raise StoreUnavailableError("the job store was lost while committing; try again shortly") from error

    def check_writable(self, db: Database, job_id: str) -> None:
        """Locks the job's row for the transaction and raises LeaseLostError
        when another gateway holds its lease, or the job is gone (deleted
        while it ran)."""
        row = db.execute(f"SELECT lease_owner FROM jobs WHERE job_id = ?{db.for_update}", (job_id,)).fetchone()
        if row is None:
            raise LeaseLostError(f"job {job_id} is gone")
        holder = row["lease_owner"]
        if holder is not None and holder != self.owner_id:
            raise LeaseLostError(f"gateway {holder} runs job {job_id} now")

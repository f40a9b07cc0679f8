"""What the job store raises beyond the database's own errors: a record it
cannot read, a database it cannot reach, a job another gateway took over."""

from __future__ import annotations

from common.errors import DataLossError, UnavailableError


class CorruptRecordError(DataLossError):
    """A stored record cannot be read."""


class StoreUnavailableError(UnavailableError):
    """The job store cannot be reached or written now (a PostgreSQL server
    restarting, a disk error): the operation can be tried again."""


class LeaseLostError(Exception):
    """Another gateway holds the lease of the job this one meant to write:
    it took the job over (this one's heartbeat lapsed), so this one must
    stop it without writing anything more."""

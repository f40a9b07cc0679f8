"""The job store's two databases behind one small interface: SQLite (the
embedded default, one file) and PostgreSQL (`postgresql://...`, psycopg 3).

The store writes its SQL once, in the subset both speak: `?` placeholders
(PostgreSQL gets `%s`), `INSERT ... ON CONFLICT ... DO UPDATE`, row-value
comparisons, partial indexes. Types differ only in the schema: the
migrations name `{blob}` and `{real}`, which become BLOB / REAL in SQLite
and BYTEA / DOUBLE PRECISION in PostgreSQL (its REAL has 24 bits: too few
for a timestamp). Rows read by column name and by position, as sqlite3.Row.
"""

from __future__ import annotations

import logging
import re
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import Any, Protocol

# Schema version of a PostgreSQL store, in a table of its own (SQLite keeps it in PRAGMA user_version).
_PG_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS subtitler_schema (version INTEGER NOT NULL)"
logger = logging.getLogger(__name__)

# Where a PostgreSQL store announces each event it stores (NOTIFY), so the
# watchers of a job on every gateway learn of it at once.
EVENTS_CHANNEL = "subtitler_job_events"
# Held while a gateway migrates a PostgreSQL store's schema (see `PostgresDatabase.migration_lock`).
_PG_MIGRATION_LOCK = 0x5B717E


def _errors(name: str) -> tuple[type[Exception], ...]:
    errors: list[type[Exception]] = [getattr(sqlite3, name)]
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a gateway dependency
        return tuple(errors)
    return (*errors, getattr(psycopg, name))


# What a database raises when it cannot be reached or written now (as
# opposed to a bug in a statement): the operation may work when tried again.
DATABASE_ERRORS = _errors("OperationalError")
# A constraint refused a write (a unique key another writer took first).
INTEGRITY_ERRORS = _errors("IntegrityError")


class Row(Protocol):
    def __getitem__(self, key: int | str) -> Any: ...


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    dialect: str
    # SQL for the database's clock in seconds since the epoch: the leases of
    # gateways on several hosts are timed by one clock.
    now_sql: str
    # Appended to a SELECT whose rows the transaction goes on to change:
    # row locks where the database has them (SQLite locks the whole file).
    for_update: str
    # The same, passing over rows another transaction has locked.
    for_update_skip_locked: str

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> Cursor: ...

    def begin(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def schema_version(self) -> int: ...

    def set_schema_version(self, version: int) -> None: ...

    def migration_lock(self) -> AbstractContextManager[None]: ...

    def lost(self) -> bool:
        """Whether the server dropped the connection (the next operation opens a new one)."""
        ...

    def notify(self, payload: str) -> None:
        """Announces, when the transaction commits, that `payload` (a job
        id and the writer) has a new event (nothing where nobody listens)."""
        ...

    def close(self) -> None: ...


def open_database(location: str | Path) -> Database:
    """A PostgreSQL store for a `postgresql://` (or `postgres://`) URL, else
    the SQLite file at `location`."""
    text = str(location)
    if re.match(r"postgres(ql)?://", text):
        return PostgresDatabase(text)
    return SqliteDatabase(Path(text))


def schema_sql(statement: str, dialect: str) -> str:
    types = {"sqlite": {"blob": "BLOB", "real": "REAL"}, "postgresql": {"blob": "BYTEA", "real": "DOUBLE PRECISION"}}
    return statement.format(**types[dialect])


class SqliteDatabase:
    dialect = "sqlite"
    now_sql = "((julianday('now') - 2440587.5) * 86400.0)"
    for_update = ""
    for_update_skip_locked = ""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._connection = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._connection.row_factory = sqlite3.Row
        self._connection.execute("PRAGMA journal_mode=WAL")
        self._connection.execute("PRAGMA synchronous=NORMAL")
        self._connection.execute("PRAGMA foreign_keys=ON")

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> Cursor:
        return self._connection.execute(sql, parameters)

    def begin(self) -> None:
        self._connection.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self._connection.execute("COMMIT")

    def rollback(self) -> None:
        self._connection.execute("ROLLBACK")

    def schema_version(self) -> int:
        return int(self._connection.execute("PRAGMA user_version").fetchone()[0])

    def set_schema_version(self, version: int) -> None:
        self._connection.execute(f"PRAGMA user_version = {int(version)}")

    @contextmanager
    def migration_lock(self) -> Iterator[None]:
        # Each migration is a BEGIN IMMEDIATE transaction: writers are serialised already.
        yield

    def lost(self) -> bool:
        return False  # a file: there is no server to drop it

    def notify(self, payload: str) -> None:
        pass  # one gateway: its watchers hear of its events directly

    def close(self) -> None:
        self._connection.close()


class _Row(tuple[Any, ...]):
    """A row readable by position and by column name."""

    names: dict[str, int]

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, str):
            return tuple.__getitem__(self, self.names[key])
        return tuple.__getitem__(self, key)


def _row_factory(cursor: Any) -> Any:
    names = {column.name: position for position, column in enumerate(cursor.description or ())}

    def make(values: Sequence[Any]) -> _Row:
        row = _Row(bytes(value) if isinstance(value, memoryview) else value for value in values)
        row.names = names
        return row

    return make


class PostgresDatabase:
    dialect = "postgresql"
    now_sql = "EXTRACT(EPOCH FROM clock_timestamp())::DOUBLE PRECISION"
    for_update = " FOR UPDATE"
    for_update_skip_locked = " FOR UPDATE SKIP LOCKED"

    def __init__(self, url: str) -> None:
        self._url = url
        self._connection = self._connect()
        self._in_transaction = False

    def _connect(self) -> Any:
        import psycopg

        connection = psycopg.connect(self._url, autocommit=True, row_factory=_row_factory, connect_timeout=10)
        # A row another session holds locked for long (a hung transaction)
        # fails the operation instead of stalling the store, and its heartbeat.
        connection.execute("SET lock_timeout = '5s'")
        connection.execute("SET idle_in_transaction_session_timeout = '60s'")
        return connection

    def _usable(self) -> Any:
        """The connection, opened again if the server dropped it (a restart,
        a failover): the operation that met the break failed, the next one
        works. Never inside a transaction, whose work went with the break."""
        if self._connection.closed and not self._in_transaction:
            self._connection = self._connect()
        return self._connection

    def lost(self) -> bool:
        return bool(self._connection.closed)

    def notify(self, payload: str) -> None:
        self.execute("SELECT pg_notify(?, ?)", (EVENTS_CHANNEL, payload))

    def listen(self, on_payload: Callable[[str], None], stopped: threading.Event) -> None:
        """Calls `on_payload` with each announcement on EVENTS_CHANNEL, on
        a connection of its own, until `stopped` is set; a connection the
        server drops is opened again (after a pause)."""
        import psycopg

        while not stopped.is_set():
            try:
                with psycopg.connect(self._url, autocommit=True, connect_timeout=10) as connection:
                    connection.execute(f"LISTEN {EVENTS_CHANNEL}")
                    while not stopped.is_set():
                        for notice in connection.notifies(timeout=0.5):
                            on_payload(notice.payload)
            except Exception as error:  # noqa: BLE001 - the listener must outlive any failure
                logger.warning("listening for job events failed (%s); trying again", error)
                stopped.wait(1.0)

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> Cursor:
        cursor: Cursor = self._usable().execute(sql.replace("?", "%s"), tuple(parameters))
        return cursor

    def begin(self) -> None:
        self._usable().execute("BEGIN")
        self._in_transaction = True

    def commit(self) -> None:
        self._in_transaction = False
        self._connection.execute("COMMIT")

    def rollback(self) -> None:
        self._in_transaction = False
        if not self._connection.closed:
            self._connection.execute("ROLLBACK")

    def schema_version(self) -> int:
        self._connection.execute(_PG_VERSION_TABLE)
        row = self._connection.execute("SELECT version FROM subtitler_schema").fetchone()
        return int(row[0]) if row else 0

    def set_schema_version(self, version: int) -> None:
        self._connection.execute("DELETE FROM subtitler_schema")
        self._connection.execute("INSERT INTO subtitler_schema (version) VALUES (%s)", (int(version),))

    @contextmanager
    def migration_lock(self) -> Iterator[None]:
        """Held while one gateway reads and migrates the schema: gateways
        that start together on one store migrate it once."""
        self._connection.execute("SELECT pg_advisory_lock(%s)", (_PG_MIGRATION_LOCK,))
        try:
            yield
        finally:
            self._connection.execute("SELECT pg_advisory_unlock(%s)", (_PG_MIGRATION_LOCK,))

    def close(self) -> None:
        self._connection.close()

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

import re
import sqlite3
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

# Schema version of a PostgreSQL store, in a table of its own (SQLite keeps it in PRAGMA user_version).
_PG_VERSION_TABLE = "CREATE TABLE IF NOT EXISTS subtitler_schema (version INTEGER NOT NULL)"
# Held by the gateway that runs the store's jobs (see `PostgresDatabase.lock`).
_PG_GATEWAY_LOCK = 0x5B717E


class Row(Protocol):
    def __getitem__(self, key: int | str) -> Any: ...


class Cursor(Protocol):
    def fetchone(self) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    dialect: str

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> Cursor: ...

    def begin(self) -> None: ...

    def commit(self) -> None: ...

    def rollback(self) -> None: ...

    def schema_version(self) -> int: ...

    def set_schema_version(self, version: int) -> None: ...

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

    def __init__(self, url: str) -> None:
        import psycopg

        self._connection = psycopg.connect(url, autocommit=True, row_factory=_row_factory)

    def execute(self, sql: str, parameters: Sequence[object] = ()) -> Cursor:
        cursor: Cursor = self._connection.execute(sql.replace("?", "%s"), tuple(parameters))
        return cursor

    def begin(self) -> None:
        self._connection.execute("BEGIN")

    def commit(self) -> None:
        self._connection.execute("COMMIT")

    def rollback(self) -> None:
        self._connection.execute("ROLLBACK")

    def schema_version(self) -> int:
        self._connection.execute(_PG_VERSION_TABLE)
        row = self._connection.execute("SELECT version FROM subtitler_schema").fetchone()
        return int(row[0]) if row else 0

    def set_schema_version(self, version: int) -> None:
        self._connection.execute("DELETE FROM subtitler_schema")
        self._connection.execute("INSERT INTO subtitler_schema (version) VALUES (%s)", (int(version),))

    def try_lock(self) -> bool:
        """Takes the store's gateway lock for this session, if no other
        session holds it: one gateway runs a store's jobs at a time, and
        when it dies its session ends and the lock goes with it."""
        row = self._connection.execute("SELECT pg_try_advisory_lock(%s)", (_PG_GATEWAY_LOCK,)).fetchone()
        return row is not None and bool(row[0])

    def close(self) -> None:
        self._connection.close()

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from gateway.store.database import open_database
from gateway.store.job_store import JobStore
from gateway.store.schema import SCHEMA_VERSION, migrate
from gateway.store.session import StoreSession


def test_a_new_store_is_migrated_once_to_the_current_schema(location: str | Path) -> None:
    database = open_database(location)
    session = StoreSession(database, "gateway-a")
    migrate(session)
    assert database.schema_version() == SCHEMA_VERSION
    migrate(session)  # current already: nothing runs again (a second CREATE TABLE would fail)
    assert database.schema_version() == SCHEMA_VERSION
    database.close()


def test_a_store_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    JobStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer gateway"):
        JobStore(path)

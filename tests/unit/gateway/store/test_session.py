from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from gateway.store.database import open_database
from gateway.store.errors import LeaseLostError
from gateway.store.schema import migrate
from gateway.store.session import StoreSession


@pytest.fixture
def session(location: str | Path) -> Iterator[StoreSession]:
    database = open_database(location)
    session = StoreSession(database, "gateway-a")
    migrate(session)
    with session.transaction() as db:
        db.execute(
            "INSERT INTO jobs (job_id, state, config, source, media_path, uploaded, created_s, updated_s)"
            " VALUES ('a', 0, ?, 'talk.wav', '', 0, 1, 1)",
            (b"",),
        )
    yield session
    database.close()


def test_a_transaction_that_raises_is_undone(session: StoreSession) -> None:
    with pytest.raises(ValueError), session.transaction() as db:
        db.execute("UPDATE jobs SET source = 'changed.wav' WHERE job_id = 'a'")
        raise ValueError("a bug half way")
    assert session.read("SELECT source FROM jobs WHERE job_id = 'a'").fetchone()["source"] == "talk.wav"


def test_a_job_is_writable_unleased_or_leased_here_only(session: StoreSession) -> None:
    with session.transaction() as db:
        session.check_writable(db, "a")  # no lease
        db.execute("UPDATE jobs SET lease_owner = 'gateway-a' WHERE job_id = 'a'")
        session.check_writable(db, "a")  # this gateway's
    with pytest.raises(LeaseLostError, match="gateway-b runs job a"), session.transaction() as db:
        db.execute("UPDATE jobs SET lease_owner = 'gateway-b' WHERE job_id = 'a'")
        session.check_writable(db, "a")
    with pytest.raises(LeaseLostError, match="gone"), session.transaction() as db:
        session.check_writable(db, "deleted")

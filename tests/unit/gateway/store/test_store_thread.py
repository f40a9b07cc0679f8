from __future__ import annotations

import asyncio
import sqlite3
import threading
from typing import cast

import pytest

from common.errors import NotFoundError
from gateway.store.database import Database
from gateway.store.errors import StoreUnavailableError
from gateway.store.store_thread import StoreThread


class FakeDatabase:
    """Only what the thread asks of a database: whether its server dropped it."""

    def __init__(self, lost: bool) -> None:
        self.dropped = lost

    def lost(self) -> bool:
        return self.dropped


def thread_over(lost: bool) -> StoreThread:
    return StoreThread(cast(Database, FakeDatabase(lost)))


def test_operations_run_one_at_a_time_on_one_thread_off_the_loop() -> None:
    thread = thread_over(lost=False)

    async def main() -> set[str]:
        names = await asyncio.gather(*(thread.run(lambda: threading.current_thread().name) for _ in range(5)))
        assert threading.current_thread().name not in names
        return set(names)

    (name,) = asyncio.run(main())
    assert name.startswith("job-store")
    assert asyncio.run(thread.run(lambda a, *, b: a + b, 1, b=2)) == 3  # arguments pass through
    thread.close()


def test_an_operation_that_met_a_dropped_connection_is_tried_once_more() -> None:
    thread = thread_over(lost=True)
    attempts: list[int] = []

    def flaky() -> str:
        attempts.append(1)
        if len(attempts) == 1:
            raise sqlite3.OperationalError("server closed the connection")
        return "done"

    assert asyncio.run(thread.run(flaky)) == "done"
    assert len(attempts) == 2
    thread.close()


def test_a_database_out_of_reach_is_unavailable_and_other_errors_pass_through() -> None:
    thread = thread_over(lost=False)
    attempts: list[int] = []

    def locked() -> None:
        attempts.append(1)
        raise sqlite3.OperationalError("database is locked")

    with pytest.raises(StoreUnavailableError, match="unavailable"):
        asyncio.run(thread.run(locked))
    assert len(attempts) == 1  # the connection was not lost: not tried again

    def missing() -> None:
        raise NotFoundError("no job 'a'")

    with pytest.raises(NotFoundError):
        asyncio.run(thread.run(missing))
    thread.close()

"""gateway.jobs.lease_keeper: the heartbeat's rounds on a real SQLite store
that two gateways ("here", "there") share, against a fake set of running jobs."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from common.rpc.server import ServerConfig
from gateway.config import GatewayConfig
from gateway.jobs.lease_keeper import LeaseKeeper
from gateway.records import JobRecord, JobState
from gateway.store.async_store import AsyncJobStore
from gateway.store.errors import StoreUnavailableError
from gateway.store.job_store import JobStore
from subtitler.gateway.v1 import gateway_pb2

LEASE_S = 30.0


class FakeRunning:
    """The jobs a gateway runs, as the heartbeat sees them."""

    def __init__(self, *job_ids: str) -> None:
        self.ids = list(job_ids)
        self.stopping = False
        self.lost: list[str] = []
        self.dropped: list[str] = []
        self.asked: set[str] = set()

    def __iter__(self) -> Iterator[str]:
        return iter(self.ids)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.ids

    def cancel_requested(self, job_id: str) -> bool:
        return job_id in self.asked

    def stop_lost(self, job_id: str) -> None:
        self.lost.append(job_id)

    async def drop(self, job_id: str) -> None:
        self.dropped.append(job_id)


class DownStore:
    """A store connection that cannot be reached."""

    async def renew_leases(self, *_: Any) -> Any:
        raise StoreUnavailableError("down")


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.sqlite3", owner_id="here")


def leased(store: JobStore, job_id: str, lease_s: float = LEASE_S) -> None:
    now = time.time()
    store.insert_job(JobRecord(job_id, JobState.QUEUED, gateway_pb2.JobConfig(), "talk.wav", now, now))
    assert store.claim(job_id, lease_s) is not None


def keeper(store: JobStore, running: FakeRunning, spawned: list[Coroutine[Any, Any, object]]) -> LeaseKeeper:
    config = GatewayConfig(server=ServerConfig(), lease_s=LEASE_S)
    return LeaseKeeper(AsyncJobStore(store), config, running, spawned.append)  # type: ignore[arg-type]


def test_held_leases_are_renewed_and_taken_ones_stopped(store: JobStore, tmp_path: Path) -> None:
    leased(store, "kept")
    leased(store, "taken", lease_s=-1.0)  # lapsed at once
    assert JobStore(tmp_path / "jobs.sqlite3", owner_id="there").claim("taken", LEASE_S) is not None
    running = FakeRunning("kept", "taken")
    spawned: list[Coroutine[Any, Any, object]] = []
    before = time.monotonic()
    renewed_at = asyncio.run(keeper(store, running, spawned).renew(AsyncJobStore(store), 0.0))
    assert renewed_at >= before
    assert running.lost == ["taken"] and not spawned


def test_a_cancel_asked_anywhere_drops_the_job_here_once(store: JobStore) -> None:
    leased(store, "job-1")
    store.request_cancel("job-1")
    running = FakeRunning("job-1")
    spawned: list[Coroutine[Any, Any, object]] = []

    async def main() -> None:
        lease_keeper = keeper(store, running, spawned)
        await lease_keeper.renew(AsyncJobStore(store), 0.0)
        await asyncio.gather(*spawned)
        assert running.dropped == ["job-1"]
        running.asked.add("job-1")  # dropping it already
        await lease_keeper.renew(AsyncJobStore(store), 0.0)
        assert len(spawned) == 1

    asyncio.run(main())


def test_jobs_finished_meanwhile_are_passed_over(store: JobStore, tmp_path: Path) -> None:
    leased(store, "job-1", lease_s=-1.0)
    assert JobStore(tmp_path / "jobs.sqlite3", owner_id="there").claim("job-1", LEASE_S) is not None

    class Finishing(FakeRunning):
        """Its job ends while the renewal is on its way."""

        def __contains__(self, job_id: object) -> bool:
            return False

    finishing = Finishing("job-1")
    asyncio.run(keeper(store, finishing, []).renew(AsyncJobStore(store), 0.0))
    assert not finishing.lost


def test_an_unreachable_store_stops_every_job_after_a_whole_lease(store: JobStore) -> None:
    running = FakeRunning("job-1", "job-2")
    lease_keeper = keeper(store, running, [])
    recently = time.monotonic()
    assert asyncio.run(lease_keeper.renew(DownStore(), recently)) == recently  # type: ignore[arg-type]
    assert not running.lost
    long_ago = time.monotonic() - LEASE_S - 1.0
    assert asyncio.run(lease_keeper.renew(DownStore(), long_ago)) == long_ago  # type: ignore[arg-type]
    assert running.lost == ["job-1", "job-2"]


def test_the_heartbeat_runs_until_the_gateway_stops(store: JobStore) -> None:
    running = FakeRunning()
    config = GatewayConfig(server=ServerConfig(), lease_s=0.03)
    lease_keeper = LeaseKeeper(AsyncJobStore(store), config, running, lambda work: None)  # type: ignore[arg-type]

    async def main() -> None:
        heartbeat = asyncio.create_task(lease_keeper.keep_forever())
        await asyncio.sleep(0.1)
        assert not heartbeat.done()
        running.stopping = True
        await asyncio.wait_for(heartbeat, 1.0)

    asyncio.run(main())

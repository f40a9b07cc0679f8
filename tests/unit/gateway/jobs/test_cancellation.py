"""gateway.jobs.cancellation: a job cancelled wherever it is, on a real
SQLite store that two gateways ("here", "there") share, against fake running
jobs and a fake dispatcher; and a job whose creation was abandoned withdrawn."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

import pytest

from common.rpc.server import ServerConfig
from gateway.config import GatewayConfig
from gateway.jobs.admission import JobSizes
from gateway.jobs.cancellation import JobCanceller
from gateway.jobs.events import EventHub
from gateway.jobs.outcomes import OutcomeRecorder
from gateway.jobs.run.pipeline import Peers
from gateway.records import JobRecord, JobState
from gateway.store.async_store import AsyncJobStore
from gateway.store.job_store import JobStore
from subtitler.gateway.v1 import gateway_pb2


class FakeRunning:
    """The jobs running here; dropping one finishes it."""

    def __init__(self, store: JobStore, *job_ids: str) -> None:
        self.store = store
        self.ids = set(job_ids)
        self.dropped: list[str] = []

    def __contains__(self, job_id: object) -> bool:
        return job_id in self.ids

    async def drop(self, job_id: str) -> None:
        self.dropped.append(job_id)
        self.ids.discard(job_id)


class FakeDispatcher:
    def __init__(self) -> None:
        self.claiming = asyncio.Lock()
        self.forgotten: list[str] = []

    def forget(self, job_id: str) -> None:
        self.forgotten.append(job_id)


class Harness:
    def __init__(self, store: JobStore, running: FakeRunning, lease_s: float = 30.0) -> None:
        self.dispatcher = FakeDispatcher()
        self.wake = asyncio.Event()
        self.spawned: list[asyncio.Task[object]] = []
        config = GatewayConfig(server=ServerConfig(), lease_s=lease_s, poll_s=0.01)
        peers = Peers(audio=None, vad=None, asr=None, align=None)  # type: ignore[arg-type]
        outcomes = OutcomeRecorder(AsyncJobStore(store), EventHub(AsyncJobStore(store)), peers, JobSizes())
        self.canceller = JobCanceller(
            AsyncJobStore(store),
            config,
            running,  # type: ignore[arg-type]
            self.dispatcher,  # type: ignore[arg-type]
            outcomes,
            self.spawn,
            self.wake,
        )

    def spawn(self, work: Coroutine[Any, Any, object]) -> None:
        self.spawned.append(asyncio.get_running_loop().create_task(work))


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.sqlite3", owner_id="here")


def add(store: JobStore, job_id: str, state: JobState = JobState.QUEUED, **fields: Any) -> JobRecord:
    now = time.time()
    job = JobRecord(job_id, state, gateway_pb2.JobConfig(), "talk.wav", now, now, **fields)
    store.insert_job(job)
    return job


def test_a_waiting_job_is_cancelled_here(store: JobStore) -> None:
    add(store, "job-1")

    async def main() -> Harness:
        harness = Harness(store, FakeRunning(store))
        job = await harness.canceller.cancel("job-1")
        assert job.state == JobState.CANCELLED
        return harness

    harness = asyncio.run(main())
    assert harness.dispatcher.forgotten == ["job-1"] and harness.wake.is_set()


def test_a_finished_job_is_returned_unchanged(store: JobStore) -> None:
    add(store, "job-1", JobState.SUCCEEDED)
    job = asyncio.run(Harness(store, FakeRunning(store)).canceller.cancel("job-1"))
    assert job.state == JobState.SUCCEEDED and not store.events_after("job-1", 0)


def test_a_job_running_here_is_dropped(store: JobStore) -> None:
    add(store, "job-1", JobState.RUNNING)
    assert store.claim("job-1", 30.0) is not None
    running = FakeRunning(store, "job-1")
    asyncio.run(Harness(store, running).canceller.cancel("job-1"))
    assert running.dropped == ["job-1"]


def test_a_job_running_elsewhere_is_asked_to_stop(store: JobStore, tmp_path: Path) -> None:
    add(store, "job-1", JobState.RUNNING)
    there = JobStore(tmp_path / "jobs.sqlite3", owner_id="there")
    assert there.claim("job-1", 30.0) is not None
    job = asyncio.run(Harness(store, FakeRunning(store), lease_s=0.05).canceller.cancel("job-1"))
    assert job.state == JobState.RUNNING  # its gateway did not stop it in time
    assert there.renew_leases(["job-1"], 30.0) == ({"job-1"}, {"job-1"})


def test_an_abandoned_creation_is_withdrawn(store: JobStore, tmp_path: Path) -> None:
    upload = tmp_path / "talk.wav"
    upload.write_bytes(b"x")
    job = add(store, "job-1", media_path=str(upload), uploaded=True)
    earlier = add(store, "earlier")

    async def main() -> None:
        harness = Harness(store, FakeRunning(store))
        for job_id, submitted in (("job-1", job), ("other", earlier)):
            submission: asyncio.Future[JobRecord] = asyncio.get_running_loop().create_future()
            harness.canceller.withdraw_later(job_id, submission)
            submission.set_result(submitted)
        await asyncio.gather(*harness.spawned)

    asyncio.run(main())
    assert not upload.exists()
    assert [job.job_id for job in store.unfinished_jobs()] == ["earlier"]

"""gateway.jobs.running: each job's task, with a fake pipeline in place of
JobPipeline (its behaviour chosen per test) on a real SQLite store: how a
run's end is recorded and how a job is stopped (cancelled, taken over,
shutdown, the store out of reach)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import grpc
import pytest

from common.rpc.server import ServerConfig
from common.transcript import Segment
from gateway.config import GatewayConfig
from gateway.jobs import running as running_module
from gateway.jobs.admission import JobSizes
from gateway.jobs.events import EventHub
from gateway.jobs.outcomes import OutcomeRecorder
from gateway.jobs.run.pipeline import Peers
from gateway.jobs.run.stage_calls import StageFailedError
from gateway.jobs.running import RunningJobs
from gateway.records import JobRecord, JobState, Stage
from gateway.store.async_store import AsyncJobStore
from gateway.store.errors import StoreUnavailableError
from gateway.store.job_store import JobStore
from subtitler.gateway.v1 import gateway_pb2

LEASE_S = 30.0
Behaviour = Callable[[], Awaitable[list[Segment]]]


class FakePipeline:
    """Stands in for JobPipeline: runs `behaviour`, and remembers itself."""

    behaviour: Behaviour
    made: list[FakePipeline] = []

    def __init__(self, job: JobRecord, *_: Any) -> None:
        self.job = job
        self.keep_audio = False
        FakePipeline.made.append(self)

    async def run(self) -> list[Segment]:
        return await FakePipeline.behaviour()


async def forever() -> list[Segment]:
    await asyncio.Event().wait()
    return []


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobStore:
    monkeypatch.setattr(running_module, "JobPipeline", FakePipeline)
    FakePipeline.made = []
    return JobStore(tmp_path / "jobs.sqlite3", owner_id="here")


def leased_job(store: JobStore, job_id: str = "job-1") -> JobRecord:
    now = time.time()
    store.insert_job(
        JobRecord(job_id, JobState.QUEUED, gateway_pb2.JobConfig(), "talk.wav", now, now, media_path="talk.wav")
    )
    claim = store.claim(job_id, LEASE_S)
    assert claim is not None
    return claim.job


class Harness:
    """RunningJobs on `store`, with the tasks it spawned and its wake event."""

    def __init__(self, store: JobStore) -> None:
        self.spawned: list[asyncio.Task[object]] = []
        self.wake = asyncio.Event()
        peers = Peers(audio=None, vad=None, asr=None, align=None)  # type: ignore[arg-type]
        events = EventHub(AsyncJobStore(store))
        outcomes = OutcomeRecorder(AsyncJobStore(store), events, peers, JobSizes())
        config = GatewayConfig(server=ServerConfig(), lease_s=LEASE_S)
        self.running = RunningJobs(AsyncJobStore(store), events, peers, config, outcomes, self.spawn, self.wake)

    def spawn(self, work: Coroutine[Any, Any, object]) -> None:
        self.spawned.append(asyncio.get_running_loop().create_task(work))

    async def settle(self) -> None:
        """Waits for every job and spawned task to end."""
        while others := asyncio.all_tasks() - {asyncio.current_task()}:
            await asyncio.wait(others)


def run_one(store: JobStore, behaviour: Behaviour) -> Harness:
    FakePipeline.behaviour = behaviour

    async def main() -> Harness:
        harness = Harness(store)
        assert harness.running.start(leased_job(store))
        await harness.settle()
        assert harness.wake.is_set()
        return harness

    return asyncio.run(main())


def test_a_run_that_ends_well_is_recorded_and_frees_its_slot(store: JobStore) -> None:
    async def segments() -> list[Segment]:
        return [Segment(start_s=0.0, end_s=1.0, text="hello")]

    run_one(store, segments)
    job = store.get_job("job-1")
    assert job.state == JobState.SUCCEEDED and job.segment_count == 1
    states = [event.state for event in store.events_after("job-1", 0) if event.state_changed]
    assert states == [gateway_pb2.JOB_STATE_RUNNING, gateway_pb2.JOB_STATE_SUCCEEDED]


def test_a_stage_refused_fails_the_job_with_its_status(store: JobStore) -> None:
    async def refused() -> list[Segment]:
        raise StageFailedError(Stage.DECODE, grpc.StatusCode.INVALID_ARGUMENT, "not media")

    run_one(store, refused)
    failure = store.get_job("job-1").failure
    assert failure is not None and (failure.code, failure.message, failure.stage) == (
        "INVALID_ARGUMENT",
        "not media",
        Stage.DECODE,
    )


def test_a_bug_fails_the_job_not_the_gateway(store: JobStore) -> None:
    async def bug() -> list[Segment]:
        raise RuntimeError("oops")

    run_one(store, bug)
    failure = store.get_job("job-1").failure
    assert failure is not None and failure.code == "INTERNAL" and "oops" not in failure.message


def test_a_job_stopped_by_the_store_gives_its_lease_back(store: JobStore, tmp_path: Path) -> None:
    async def unreachable() -> list[Segment]:
        raise StoreUnavailableError("down")

    run_one(store, unreachable)
    assert store.get_job("job-1").state == JobState.RUNNING  # taken again from its checkpoint
    other = JobStore(tmp_path / "jobs.sqlite3", owner_id="there")
    assert other.claim("job-1", LEASE_S) is not None


def test_a_dropped_job_is_cancelled(store: JobStore) -> None:
    FakePipeline.behaviour = forever

    async def main() -> None:
        harness = Harness(store)
        harness.running.start(leased_job(store))
        assert "job-1" in harness.running and list(harness.running) == ["job-1"]
        assert not harness.running.start(store.get_job("job-1"))  # runs here already
        await asyncio.sleep(0.05)
        await harness.running.drop("job-1")
        assert harness.running.cancel_requested("job-1") is False  # forgotten once stopped
        assert len(harness.running) == 0

    asyncio.run(main())
    assert store.get_job("job-1").state == JobState.CANCELLED


def test_a_job_taken_over_is_stopped_without_a_word(store: JobStore) -> None:
    FakePipeline.behaviour = forever

    async def main() -> None:
        harness = Harness(store)
        harness.running.start(leased_job(store))
        await asyncio.sleep(0.05)
        events = len(store.events_after("job-1", 0))
        harness.running.stop_lost("job-1")
        await harness.settle()
        assert FakePipeline.made[0].keep_audio
        assert len(store.events_after("job-1", 0)) == events
        assert not harness.spawned  # its lease is not given back: the new gateway holds it

    asyncio.run(main())
    assert store.get_job("job-1").state == JobState.RUNNING


def test_stop_all_leaves_jobs_running_for_the_next_start(store: JobStore) -> None:
    FakePipeline.behaviour = forever

    async def main() -> None:
        harness = Harness(store)
        harness.running.start(leased_job(store, "job-1"))
        harness.running.start(leased_job(store, "job-2"))
        await asyncio.sleep(0.05)
        harness.running.stopping = True
        stopped = harness.running.stop_all()
        assert sorted(job_id for job_id, _ in stopped) == ["job-1", "job-2"]
        await asyncio.gather(*(task for _, task in stopped), return_exceptions=True)
        assert all(pipeline.keep_audio for pipeline in FakePipeline.made)
        assert not harness.spawned

    asyncio.run(main())
    assert {store.get_job(job_id).state for job_id in ("job-1", "job-2")} == {JobState.RUNNING}

"""gateway.jobs.dispatch: the claim loop on a real SQLite store, against a
fake set of running jobs: which jobs it takes, how it ends the ones that
cannot run, and the queue positions it publishes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from common.rpc.server import ServerConfig
from gateway.config import GatewayConfig
from gateway.jobs.admission import JobSizes
from gateway.jobs.dispatch import JobDispatcher, has_progress
from gateway.jobs.events import EventHub
from gateway.jobs.outcomes import OutcomeRecorder
from gateway.jobs.run.pipeline import Peers
from gateway.records import JobRecord, JobState, Stage
from gateway.store.async_store import AsyncJobStore
from gateway.store.job_store import JobStore
from gateway.store.stage_outputs import Checkpoint
from subtitler.common.v1 import common_pb2
from subtitler.gateway.v1 import gateway_pb2


class FakeRunning:
    """Takes every job it is given; remembers each with its checkpoint."""

    def __init__(self) -> None:
        self.started: list[tuple[str, Checkpoint | None]] = []
        self.stopping = False

    def __len__(self) -> int:
        return len(self.started)

    def __iter__(self) -> Iterator[str]:
        return iter([job_id for job_id, _ in self.started])

    def start(self, job: JobRecord, checkpoint: Checkpoint | None = None) -> bool:
        self.started.append((job.job_id, checkpoint))
        return True


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.sqlite3", owner_id="here")


def add(store: JobStore, job_id: str, state: JobState = JobState.QUEUED, **fields: object) -> None:
    now = time.time()
    fields.setdefault("media_path", "talk.wav")
    store.insert_job(JobRecord(job_id, state, gateway_pb2.JobConfig(), "talk.wav", now, now, **fields))  # type: ignore[arg-type]


def dispatcher(store: JobStore, running: FakeRunning, max_jobs: int = 4) -> tuple[JobDispatcher, asyncio.Event]:
    config = GatewayConfig(server=ServerConfig(), max_concurrent_jobs=max_jobs, lease_s=30.0)
    peers = Peers(audio=None, vad=None, asr=None, align=None)  # type: ignore[arg-type]
    events = EventHub(AsyncJobStore(store))
    wake = asyncio.Event()
    outcomes = OutcomeRecorder(AsyncJobStore(store), events, peers, JobSizes())
    return JobDispatcher(AsyncJobStore(store), events, config, running, outcomes, wake), wake  # type: ignore[arg-type]


def test_jobs_are_taken_while_there_is_room_and_the_rest_get_places(store: JobStore) -> None:
    for job_id in ("first", "second", "third"):
        add(store, job_id)
    running = FakeRunning()

    async def main() -> JobDispatcher:
        jobs, _ = dispatcher(store, running, max_jobs=1)
        await jobs.dispatch()
        await jobs.dispatch()  # the same places: published once
        return jobs

    jobs = asyncio.run(main())
    assert running.started == [("first", None)]
    assert (jobs.position("second"), jobs.position("third"), jobs.position("first")) == (1, 2, 0)
    assert jobs.queued_count == 2
    positions = [event.queue_position for event in store.events_after("third", 0)]
    assert positions == [2]
    jobs.forget("second")
    assert jobs.position("second") == 0 and jobs.queued_count == 1


def test_a_lost_upload_fails_its_job_instead_of_running_it(store: JobStore, tmp_path: Path) -> None:
    add(store, "job-1", media_path=str(tmp_path / "gone.wav"), uploaded=True)
    running = FakeRunning()
    asyncio.run(dispatcher(store, running)[0].dispatch())
    job = store.get_job("job-1")
    assert not running.started
    assert job.state == JobState.FAILED and job.failure is not None
    assert (job.failure.code, job.failure.stage) == ("DATA_LOSS", Stage.DECODE)


def test_a_job_asked_to_cancel_is_cancelled_when_taken(store: JobStore) -> None:
    add(store, "job-1")
    store.request_cancel("job-1")
    running = FakeRunning()
    asyncio.run(dispatcher(store, running)[0].dispatch())
    assert not running.started
    assert store.get_job("job-1").state == JobState.CANCELLED


def test_a_job_left_running_goes_on_from_its_checkpoint(store: JobStore) -> None:
    add(store, "bare", JobState.RUNNING)
    add(store, "decoded", JobState.RUNNING)
    store.save_audio_handle("decoded", common_pb2.AudioHandle(audio_id="audio-1"))
    running = FakeRunning()
    asyncio.run(dispatcher(store, running)[0].dispatch())
    started = dict(running.started)
    assert started["bare"] is None  # nothing to go on from
    checkpoint = started["decoded"]
    assert checkpoint is not None and checkpoint.audio_handle is not None
    assert checkpoint.audio_handle.audio_id == "audio-1"
    (event,) = store.events_after("bare", 0)
    assert event.state == gateway_pb2.JOB_STATE_QUEUED and event.previous_state == gateway_pb2.JOB_STATE_RUNNING


def test_a_checkpoint_with_nothing_in_it_has_no_progress() -> None:
    empty = Checkpoint(None, {}, False, {}, {})
    assert not has_progress(empty)
    assert has_progress(Checkpoint(None, {}, True, {}, {}))


def test_the_loop_takes_jobs_when_woken_until_the_gateway_stops(store: JobStore) -> None:
    running = FakeRunning()
    rounds: list[bool] = []

    async def main() -> None:
        jobs, wake = dispatcher(store, running)

        async def after_round(woken: bool) -> None:
            rounds.append(woken)
            running.stopping = True

        loop = asyncio.create_task(jobs.dispatch_forever(after_round))
        add(store, "job-1")
        wake.set()
        await asyncio.wait_for(loop, 5.0)

    asyncio.run(main())
    assert rounds == [True] and running.started == [("job-1", None)]

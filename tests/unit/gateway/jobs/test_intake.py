"""gateway.jobs.intake: new jobs made, admitted and stored once per request
id on a real SQLite store, and the wait the status shows, against fake
running jobs and a fake dispatcher."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from common.errors import ResourceExhaustedError
from common.rpc.server import ServerConfig
from gateway.config import GatewayConfig
from gateway.jobs.admission import PRIOR_JOB_AUDIO_S, JobAdmission, QueueBounds
from gateway.jobs.events import EventHub
from gateway.jobs.intake import JobIntake
from gateway.records import JobState
from gateway.store.async_store import AsyncJobStore
from gateway.store.job_store import JobStore
from subtitler.gateway.v1 import gateway_pb2


class Counted:
    """Stands in for the running jobs (`len`) and the dispatcher (`queued_count`)."""

    def __init__(self, running: int = 0, queued: int = 0) -> None:
        self.running = running
        self.queued_count = queued

    def __len__(self) -> int:
        return self.running


def intake(
    store: JobStore, *, running: int = 0, rate: float = 0.0, max_queued_jobs: int = 10
) -> tuple[JobIntake, asyncio.Event]:
    config = GatewayConfig(server=ServerConfig(), max_concurrent_jobs=1, max_queued_jobs=max_queued_jobs)
    admission = JobAdmission(lambda: rate, QueueBounds(config.max_queued_jobs, config.max_queue_wait_s))
    counted = Counted(running)
    wake = asyncio.Event()
    made = JobIntake(AsyncJobStore(store), EventHub(AsyncJobStore(store)), config, admission, counted, counted, wake)  # type: ignore[arg-type]
    return made, wake


def test_a_new_job_waits_in_the_queue_unstored(store: JobStore) -> None:
    job = JobIntake.new_job(gateway_pb2.JobConfig(), "talk.wav", "/media/talk.wav", uploaded=False, priority=3)
    assert job.state == JobState.QUEUED and job.priority == 3 and job.created_s == job.updated_s
    assert len(job.job_id) == 32 and not store.unfinished_jobs()


def test_a_request_id_creates_one_job(store: JobStore, tmp_path: Path) -> None:
    first_upload, second_upload = tmp_path / "first.wav", tmp_path / "second.wav"
    first_upload.write_bytes(b"x")
    second_upload.write_bytes(b"x")

    async def main() -> None:
        jobs, wake = intake(store)
        first = jobs.new_job(gateway_pb2.JobConfig(), "a", str(first_upload), uploaded=True, request_id="r-1")
        assert await jobs.submit(first) is first
        assert wake.is_set()
        wake.clear()
        again = jobs.new_job(gateway_pb2.JobConfig(), "a", str(second_upload), uploaded=True, request_id="r-1")
        assert (await jobs.submit(again)).job_id == first.job_id
        assert not wake.is_set()
        assert (await jobs.existing("r-1")).job_id == first.job_id  # type: ignore[union-attr]
        assert await jobs.existing("") is None
        assert await jobs.existing("r-1", owner="someone else") is None

    asyncio.run(main())
    assert first_upload.exists() and not second_upload.exists()
    assert len(store.unfinished_jobs()) == 1


def test_a_full_queue_refuses_new_jobs_once_no_slot_is_free(store: JobStore) -> None:
    async def main() -> None:
        jobs, _ = intake(store, max_queued_jobs=1)
        await jobs.check_queue_space()  # a free slot
        await jobs.submit(jobs.new_job(gateway_pb2.JobConfig(), "a", "a.wav", uploaded=False))
        with pytest.raises(ResourceExhaustedError):
            await jobs.check_queue_space()

    asyncio.run(main())


def test_the_wait_is_estimated_at_the_measured_rate_and_not_too_often(store: JobStore) -> None:
    async def main() -> None:
        idle, _ = intake(store, rate=2.0)
        await idle.refresh_wait(woken=True)
        assert idle.queue_wait.wait_s == 0.0  # a slot is free
        jobs, _ = intake(store, running=1, rate=2.0)
        store.insert_job(jobs.new_job(gateway_pb2.JobConfig(), "a", "a.wav", uploaded=False))
        await jobs.refresh_wait(woken=False)
        # A job not decoded yet holds the prior audio, transcribed at 2 s of audio a second.
        assert jobs.queue_wait.wait_s == PRIOR_JOB_AUDIO_S / 2.0 and jobs.queue_wait.jobs_ahead == 1
        store.insert_job(jobs.new_job(gateway_pb2.JobConfig(), "b", "b.wav", uploaded=False))
        await jobs.refresh_wait(woken=False)  # estimated just now
        assert jobs.queue_wait.jobs_ahead == 1
        await jobs.refresh_wait(woken=True)  # a job created or finished here: at once
        assert jobs.queue_wait.jobs_ahead == 2

    asyncio.run(main())

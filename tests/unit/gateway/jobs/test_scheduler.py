"""gateway.jobs.scheduler: the composed scheduler on a real SQLite store,
with a fake pipeline in JobPipeline's place that runs until released: jobs
submitted, queued behind the one slot, cancelled, finished, and left
RUNNING for the next start at shutdown."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from common.errors import ResourceExhaustedError
from common.rpc.server import ServerConfig
from common.transcript import Segment
from gateway.config import GatewayConfig
from gateway.jobs import running as running_module
from gateway.jobs.events import EventHub
from gateway.jobs.run.pipeline import Peers
from gateway.jobs.scheduler import JobScheduler
from gateway.records import JobRecord, JobState
from gateway.store.async_store import AsyncJobStore
from gateway.store.job_store import JobStore
from subtitler.gateway.v1 import gateway_pb2


class HeldPipeline:
    """Stands in for JobPipeline: runs until `release` is set."""

    release: asyncio.Event

    def __init__(self, job: JobRecord, *_: Any) -> None:
        self.keep_audio = False

    async def run(self) -> list[Segment]:
        await HeldPipeline.release.wait()
        return []


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> JobStore:
    monkeypatch.setattr(running_module, "JobPipeline", HeldPipeline)
    return JobStore(tmp_path / "jobs.sqlite3")


def scheduler(store: JobStore, data_dir: Path) -> JobScheduler:
    config = GatewayConfig(server=ServerConfig(), data_dir=data_dir, max_concurrent_jobs=1, lease_s=30.0)
    peers = Peers(audio=None, vad=None, asr=None, align=None)  # type: ignore[arg-type]
    return JobScheduler(AsyncJobStore(store), EventHub(AsyncJobStore(store)), peers, config)


async def until(condition: Any) -> None:
    for _ in range(500):
        if condition():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("not within 5 s")


def test_jobs_queue_behind_the_slot_and_run_in_turn(store: JobStore, tmp_path: Path) -> None:
    async def main() -> None:
        HeldPipeline.release = asyncio.Event()
        jobs = scheduler(store, tmp_path)
        assert await jobs.start() == 0
        first, second, third = [
            await jobs.submit(jobs.new_job(gateway_pb2.JobConfig(), name, name, uploaded=False))
            for name in ("a", "b", "c")
        ]
        await until(lambda: jobs.running_count == 1 and jobs.queued_count == 2)
        assert [jobs.queue_position(job.job_id) for job in (first, second, third)] == [0, 1, 2]
        assert (await jobs.cancel(second.job_id)).state == JobState.CANCELLED
        assert jobs.queue_position(second.job_id) == 0
        await until(lambda: jobs.queue_position(third.job_id) == 1)  # the queue read again
        HeldPipeline.release.set()
        await until(lambda: store.get_job(third.job_id).state == JobState.SUCCEEDED)
        assert store.get_job(first.job_id).state == JobState.SUCCEEDED
        assert jobs.queue_wait.wait_s == 0.0  # nothing measured
        await jobs.shutdown()

    asyncio.run(main())


def test_shutdown_leaves_running_jobs_for_the_next_start(store: JobStore, tmp_path: Path) -> None:
    async def main() -> str:
        HeldPipeline.release = asyncio.Event()
        jobs = scheduler(store, tmp_path)
        await jobs.start()
        job = await jobs.submit(jobs.new_job(gateway_pb2.JobConfig(), "a", "a", uploaded=False))
        await until(lambda: jobs.running_count == 1)
        await jobs.shutdown()
        return job.job_id

    job_id = asyncio.run(main())
    assert store.get_job(job_id).state == JobState.RUNNING

    async def restart() -> None:
        HeldPipeline.release = asyncio.Event()
        HeldPipeline.release.set()
        jobs = scheduler(store, tmp_path)
        assert await jobs.start() == 1
        await until(lambda: store.get_job(job_id).state == JobState.SUCCEEDED)
        await jobs.shutdown()

    asyncio.run(restart())


def test_uploads_live_in_the_data_directory_while_disk_is_free(store: JobStore, tmp_path: Path) -> None:
    jobs = scheduler(store, tmp_path)
    assert jobs.uploads_dir == tmp_path / "uploads" and jobs.uploads_dir.is_dir()
    jobs.check_upload_space(0)
    with pytest.raises(ResourceExhaustedError):
        jobs.check_upload_space(2**62)

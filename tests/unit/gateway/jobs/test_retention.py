"""gateway.jobs.retention: finished jobs past the retention deleted from a
real SQLite store with their uploads; the others kept."""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from pathlib import Path

import pytest

from common.errors import NotFoundError
from common.rpc.server import ServerConfig
from gateway.config import GatewayConfig
from gateway.jobs.retention import RetentionSweeper
from gateway.records import JobRecord, JobState
from gateway.store.async_store import AsyncJobStore
from gateway.store.errors import LeaseLostError
from gateway.store.job_store import JobStore
from subtitler.gateway.v1 import gateway_pb2

RETENTION_S = 100.0


def add(store: JobStore, job_id: str, state: JobState, finished_ago_s: float, upload: Path) -> None:
    upload.write_bytes(b"x")
    now = time.time()
    job = JobRecord(job_id, state, gateway_pb2.JobConfig(), "talk.wav", now, now, str(upload), uploaded=True)
    store.insert_job(job)
    if state.finished:
        job.finished_s = now - finished_ago_s
        store.update_job(job)


def sweeper(store: JobStore, interval_s: float = 600.0) -> RetentionSweeper:
    config = GatewayConfig(server=ServerConfig(), retention_s=RETENTION_S, retention_sweep_interval_s=interval_s)
    return RetentionSweeper(AsyncJobStore(store), config)


def test_only_jobs_finished_past_the_retention_are_deleted(store: JobStore, tmp_path: Path) -> None:
    add(store, "old", JobState.SUCCEEDED, RETENTION_S * 2, tmp_path / "old.wav")
    add(store, "recent", JobState.FAILED, RETENTION_S / 2, tmp_path / "recent.wav")
    add(store, "running", JobState.RUNNING, 0.0, tmp_path / "running.wav")
    assert asyncio.run(sweeper(store).sweep_expired()) == 1
    with pytest.raises(NotFoundError):
        store.get_job("old")
    assert not (tmp_path / "old.wav").exists()
    assert store.get_job("recent").state == JobState.FAILED and (tmp_path / "recent.wav").exists()
    assert (tmp_path / "running.wav").exists()
    assert asyncio.run(sweeper(store).sweep_expired()) == 0


def test_the_sweep_goes_on_after_a_failure(store: JobStore, monkeypatch: pytest.MonkeyPatch) -> None:
    rounds: list[int] = []
    third_round = threading.Event()

    def expired_jobs(finished_before_s: float) -> list[JobRecord]:
        rounds.append(1)
        if len(rounds) == 3:
            third_round.set()
        if len(rounds) == 1:
            raise LeaseLostError("a bad round")
        return []

    monkeypatch.setattr(store.jobs, "expired_jobs", expired_jobs)

    async def main() -> None:
        sweep = asyncio.create_task(sweeper(store, interval_s=0.01).sweep_forever())
        assert await asyncio.to_thread(third_round.wait, 5.0)
        sweep.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await sweep

    asyncio.run(main())

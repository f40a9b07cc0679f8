from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from gateway.records import JobRecord, JobState
from gateway.store.job_store import JobStore
from tests.unit.gateway.store.store_fixtures import new_job


def test_a_request_id_names_one_job(location: str | Path) -> None:
    store = JobStore(location)
    first = store.jobs.insert_job(new_job("a", request_id="r1"))
    again = store.jobs.insert_job(new_job("b", request_id="r1"))
    assert first.job_id == again.job_id == "a"
    assert store.jobs.job_by_request_id("r1") is not None
    assert [job.job_id for job in store.jobs.unfinished_jobs()] == ["a"]
    store.close()


def test_expired_jobs_are_the_finished_ones_past_retention(location: str | Path) -> None:
    store = JobStore(location)
    old = store.jobs.insert_job(new_job("old"))
    store.jobs.insert_job(new_job("running"))
    old.state = JobState.SUCCEEDED
    old.finished_s = time.time()
    store.outputs.finish_job(old, [])
    assert [job.job_id for job in store.jobs.expired_jobs(time.time() + 1)] == ["old"]
    assert store.jobs.expired_jobs(time.time() - 60) == []
    store.jobs.delete_job("old")
    assert [job.job_id for job in store.jobs.unfinished_jobs()] == ["running"]
    store.close()


def test_two_gateways_creating_one_request_at_once_make_one_job(location: str | Path) -> None:
    first, second = JobStore(location), JobStore(location)
    first.jobs.insert_job(new_job("a", request_id="r1"))

    def raced(job: JobRecord, event: object) -> JobRecord:
        # The other gateway's insert landed between this one's check and its insert.
        raise sqlite3.IntegrityError("UNIQUE constraint failed: jobs.owner, jobs.request_id")

    second.jobs._insert_job = raced  # type: ignore[method-assign]
    assert second.jobs.insert_job(new_job("b", request_id="r1")).job_id == "a"
    first.close()
    second.close()

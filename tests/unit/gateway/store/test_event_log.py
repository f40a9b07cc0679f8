from __future__ import annotations

import queue
import sqlite3
import time
from pathlib import Path

import pytest

from gateway.store.errors import CorruptRecordError, LeaseLostError
from gateway.store.job_store import JobStore
from subtitler.gateway.v1 import gateway_pb2
from tests.postgres import fresh_database
from tests.unit.gateway.store.store_fixtures import new_job


def test_each_job_numbers_its_events_in_order(location: str | Path) -> None:
    store, other = JobStore(location), JobStore(location)
    first = gateway_pb2.JobEvent(job_id="a", state=gateway_pb2.JOB_STATE_QUEUED)
    store.jobs.insert_job(new_job("a"), first)
    store.jobs.insert_job(new_job("b"))
    assert first.sequence == 1  # the first event came with the job
    assert store.events.append_event(gateway_pb2.JobEvent(job_id="a", progress=0.5)).sequence == 2
    assert store.events.append_event(gateway_pb2.JobEvent(job_id="b")).sequence == 1  # each job counts its own
    assert [event.progress for event in store.events.events_after("a", 0)] == [0.0, 0.5]
    assert store.events.events_after("a", 2) == []
    # Only the gateway that holds a job's lease appends its events.
    assert other.queue.claim("a", lease_s=30) is not None
    with pytest.raises(LeaseLostError):
        store.events.append_event(gateway_pb2.JobEvent(job_id="a"))
    with pytest.raises(LeaseLostError, match="gone"):
        store.events.append_event(gateway_pb2.JobEvent(job_id="deleted"))
    store.close()
    other.close()


def test_an_event_that_cannot_be_read_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    store.jobs.insert_job(new_job("a"), gateway_pb2.JobEvent(job_id="a"))
    with sqlite3.connect(path) as db:
        db.execute("UPDATE job_events SET event = x'ffffffff' WHERE job_id = 'a'")
    with pytest.raises(CorruptRecordError, match="event of job a cannot be read"):
        store.events.events_after("a", 0)
    store.close()


def test_a_postgresql_store_tells_the_other_gateways_of_each_event(postgres: str, tmp_path: Path) -> None:
    url = fresh_database(postgres)
    writer, reader = JobStore(url), JobStore(url)
    heard: queue.Queue[str] = queue.Queue()
    stop = reader.events.listen_for_events(heard.put)
    assert stop is not None
    try:
        time.sleep(0.5)  # listening
        writer.jobs.insert_job(new_job("a"), gateway_pb2.JobEvent(job_id="a"))
        writer.events.append_event(gateway_pb2.JobEvent(job_id="a"))
        assert [heard.get(timeout=5), heard.get(timeout=5)] == ["a", "a"]
        reader.queue.claim("a", lease_s=30)
        reader.events.append_event(gateway_pb2.JobEvent(job_id="a"))  # its own: its watchers have it already
        time.sleep(0.5)
        assert heard.empty()
    finally:
        stop()
        writer.close()
        reader.close()
    sqlite = JobStore(tmp_path / "jobs.sqlite3")
    assert sqlite.events.listen_for_events(heard.put) is None  # one gateway's file: nobody else writes
    sqlite.close()

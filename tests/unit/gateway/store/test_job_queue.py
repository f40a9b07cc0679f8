from __future__ import annotations

from pathlib import Path

import pytest

from gateway.records import JobState
from gateway.store.errors import LeaseLostError
from gateway.store.job_store import JobStore
from subtitler.gateway.v1 import gateway_pb2
from tests.unit.gateway.store.store_fixtures import new_job


def test_gateways_lease_each_job_to_one_of_them(location: str | Path) -> None:
    first, second = JobStore(location), JobStore(location)
    assert first.owner_id != second.owner_id
    first.jobs.insert_job(new_job("low"), gateway_pb2.JobEvent(job_id="low", state=gateway_pb2.JOB_STATE_QUEUED))
    first.jobs.insert_job(new_job("high", priority=5))
    assert [(job.job_id, published) for job, published in second.queue.queued_jobs()] == [("high", 0), ("low", 0)]
    assert second.queue.queued_count() == 2
    # Claimed in queue order, each by one gateway only.
    taken = first.queue.claim_next(lease_s=30)
    assert taken is not None and taken.job.job_id == "high" and not taken.cancel_requested
    other = second.queue.claim_next(lease_s=30)
    assert other is not None and other.job.job_id == "low"
    assert first.queue.claim_next(lease_s=30) is None and second.queue.claim("high", lease_s=30) is None
    assert first.queue.queued_count() == 0
    # Only the holder writes the job's state and events; the first event came with the job.
    assert [event.sequence for event in first.events.events_after("low", 0)] == [1]
    low = second.jobs.get_job("low")
    low.state = JobState.RUNNING
    second.jobs.update_job(low)
    second.events.append_event(gateway_pb2.JobEvent(job_id="low", state=gateway_pb2.JOB_STATE_RUNNING))
    with pytest.raises(LeaseLostError):
        first.jobs.update_job(low)
    with pytest.raises(LeaseLostError):
        first.events.append_event(gateway_pb2.JobEvent(job_id="low"))
    with pytest.raises(LeaseLostError):
        first.outputs.finish_job(low, [])
    # A queue position is published only for a job still waiting, and once.
    first.jobs.insert_job(new_job("waiting"))
    first.jobs.insert_job(new_job("urgent", priority=9))
    published = first.queue.publish_queue_position(gateway_pb2.JobEvent(job_id="waiting"))
    assert published is not None and published.queue_position == 2  # behind "urgent"
    assert second.queue.publish_queue_position(gateway_pb2.JobEvent(job_id="waiting")) is None  # published already
    assert first.queue.publish_queue_position(gateway_pb2.JobEvent(job_id="low")) is None  # leased: not waiting
    urgent = first.queue.claim("urgent", lease_s=30)
    assert urgent is not None
    moved = second.queue.publish_queue_position(gateway_pb2.JobEvent(job_id="waiting"))
    assert moved is not None and moved.queue_position == 1
    # A gateway's own running jobs are never claimed again, even when their lease lapsed.
    first.queue.renew_leases(["urgent"], lease_s=-1)
    again = first.queue.claim_next(lease_s=30, running=["urgent"])
    assert again is not None and again.job.job_id == "waiting"
    first.queue.release_leases(["waiting"])
    first.queue.renew_leases(["urgent"], lease_s=30)
    # Renewal: the holder keeps its jobs and learns of a cancel asked on any gateway.
    first.jobs.request_cancel("high")
    assert first.queue.renew_leases(["high", "low"], lease_s=30) == ({"high"}, {"high"})
    # A lease that lapses (its gateway died) lets another gateway take the job over.
    second.queue.renew_leases(["low"], lease_s=-1)
    over = first.queue.claim_next(lease_s=30)
    assert over is not None and over.job.job_id == "low" and over.job.state == JobState.RUNNING
    assert second.queue.renew_leases(["low"], lease_s=30) == (set(), set())
    with pytest.raises(LeaseLostError):
        second.events.append_event(gateway_pb2.JobEvent(job_id="low"))
    # Leases given up are free at once; a gateway alone on its store drops its earlier runs' leases.
    first.queue.release_leases(["low"])
    claimed = second.queue.claim("low", lease_s=30)
    assert claimed is not None
    assert second.queue.clear_leases() == 3  # "high", "low" and "urgent"
    assert first.queue.claim("low", lease_s=30) is not None
    first.close()
    second.close()

from __future__ import annotations

import asyncio
import queue
import sqlite3
import time
from pathlib import Path

import pytest

from common.transcript import Segment, TimeRange, Word
from gateway.records import JobRecord, JobState
from gateway.store.errors import CorruptRecordError, LeaseLostError
from gateway.store.job_store import JobStore
from gateway.store.schema import SCHEMA_VERSION
from subtitler.gateway.v1 import gateway_pb2
from tests.postgres import fresh_database


@pytest.fixture(params=["sqlite", "postgresql"])
def location(request: pytest.FixtureRequest, tmp_path: Path) -> str | Path:
    """Where a fresh store lives: a SQLite file, or a new database on a real PostgreSQL server."""
    if request.param == "sqlite":
        return tmp_path / "jobs.sqlite3"
    return fresh_database(request.getfixturevalue("postgres"))


def new_job(job_id: str, **fields: object) -> JobRecord:
    now = time.time()
    return JobRecord(
        job_id=job_id,
        state=JobState.QUEUED,
        config=gateway_pb2.JobConfig(),
        source="talk.wav",
        created_s=now,
        updated_s=now,
        **fields,  # type: ignore[arg-type]
    )


def test_stage_outputs_make_a_checkpoint(location: str | Path) -> None:
    store = JobStore(location)
    store.insert_job(new_job("a"))
    store.save_speech_chunk("a", 0, TimeRange(0.5, 29.0))
    store.save_speech_chunk("a", 1, TimeRange(30.0, 41.0))
    words = (Word("Hello", 0.5, 0.9, 0.8), Word("world.", 1.0, 1.4, 0.7, interpolated=True))
    store.save_chunk_transcript("a", 0, "en", [Segment("Hello world.", 0.5, 1.4, chunk_index=0)])
    store.save_chunk_alignment("a", 0, 2, [Segment("Hello world.", 0.5, 1.4, words=words)])
    checkpoint = store.checkpoint("a")
    assert not checkpoint.detection_complete
    assert checkpoint.speech_chunks == {0: TimeRange(0.5, 29.0), 1: TimeRange(30.0, 41.0)}
    assert checkpoint.transcripts[0][0] == "en"
    assert checkpoint.alignments[0][1][0].words == words
    store.mark_detection_complete("a")
    assert store.checkpoint("a").detection_complete
    store.close()


def test_a_request_id_names_one_job(location: str | Path) -> None:
    store = JobStore(location)
    first = store.insert_job(new_job("a", request_id="r1"))
    again = store.insert_job(new_job("b", request_id="r1"))
    assert first.job_id == again.job_id == "a"
    assert store.job_by_request_id("r1") is not None
    assert [job.job_id for job in store.unfinished_jobs()] == ["a"]
    store.close()


def test_unreadable_records_fail_their_job_only(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    store.insert_job(new_job("good"))
    store.insert_job(new_job("bad-row"))
    store.insert_job(new_job("bad-output"))
    store.save_chunk_transcript("bad-output", 0, "en", [Segment("Hi.", 0.0, 1.0)])
    store.close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE jobs SET config = x'ffffffff' WHERE job_id = 'bad-row'")
        db.execute("UPDATE chunk_transcripts SET segments = '{not json' WHERE job_id = 'bad-output'")
    store = JobStore(path)
    jobs = {job.job_id: job for job in store.unfinished_jobs()}
    assert jobs["good"].failure is None
    assert jobs["bad-row"].state == JobState.FAILED
    assert jobs["bad-row"].failure is not None and "cannot be read" in jobs["bad-row"].failure.message
    with pytest.raises(CorruptRecordError, match="cannot be read"):
        store.checkpoint("bad-output")
    assert store.checkpoint("good").transcripts == {}
    store.close()


def test_a_store_from_a_newer_gateway_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "jobs.sqlite3"
    JobStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(RuntimeError, match="newer gateway"):
        JobStore(path)


def test_expired_jobs_are_the_finished_ones_past_retention(location: str | Path) -> None:
    store = JobStore(location)
    old = store.insert_job(new_job("old"))
    store.insert_job(new_job("running"))
    old.state = JobState.SUCCEEDED
    old.finished_s = time.time()
    store.finish_job(old, [])
    assert [job.job_id for job in store.expired_jobs(time.time() + 1)] == ["old"]
    assert store.expired_jobs(time.time() - 60) == []
    store.delete_job("old")
    assert [job.job_id for job in store.unfinished_jobs()] == ["running"]
    store.close()


def test_every_operation_on_both_stores(location: str | Path) -> None:
    from subtitler.diarize.v1 import diarize_pb2

    store = JobStore(location)
    for number in range(5):
        store.insert_job(new_job(f"j{number}", owner="alice" if number % 2 else "bob", priority=number))
    job = store.get_job("j1")
    job.state, job.language_code, job.stage_fractions = JobState.RUNNING, "en", {}
    job.audio_duration_s = 1234.5678
    store.update_job(job)
    again = store.get_job("j1")
    assert (again.state, again.language_code, again.audio_duration_s) == (JobState.RUNNING, "en", 1234.5678)
    # Events get the job's next sequence numbers.
    first = store.append_event(gateway_pb2.JobEvent(job_id="j1", progress=0.25))
    second = store.append_event(gateway_pb2.JobEvent(job_id="j1", progress=0.5))
    assert (first.sequence, second.sequence) == (1, 2)
    assert [event.progress for event in store.events_after("j1", 1)] == [0.5]
    store.add_retry("j1", gateway_pb2.RetryAttempt(attempt=1, code="UNAVAILABLE"))
    assert [retry.code for retry in store.get_job("j1").retries] == ["UNAVAILABLE"]
    # Stage outputs are replaced when saved again.
    store.save_chunk_transcript("j1", 0, "en", [Segment("Hi.", 0.0, 1.0)])
    store.save_chunk_transcript("j1", 0, "fr", [Segment("Salut.", 0.0, 1.0, speaker="SPEAKER_00")])
    store.save_speech_chunk("j1", 0, TimeRange(0.0, 1.0))
    store.save_speech_chunk("j1", 0, TimeRange(0.0, 2.0))
    turns = diarize_pb2.DiarizeResponse(speaker_count=1, turns=[diarize_pb2.SpeakerTurn(speaker="SPEAKER_00")])
    store.save_speaker_turns("j1", turns)
    store.save_speaker_turns("j1", turns)
    checkpoint = store.checkpoint("j1")
    assert checkpoint.transcripts[0][0] == "fr" and checkpoint.transcripts[0][1][0].speaker == "SPEAKER_00"
    assert checkpoint.speech_chunks == {0: TimeRange(0.0, 2.0)}
    assert checkpoint.speaker_turns == turns and store.speaker_turns("j0") is None
    # Pages, newest first, by owner and state.
    page = store.list_jobs(limit=2, before=None, state=None)
    assert [item.job_id for item in page] == ["j4", "j3"]
    rest = store.list_jobs(limit=10, before=(page[-1].created_s, page[-1].job_id), state=None)
    assert [item.job_id for item in rest] == ["j2", "j1", "j0"]
    assert {item.job_id for item in store.list_jobs(limit=10, before=None, state=None, owner="alice")} == {"j1", "j3"}
    assert [item.job_id for item in store.list_jobs(limit=10, before=None, state=JobState.RUNNING)] == ["j1"]
    assert [item.job_id for item in store.unfinished_jobs()][:2] == ["j4", "j3"]  # priority first
    finished = store.get_job("j1")
    finished.state, finished.finished_s = JobState.SUCCEEDED, time.time()
    store.finish_job(finished, [Segment("Salut.", 0.0, 1.0, speaker="SPEAKER_00")])
    assert store.result("j1")[0].speaker == "SPEAKER_00"
    store.delete_job("j1")  # with its events, retries and outputs
    assert store.events_after("j1", 0) == []
    with pytest.raises(Exception, match="no job"):
        store.get_job("j1")
    store.close()
    reopened = JobStore(location)  # the schema is there: no migration runs again
    assert {job.job_id for job in reopened.unfinished_jobs()} == {"j0", "j2", "j3", "j4"}
    reopened.close()


def test_gateways_lease_each_job_to_one_of_them(location: str | Path) -> None:
    first, second = JobStore(location), JobStore(location)
    assert first.owner_id != second.owner_id
    first.insert_job(new_job("low"), gateway_pb2.JobEvent(job_id="low", state=gateway_pb2.JOB_STATE_QUEUED))
    first.insert_job(new_job("high", priority=5))
    assert [(job.job_id, published) for job, published in second.queued_jobs()] == [("high", 0), ("low", 0)]
    assert second.queued_count() == 2
    # Claimed in queue order, each by one gateway only.
    taken = first.claim_next(lease_s=30)
    assert taken is not None and taken.job.job_id == "high" and not taken.cancel_requested
    other = second.claim_next(lease_s=30)
    assert other is not None and other.job.job_id == "low"
    assert first.claim_next(lease_s=30) is None and second.claim("high", lease_s=30) is None
    assert first.queued_count() == 0
    # Only the holder writes the job's state and events; the first event came with the job.
    assert [event.sequence for event in first.events_after("low", 0)] == [1]
    low = second.get_job("low")
    low.state = JobState.RUNNING
    second.update_job(low)
    second.append_event(gateway_pb2.JobEvent(job_id="low", state=gateway_pb2.JOB_STATE_RUNNING))
    with pytest.raises(LeaseLostError):
        first.update_job(low)
    with pytest.raises(LeaseLostError):
        first.append_event(gateway_pb2.JobEvent(job_id="low"))
    with pytest.raises(LeaseLostError):
        first.finish_job(low, [])
    # A queue position is published only for a job still waiting, and once.
    first.insert_job(new_job("waiting"))
    first.insert_job(new_job("urgent", priority=9))
    published = first.publish_queue_position(gateway_pb2.JobEvent(job_id="waiting"))
    assert published is not None and published.queue_position == 2  # behind "urgent"
    assert second.publish_queue_position(gateway_pb2.JobEvent(job_id="waiting")) is None  # published already
    assert first.publish_queue_position(gateway_pb2.JobEvent(job_id="low")) is None  # leased: not waiting
    urgent = first.claim("urgent", lease_s=30)
    assert urgent is not None
    moved = second.publish_queue_position(gateway_pb2.JobEvent(job_id="waiting"))
    assert moved is not None and moved.queue_position == 1
    # A gateway's own running jobs are never claimed again, even when their lease lapsed.
    first.renew_leases(["urgent"], lease_s=-1)
    again = first.claim_next(lease_s=30, running=["urgent"])
    assert again is not None and again.job.job_id == "waiting"
    first.release_leases(["waiting"])
    first.renew_leases(["urgent"], lease_s=30)
    # Renewal: the holder keeps its jobs and learns of a cancel asked on any gateway.
    first.request_cancel("high")
    assert first.renew_leases(["high", "low"], lease_s=30) == ({"high"}, {"high"})
    # A lease that lapses (its gateway died) lets another gateway take the job over.
    second.renew_leases(["low"], lease_s=-1)
    over = first.claim_next(lease_s=30)
    assert over is not None and over.job.job_id == "low" and over.job.state == JobState.RUNNING
    assert second.renew_leases(["low"], lease_s=30) == (set(), set())
    with pytest.raises(LeaseLostError):
        second.append_event(gateway_pb2.JobEvent(job_id="low"))
    # Leases given up are free at once; a gateway alone on its store drops its earlier runs' leases.
    first.release_leases(["low"])
    claimed = second.claim("low", lease_s=30)
    assert claimed is not None
    assert second.clear_leases() == 3  # "high", "low" and "urgent"
    assert first.claim("low", lease_s=30) is not None
    first.close()
    second.close()


def test_a_postgresql_store_connects_again_after_the_server_drops_it(postgres: str) -> None:
    import psycopg

    url = fresh_database(postgres)
    store = JobStore(url)
    store.insert_job(new_job("a"))
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    with pytest.raises(psycopg.OperationalError):
        store.get_job("a")  # called directly, the operation that meets the break fails
    assert store.get_job("a").job_id == "a"  # and the next one connects again
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    # Through `run`, as the gateway calls it, the operation is tried again on a new connection.
    assert asyncio.run(store.run(store.get_job, "a")).job_id == "a"
    store.close()


def test_a_postgresql_store_tells_the_other_gateways_of_each_event(postgres: str, tmp_path: Path) -> None:
    url = fresh_database(postgres)
    writer, reader = JobStore(url), JobStore(url)
    heard: queue.Queue[str] = queue.Queue()
    stop = reader.listen_for_events(heard.put)
    assert stop is not None
    try:
        time.sleep(0.5)  # listening
        writer.insert_job(new_job("a"), gateway_pb2.JobEvent(job_id="a"))
        writer.append_event(gateway_pb2.JobEvent(job_id="a"))
        assert [heard.get(timeout=5), heard.get(timeout=5)] == ["a", "a"]
        reader.claim("a", lease_s=30)
        reader.append_event(gateway_pb2.JobEvent(job_id="a"))  # its own: its watchers have it already
        time.sleep(0.5)
        assert heard.empty()
    finally:
        stop()
        writer.close()
        reader.close()
    sqlite = JobStore(tmp_path / "jobs.sqlite3")
    assert sqlite.listen_for_events(heard.put) is None  # one gateway's file: nobody else writes
    sqlite.close()


def test_two_gateways_creating_one_request_at_once_make_one_job(location: str | Path) -> None:
    first, second = JobStore(location), JobStore(location)
    first.insert_job(new_job("a", request_id="r1"))

    def raced(job: JobRecord, event: object) -> JobRecord:
        # The other gateway's insert landed between this one's check and its insert.
        raise sqlite3.IntegrityError("UNIQUE constraint failed: jobs.owner, jobs.request_id")

    second.jobs._insert_job = raced  # type: ignore[method-assign]
    assert second.insert_job(new_job("b", request_id="r1")).job_id == "a"
    first.close()
    second.close()

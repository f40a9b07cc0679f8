from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import pytest

from common.transcript import Segment, TimeRange
from gateway.records import JobState
from gateway.store.async_store import AsyncJobStore
from gateway.store.errors import CorruptRecordError
from gateway.store.job_store import JobStore
from subtitler.gateway.v1 import gateway_pb2
from tests.postgres import fresh_database
from tests.unit.gateway.store.store_fixtures import new_job


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
    # Through AsyncJobStore, as the gateway calls it, the operation is tried again on a new connection.
    assert asyncio.run(AsyncJobStore(store).get_job("a")).job_id == "a"
    store.close()

from __future__ import annotations

import sqlite3
import time
from pathlib import Path

import pytest

from common.transcript import Segment, TimeRange, Word
from gateway.jobs import JobRecord, JobState
from gateway.store import SCHEMA_VERSION, CorruptRecordError, JobStore
from subtitler.gateway.v1 import gateway_pb2


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


def test_stage_outputs_make_a_checkpoint(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
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


def test_a_request_id_names_one_job(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
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


def test_expired_jobs_are_the_finished_ones_past_retention(tmp_path: Path) -> None:
    store = JobStore(tmp_path / "jobs.sqlite3")
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

from __future__ import annotations

import json
from typing import Any

from gateway.records import JobFailure, JobState, Stage
from gateway.store.job_rows import job_from_row
from subtitler.gateway.v1 import gateway_pb2


def row(**changes: Any) -> dict[str, Any]:
    """A `jobs` row as the database gives it (read by column name)."""
    return {
        "job_id": "a",
        "state": int(JobState.RUNNING),
        "config": gateway_pb2.JobConfig(skip_alignment=True).SerializeToString(),
        "source": "talk.wav",
        "media_path": "/media/talk.wav",
        "uploaded": 1,
        "created_s": 10.0,
        "updated_s": 12.5,
        "stage": int(Stage.TRANSCRIBE),
        "stage_fractions": json.dumps({int(Stage.DETECT_SPEECH): 1.0, int(Stage.TRANSCRIBE): 0.25}),
        "failure": None,
        "audio_duration_s": 61.5,
        "language_code": "en",
        "language_probability": 0.9,
        "segment_count": 4,
        "processing_s": 2.0,
        "request_id": None,
        "owner": "alice",
        "priority": 3,
        "waiting_reason": "",
        "finished_s": 0.0,
        **changes,
    }


def test_a_row_becomes_its_job() -> None:
    job = job_from_row(row())
    assert (job.job_id, job.state, job.stage, job.owner, job.request_id) == (
        "a",
        JobState.RUNNING,
        Stage.TRANSCRIBE,
        "alice",
        "",
    )
    assert job.config.skip_alignment and job.uploaded and job.failure is None
    assert job.stage_fractions == {Stage.DETECT_SPEECH: 1.0, Stage.TRANSCRIBE: 0.25}
    failed = job_from_row(row(failure=json.dumps({"code": "INTERNAL", "message": "boom", "stage": int(Stage.ALIGN)})))
    assert failed.failure == JobFailure("INTERNAL", "boom", Stage.ALIGN)


def test_a_row_that_cannot_be_read_gives_a_failed_job_that_says_why() -> None:
    job = job_from_row(row(config=b"\xff\xff\xff\xff"))
    assert (job.job_id, job.state, job.source) == ("a", JobState.FAILED, "talk.wav")
    assert job.failure is not None and job.failure.code == "DATA_LOSS" and "cannot be read" in job.failure.message

"""gateway.jobs.uploads: a job's kept upload measured and deleted, and the
disk space an upload must leave free."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from common.errors import ResourceExhaustedError
from gateway.jobs.uploads import check_upload_space, discard_upload, upload_bytes
from gateway.records import JobRecord, JobState
from subtitler.gateway.v1 import gateway_pb2


def job_of(path: Path, *, uploaded: bool) -> JobRecord:
    now = time.time()
    return JobRecord(
        job_id="job-1",
        state=JobState.QUEUED,
        config=gateway_pb2.JobConfig(),
        source=path.name,
        created_s=now,
        updated_s=now,
        media_path=str(path),
        uploaded=uploaded,
    )


def test_an_upload_is_measured_and_deleted(tmp_path: Path) -> None:
    path = tmp_path / "talk.wav"
    path.write_bytes(b"x" * 1234)
    job = job_of(path, uploaded=True)
    assert upload_bytes(job) == 1234
    discard_upload(job)
    assert not path.exists()
    assert upload_bytes(job) == 0  # gone from this host
    discard_upload(job)  # twice is harmless


def test_a_file_on_the_server_is_never_an_upload(tmp_path: Path) -> None:
    path = tmp_path / "talk.wav"
    path.write_bytes(b"x" * 10)
    job = job_of(path, uploaded=False)
    assert upload_bytes(job) == 0
    discard_upload(job)
    assert path.exists()


def test_an_upload_must_leave_the_free_disk_kept(tmp_path: Path) -> None:
    check_upload_space(tmp_path, 1, min_free_disk_bytes=0)
    with pytest.raises(ResourceExhaustedError, match="not enough disk space"):
        check_upload_space(tmp_path, 1, min_free_disk_bytes=2**62)

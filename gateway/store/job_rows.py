"""A job record to and from its row in the `jobs` table: how every part of
the store reads a job, and how a job's state is written back."""

from __future__ import annotations

import json
from dataclasses import asdict

from google.protobuf.message import DecodeError

from gateway.records import JobFailure, JobRecord, JobState, Stage
from gateway.store.database import Database, Row
from subtitler.gateway.v1 import gateway_pb2

# The states of a job that is not finished: waiting for a gateway, or running on one.
UNFINISHED_STATES = (int(JobState.QUEUED), int(JobState.RUNNING))


def job_from_row(row: Row) -> JobRecord:
    """A job from its row; a row that cannot be read gives a FAILED job that
    says why (its stored state stays as it was until the job is saved)."""
    try:
        return _parse_job_row(row)
    except (DecodeError, ValueError, KeyError, TypeError) as error:
        return JobRecord(
            job_id=row["job_id"],
            state=JobState.FAILED,
            config=gateway_pb2.JobConfig(),
            source=str(row["source"]),
            created_s=float(row["created_s"] or 0),
            updated_s=float(row["updated_s"] or 0),
            failure=JobFailure("DATA_LOSS", f"the stored record of this job cannot be read ({error})", Stage.NONE),
        )


def _parse_job_row(row: Row) -> JobRecord:
    failure = json.loads(row["failure"]) if row["failure"] else None
    return JobRecord(
        job_id=row["job_id"],
        state=JobState(row["state"]),
        config=gateway_pb2.JobConfig.FromString(row["config"]),
        source=row["source"],
        media_path=row["media_path"],
        uploaded=bool(row["uploaded"]),
        created_s=row["created_s"],
        updated_s=row["updated_s"],
        stage=Stage(row["stage"]),
        stage_fractions={Stage(int(key)): value for key, value in json.loads(row["stage_fractions"]).items()},
        failure=JobFailure(failure["code"], failure["message"], Stage(failure["stage"])) if failure else None,
        audio_duration_s=row["audio_duration_s"],
        language_code=row["language_code"],
        language_probability=row["language_probability"],
        segment_count=row["segment_count"],
        processing_s=row["processing_s"],
        request_id=row["request_id"] or "",
        owner=row["owner"],
        priority=row["priority"],
        waiting_reason=row["waiting_reason"],
        finished_s=row["finished_s"],
    )


def update_job_row(db: Database, job: JobRecord) -> None:
    """Writes what changes as a job runs (its state, progress, failure and
    results' figures) to its row, in the caller's transaction."""
    db.execute(
        "UPDATE jobs SET state = ?, updated_s = ?, stage = ?, stage_fractions = ?, failure = ?,"
        " audio_duration_s = ?, language_code = ?, language_probability = ?, segment_count = ?,"
        " processing_s = ?, waiting_reason = ?, finished_s = ? WHERE job_id = ?",
        (
            int(job.state),
            job.updated_s,
            int(job.stage),
            json.dumps({int(stage): fraction for stage, fraction in job.stage_fractions.items()}),
            json.dumps(asdict(job.failure)) if job.failure else None,
            job.audio_duration_s,
            job.language_code,
            job.language_probability,
            job.segment_count,
            job.processing_s,
            job.waiting_reason,
            job.finished_s,
            job.job_id,
        ),
    )

"""What the job store's tests share: a new queued job to store."""

from __future__ import annotations

import time

from gateway.records import JobRecord, JobState
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

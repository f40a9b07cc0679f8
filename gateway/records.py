"""Domain types of the gateway: jobs, their states, stages and failures."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field, replace

from subtitler.gateway.v1 import gateway_pb2


class JobState(enum.IntEnum):
    """Where a job is in its life; values equal the proto enum's."""

    QUEUED = gateway_pb2.JOB_STATE_QUEUED
    RUNNING = gateway_pb2.JOB_STATE_RUNNING
    SUCCEEDED = gateway_pb2.JOB_STATE_SUCCEEDED
    FAILED = gateway_pb2.JOB_STATE_FAILED
    CANCELLED = gateway_pb2.JOB_STATE_CANCELLED

    @property
    def finished(self) -> bool:
        return self in (JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED)


class Stage(enum.IntEnum):
    """A stage of the pipeline; values equal the proto enum's."""

    NONE = gateway_pb2.STAGE_UNSPECIFIED
    DECODE = gateway_pb2.STAGE_DECODE
    DETECT_SPEECH = gateway_pb2.STAGE_DETECT_SPEECH
    TRANSCRIBE = gateway_pb2.STAGE_TRANSCRIBE
    ALIGN = gateway_pb2.STAGE_ALIGN
    DIARIZE = gateway_pb2.STAGE_DIARIZE


# Share of the overall progress each stage accounts for (sums to 1). Decoding
# and detection are fast next to transcription; alignment runs beside it.
STAGE_WEIGHTS: dict[Stage, float] = {
    Stage.DECODE: 0.05,
    Stage.DETECT_SPEECH: 0.10,
    Stage.TRANSCRIBE: 0.70,
    Stage.ALIGN: 0.15,
}
# A job that is diarized: the others' shares shrink to make room for it.
DIARIZE_WEIGHT = 0.10


@dataclass(frozen=True)
class JobFailure:
    """Why a job failed: a gRPC status code name and a message a user can act on."""

    code: str
    message: str
    stage: Stage = Stage.NONE


@dataclass
class JobRecord:
    """A job as stored."""

    job_id: str
    state: JobState
    config: gateway_pb2.JobConfig
    source: str
    created_s: float
    updated_s: float
    # Server-side path to decode, or the kept upload in the data directory.
    media_path: str = ""
    uploaded: bool = False
    stage: Stage = Stage.NONE
    progress: float = 0.0
    failure: JobFailure | None = None
    audio_duration_s: float = 0.0
    language_code: str = ""
    language_probability: float = 0.0
    segment_count: int = 0
    processing_s: float = 0.0
    stage_fractions: dict[Stage, float] = field(default_factory=dict)
    # Client-chosen id that made its creation idempotent ("" if none).
    request_id: str = ""
    # The client (named by its token) whose job it is; empty when the gateway has no tokens.
    owner: str = ""
    # Higher runs first.
    priority: int = 0
    # Why it waits for a stage service, while it does.
    waiting_reason: str = ""
    # When it finished (for retention), 0 while unfinished.
    finished_s: float = 0.0
    # Failed attempts of calls to stage services, oldest first.
    retries: list[gateway_pb2.RetryAttempt] = field(default_factory=list)

    def snapshot(self) -> JobRecord:
        """A copy that later changes to this record do not reach."""
        return replace(self, stage_fractions=dict(self.stage_fractions), retries=list(self.retries))

    def overall_progress(self) -> float:
        if self.state == JobState.SUCCEEDED:
            return 1.0
        diarized = self.config.diarization.enabled
        scale = 1.0 - DIARIZE_WEIGHT if diarized else 1.0

        def weight(stage: Stage) -> float:
            return DIARIZE_WEIGHT if stage == Stage.DIARIZE else STAGE_WEIGHTS.get(stage, 0.0) * scale

        return min(1.0, sum(weight(stage) * fraction for stage, fraction in self.stage_fractions.items()))

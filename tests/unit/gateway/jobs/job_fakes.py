"""A job in a real SQLite store, fake stage stubs, and a job's run built
from them: what the unit tests of gateway/jobs share."""

from __future__ import annotations

import time
from typing import Any

import grpc

from gateway.config import RetryPolicy
from gateway.jobs.events import EventHub
from gateway.jobs.run.audio_lease import AudioLease
from gateway.jobs.run.job_run import JobRun
from gateway.jobs.run.progress import ProgressReporter
from gateway.jobs.run.run_state import RunState
from gateway.jobs.run.stage_calls import StageCaller
from gateway.records import JobRecord, JobState, Stage
from gateway.store.async_store import AsyncJobStore
from gateway.store.job_store import JobStore
from subtitler.audio.v1 import audio_pb2
from subtitler.common.v1 import common_pb2
from subtitler.gateway.v1 import gateway_pb2

FAST = RetryPolicy(max_retries=2, initial_backoff_s=0.01, max_backoff_s=0.02, max_unavailable_wait_s=0.2)


def rpc_error(code: grpc.StatusCode, details: str = "", retry_after: str | None = None) -> grpc.aio.AioRpcError:
    trailing = grpc.aio.Metadata(("retry-after-s", retry_after)) if retry_after else grpc.aio.Metadata()
    return grpc.aio.AioRpcError(code, grpc.aio.Metadata(), trailing, details or code.name)


def new_job(store: JobStore, job_id: str = "job-1", **fields: Any) -> JobRecord:
    now = time.time()
    fields.setdefault("config", gateway_pb2.JobConfig())
    job = JobRecord(
        job_id=job_id,
        state=JobState.RUNNING,
        source="talk.wav",
        created_s=now,
        updated_s=now,
        media_path="talk.wav",
        **fields,
    )
    store.insert_job(job)
    return job


class FakeAudio:
    """An AudioService stub: audio ids it holds, calls it got."""

    def __init__(self) -> None:
        self.held: set[str] = set()
        self.decodes = 0
        self.released: list[str] = []

    async def DecodeFile(self, request: audio_pb2.DecodeFileRequest, **_: Any) -> audio_pb2.DecodeResponse:
        self.decodes += 1
        audio_id = f"audio-{self.decodes}"
        self.held.add(audio_id)
        handle = common_pb2.AudioHandle(audio_id=audio_id, sample_count=16_000, sample_rate_hertz=16_000)
        handle.duration.FromSeconds(1)
        return audio_pb2.DecodeResponse(audio=handle)

    async def RenewLease(self, request: audio_pb2.RenewLeaseRequest, **_: Any) -> audio_pb2.RenewLeaseResponse:
        if request.audio_id not in self.held:
            raise rpc_error(grpc.StatusCode.NOT_FOUND, "no such audio")
        return audio_pb2.RenewLeaseResponse()

    async def ReleaseAudio(self, request: audio_pb2.ReleaseAudioRequest, **_: Any) -> audio_pb2.ReleaseAudioResponse:
        self.held.discard(request.audio_id)
        self.released.append(request.audio_id)
        return audio_pb2.ReleaseAudioResponse()


async def decoded_run(store: JobStore, job: JobRecord, state: RunState | None = None) -> JobRun:
    """`job`'s run with its audio decoded (on a `FakeAudio`), as its stage units get it."""
    state = state if state is not None else RunState()
    facade = AsyncJobStore(store)
    events = EventHub(facade)
    progress = ProgressReporter(job, facade, events, state)
    calls = StageCaller(job, facade, events, FAST)
    audio = AudioLease(
        job,
        FakeAudio(),
        facade,
        calls,
        dict,
        lambda: progress.enter(Stage.DECODE),
        progress.decoded,  # type: ignore[arg-type]
    )
    await audio.decode()
    return JobRun(job, facade, events, progress, state, audio, calls, dict)


def published(store: JobStore, job: JobRecord, detail: str) -> list[Any]:
    """The `detail` of every event of `job` that holds one, in order."""
    return [getattr(event, detail) for event in store.events_after(job.job_id, 0) if event.HasField(detail)]


def stage_caller(store: JobStore, job: JobRecord, policy: RetryPolicy = FAST) -> StageCaller:
    """`job`'s stage caller on `store`, with its own event hub."""
    facade = AsyncJobStore(store)
    return StageCaller(job, facade, EventHub(facade), policy)

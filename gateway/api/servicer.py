"""The public gRPC API: converts requests to scheduler and store calls and
records to messages, nothing else."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import grpc

from common.errors import (
    CancelledError,
    FailedPreconditionError,
    InvalidInputError,
    NotFoundError,
    UnavailableError,
)
from common.rpc.convert import epoch_to_timestamp, seconds_to_duration, segments_to_proto
from common.rpc.uploads import check_file_name, ensure_upload_complete
from gateway.api.auth import Authenticator
from gateway.api.live_servicer import LiveCaptioner
from gateway.api.model_check import check_model_options
from gateway.api.profiles import apply_profile
from gateway.api.validation import (
    validate_job_config,
    validate_job_id,
    validate_path,
    validate_priority,
    validate_request_id,
)
from gateway.jobs.events import EventHub
from gateway.jobs.scheduler import JobScheduler
from gateway.output.speakers import render_rttm, turns_from_proto
from gateway.output.subtitle_config import subtitle_options
from gateway.output.subtitles import render
from gateway.records import JobRecord, JobState
from gateway.store.async_store import AsyncJobStore
from subtitler.asr.v1 import asr_pb2_grpc
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc

DEFAULT_PAGE_SIZE = 50
# Free disk space is checked again each time an upload grows by this much.
SPACE_CHECK_BYTES = 64 * 1024 * 1024
MAX_PAGE_SIZE = 1000
# Bytes of jobs one ListJobs reply carries at most (well under the 64 MiB message limit).
MAX_PAGE_BYTES = 4 * 1024 * 1024

_FORMAT_NAMES = {
    gateway_pb2.RESULT_FORMAT_UNSPECIFIED: "srt",
    gateway_pb2.RESULT_FORMAT_SRT: "srt",
    gateway_pb2.RESULT_FORMAT_VTT: "vtt",
    gateway_pb2.RESULT_FORMAT_JSON: "json",
    gateway_pb2.RESULT_FORMAT_TEXT: "text",
    gateway_pb2.RESULT_FORMAT_ASS: "ass",
    gateway_pb2.RESULT_FORMAT_RTTM: "rttm",
}


def job_to_proto(job: JobRecord, queue_position: int = 0) -> gateway_pb2.Job:
    message = gateway_pb2.Job(
        job_id=job.job_id,
        state=int(job.state),  # type: ignore[arg-type]
        config=job.config,
        source=job.source,
        create_time=epoch_to_timestamp(job.created_s),
        update_time=epoch_to_timestamp(job.updated_s),
        stage=int(job.stage),  # type: ignore[arg-type]
        progress=job.overall_progress(),
        language_code=job.language_code,
        language_probability=job.language_probability,
        segment_count=job.segment_count,
        queue_position=queue_position if job.state == JobState.QUEUED else 0,
        priority=job.priority,
        request_id=job.request_id,
        retries=job.retries,
        waiting_reason=job.waiting_reason,
    )
    if job.audio_duration_s:
        message.audio_duration.CopyFrom(seconds_to_duration(job.audio_duration_s))
    if job.state.finished:
        message.processing_duration.CopyFrom(seconds_to_duration(job.processing_s))
    if job.failure is not None:
        message.error.CopyFrom(
            gateway_pb2.JobError(code=job.failure.code, message=job.failure.message, stage=int(job.failure.stage))  # type: ignore[arg-type]
        )
    return message


class GatewayServicer(gateway_pb2_grpc.GatewayServiceServicer):
    def __init__(
        self,
        store: AsyncJobStore,
        events: EventHub,
        scheduler: JobScheduler,
        max_upload_bytes: int,
        auth: Authenticator | None = None,
        live: LiveCaptioner | None = None,
        asr: asr_pb2_grpc.AsrServiceStub | None = None,
    ) -> None:
        self._live = live
        self._asr = asr
        self._store = store
        self._events = events
        self._scheduler = scheduler
        self._max_upload_bytes = max_upload_bytes
        self._auth = auth or Authenticator(None)

    async def _check_model(self, config: gateway_pb2.JobConfig) -> None:
        if self._asr is not None:
            await check_model_options(self._asr, config.transcription)

    async def _own_job(self, job_id: str, context: grpc.aio.ServicerContext) -> JobRecord:
        """The caller's job; another client's is NOT_FOUND, as an unknown one;
        an id the gateway never makes is INVALID_ARGUMENT."""
        caller = self._auth.caller(context)
        validate_job_id(job_id)
        job = await self._store.get_job(job_id)
        if caller is not None and job.owner != caller:
            raise NotFoundError(f"no job {job_id!r}")
        return job

    async def CreateJob(
        self, request: gateway_pb2.CreateJobRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.Job:
        caller = self._auth.caller(context)
        if not request.path.strip():
            raise InvalidInputError("path is empty: give the path of a media file on the audio service's host")
        validate_path(request.path)
        validate_job_config(request.config)
        validate_request_id(request.request_id)
        validate_priority(request.priority)
        config = apply_profile(request.config)
        await self._check_model(config)
        job = self._scheduler.new_job(
            config,
            request.path,
            request.path,
            uploaded=False,
            request_id=request.request_id,
            priority=request.priority,
            owner=caller or "",
        )
        return self._to_proto(await self._scheduler.submit(job))

    async def UploadMedia(
        self, request_iterator: AsyncIterator[gateway_pb2.UploadMediaRequest], context: grpc.aio.ServicerContext
    ) -> gateway_pb2.Job:
        caller = self._auth.caller(context)
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("metadata"):
            raise InvalidInputError("the first message of an upload must carry its metadata (file name and config)")
        metadata = first.metadata
        check_file_name(metadata.file_name)
        validate_job_config(metadata.config)
        validate_request_id(metadata.request_id)
        validate_priority(metadata.priority)
        await self._check_model(apply_profile(metadata.config))  # before a byte is stored
        existing = await self._scheduler.existing(metadata.request_id, caller or "")
        if existing is not None:
            # A repeated upload: read to its end, store nothing.
            async for _ in request_iterator:
                pass
            return self._to_proto(existing)
        if metadata.size_bytes > self._max_upload_bytes:
            raise InvalidInputError(self._too_large(metadata.size_bytes))
        await self._scheduler.check_queue_space(metadata.priority)
        self._scheduler.check_upload_space(metadata.size_bytes)
        name = Path(metadata.file_name).name or "upload"
        part = self._scheduler.uploads_dir / f"{uuid.uuid4().hex}.part"
        try:
            received = 0
            media = await asyncio.to_thread(open, part, "wb")
            try:
                final_size: int | None = None
                async for message in request_iterator:
                    if final_size is not None:
                        raise InvalidInputError("final_size_bytes must be the upload's last message")
                    if message.HasField("final_size_bytes"):
                        final_size = message.final_size_bytes
                        continue
                    if not message.HasField("chunk"):
                        raise InvalidInputError("only the first message of an upload may carry metadata")
                    received += len(message.chunk)
                    if received > self._max_upload_bytes:
                        raise InvalidInputError(self._too_large(received))
                    if received // SPACE_CHECK_BYTES != (received - len(message.chunk)) // SPACE_CHECK_BYTES:
                        self._scheduler.check_upload_space(0)
                    await asyncio.to_thread(media.write, message.chunk)
            finally:
                media.close()
            if metadata.size_at_end and final_size is None:
                raise CancelledError(f"the upload of {name!r} was cut off after {received} bytes")
            ensure_upload_complete(context, metadata.size_bytes or (final_size or 0), received, name)
            if received == 0:
                raise InvalidInputError(f"the upload of {name!r} carried no bytes")
            job = self._scheduler.new_job(
                apply_profile(metadata.config),
                f"upload:{name}",
                "",
                uploaded=True,
                request_id=metadata.request_id,
                priority=metadata.priority,
                owner=caller or "",
            )
            kept = self._scheduler.uploads_dir / f"{job.job_id}{Path(name).suffix[:16]}"
            part.replace(kept)
            job.media_path = str(kept)
        finally:
            # Cut off, refused or failed: nothing is left behind.
            with contextlib.suppress(FileNotFoundError):
                part.unlink()
        submission = asyncio.ensure_future(self._scheduler.submit(job))
        try:
            return self._to_proto(await asyncio.shield(submission))
        except asyncio.CancelledError:
            # Cut off while the job was being created: the client never learns
            # of it, so it must not exist.
            self._scheduler.withdraw_later(job.job_id, submission)
            raise
        except Exception:
            # Refused (the queue filled up meanwhile) or failed: no job keeps the file.
            Path(job.media_path).unlink(missing_ok=True)  # noqa: ASYNC240 - one unlink
            raise

    def _to_proto(self, job: JobRecord) -> gateway_pb2.Job:
        return job_to_proto(job, self._scheduler.queue_position(job.job_id))

    def _too_large(self, size_bytes: int) -> str:
        return f"upload of {size_bytes} bytes is over the limit of {self._max_upload_bytes} bytes"

    async def WatchJob(
        self, request: gateway_pb2.WatchJobRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[gateway_pb2.JobEvent]:
        await self._own_job(request.job_id, context)  # NOT_FOUND before streaming
        if request.after_sequence < 0:
            raise InvalidInputError("after_sequence must not be negative")
        async for event in self._events.watch(request.job_id, request.after_sequence):
            yield event

    async def StreamingTranscribe(
        self,
        request_iterator: AsyncIterator[gateway_pb2.StreamingTranscribeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[gateway_pb2.StreamingTranscribeResponse]:
        self._auth.caller(context)  # any client with a valid token may stream
        if self._live is None:
            raise UnavailableError("live captions are not served by this gateway")
        async for response in self._live.stream(request_iterator):
            yield response

    async def GetJob(self, request: gateway_pb2.GetJobRequest, context: grpc.aio.ServicerContext) -> gateway_pb2.Job:
        return self._to_proto(await self._own_job(request.job_id, context))

    async def ListJobs(
        self, request: gateway_pb2.ListJobsRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.ListJobsResponse:
        if request.page_size < 0:
            raise InvalidInputError("page_size must not be negative")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        before = _decode_page_token(request.page_token) if request.page_token else None
        if request.state and request.state not in gateway_pb2.JobState.values():
            raise InvalidInputError(f"unknown job state {request.state}")
        state = JobState(request.state) if request.state else None
        caller = self._auth.caller(context)
        jobs = await self._store.list_jobs(limit=size + 1, before=before, state=state, owner=caller)
        # A page also ends before it would pass MAX_PAGE_BYTES (jobs with long
        # retry lists are large): a reply never exceeds the message limit.
        page = fill_page([self._to_proto(job) for job in jobs[:size]], MAX_PAGE_BYTES)
        more = len(page) < len(jobs)
        token = _encode_page_token(jobs[len(page) - 1]) if more and page else ""
        return gateway_pb2.ListJobsResponse(jobs=page, next_page_token=token)

    async def CancelJob(
        self, request: gateway_pb2.CancelJobRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.Job:
        await self._own_job(request.job_id, context)
        return self._to_proto(await self._scheduler.cancel(request.job_id))

    async def GetResult(
        self, request: gateway_pb2.GetResultRequest, context: grpc.aio.ServicerContext
    ) -> gateway_pb2.GetResultResponse:
        job = await self._own_job(request.job_id, context)
        if job.state != JobState.SUCCEEDED:
            raise FailedPreconditionError(
                f"job {job.job_id} is {job.state.name.lower()}; its result exists once it has succeeded"
            )
        if request.format not in _FORMAT_NAMES:
            raise InvalidInputError(f"unknown result format {request.format}")
        rules = request.subtitles if request.HasField("subtitles") else job.config.subtitles
        options, highlight_words = subtitle_options(rules)
        segments = await self._store.result(job.job_id)
        if request.format == gateway_pb2.RESULT_FORMAT_RTTM:
            # The diarization's own turns, not the segments'.
            turns = await self._store.speaker_turns(job.job_id)
            if turns is None:
                raise FailedPreconditionError(
                    f"job {job.job_id} was not diarized: its RTTM exists for jobs made with diarization.enabled"
                )
            content, content_type = render_rttm(turns_from_proto(turns), job.job_id), "text/plain"
        else:
            # Rendering an hour of speech is about a second of CPU: off the event loop.
            content, content_type = await asyncio.to_thread(
                functools.partial(
                    render,
                    _FORMAT_NAMES[request.format],
                    segments,
                    job.language_code,
                    job.audio_duration_s,
                    options,
                    highlight_words=highlight_words,
                )
            )
        return gateway_pb2.GetResultResponse(
            content=content,
            content_type=content_type,
            segments=segments_to_proto(segments),
            language_code=job.language_code,
            audio_duration=seconds_to_duration(job.audio_duration_s),
        )


def fill_page(jobs: list[gateway_pb2.Job], max_bytes: int) -> list[gateway_pb2.Job]:
    """The first jobs that fit in `max_bytes` (at least one, whatever its size)."""
    page: list[gateway_pb2.Job] = []
    page_bytes = 0
    for job in jobs:
        if page and page_bytes + job.ByteSize() > max_bytes:
            break
        page.append(job)
        page_bytes += job.ByteSize()
    return page


def _encode_page_token(job: JobRecord) -> str:
    return base64.urlsafe_b64encode(f"{job.created_s!r}/{job.job_id}".encode()).decode()


def _decode_page_token(token: str) -> tuple[float, str]:
    try:
        created, job_id = base64.urlsafe_b64decode(token.encode()).decode().split("/", 1)
        validate_job_id(job_id)  # what the store is asked for (PostgreSQL's text takes no NUL)
        return float(created), job_id
    except (ValueError, UnicodeDecodeError, InvalidInputError):
        raise InvalidInputError("page_token is not one this service returned") from None

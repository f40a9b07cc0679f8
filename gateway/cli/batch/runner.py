"""Sends a batch's files to the gateway at once over one grpc.aio channel:
each file is uploaded (UploadMedia, or CreateJob for --server-path), its job
followed to its end (WatchJob), and its result fetched (GetResult) and
written as soon as it is done.

At most MAX_UPLOADS_IN_FLIGHT uploads run at a time; jobs run as many as the
gateway admits. A job the gateway refuses because it is full
(RESOURCE_EXHAUSTED with a retry-after-s hint) closes the AdmissionGate: no
new upload starts until the hint's time has passed or one of the batch's own
jobs has ended, which frees room in the gateway's queue. A file that fails
(it cannot be read, the gateway refuses it, its job fails) becomes a
FileOutcome with its status; the others go on.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from common.rpc.convert import duration_to_seconds
from common.rpc.retry_hint import is_busy, retry_after_s
from gateway.cli.arguments import FORMATS
from gateway.cli.batch.progress import BatchProgress
from gateway.cli.commands import write_output
from gateway.cli.connection import upload_requests
from gateway.cli.progress import MAX_WATCH_RECONNECTS
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc

# Uploads in flight at once. They share the channel's one connection, so
# more would not move the bytes faster; four keep it busy while each upload
# waits on its round trips (admission, storing the file, creating the job),
# keep a batch of 1000 files to four open streams and four files open for
# reading, and take four of the 64 calls the gateway serves at once
# (SUBTITLER_GATEWAY_MAX_CONCURRENT_RPCS) that other clients share.
MAX_UPLOADS_IN_FLIGHT = 4
# A batch refused for this long with none of its jobs admitted or ended
# (another client holds the gateway's queue) fails the files still waiting.
MAX_REFUSED_WAIT_S = 600.0
# Wait after a refusal that gave no hint (gRPC's own concurrent-call limit).
DEFAULT_RETRY_AFTER_S = 1.0
# Times an upload is tried again when the gateway is unavailable (restarting);
# safe, as every upload carries a request id: a repeat creates no second job.
MAX_UNAVAILABLE_RETRIES = 3
# Deadline of the unary calls after a job ended (GetJob, GetResult).
CALL_TIMEOUT_S = 60.0
# Longest wait between reconnections of a broken watch.
MAX_RECONNECT_WAIT_S = 5.0


@dataclass(frozen=True)
class BatchSettings:
    """What every file's job shares."""

    config: gateway_pb2.JobConfig
    # A key of gateway.cli.arguments.FORMATS.
    result_format: str
    output_dir: Path
    # The files are paths on the audio service's host (CreateJob), not uploads.
    server_paths: bool = False
    # Each file's request id is this, '/', and a hash of its path; empty: a random id.
    request_id: str = ""
    priority: int = 0
    # Sent with every call (the bearer token).
    call_metadata: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class FileOutcome:
    """How one file ended."""

    source: str
    # The output written; None when the file failed.
    output: Path | None
    # "OK", or the gRPC status name of the failure.
    status: str
    message: str = ""

    @property
    def succeeded(self) -> bool:
        return self.output is not None


class LocalFileError(Exception):
    """A file of the batch that cannot be read here; `status` is the gRPC status name it is reported with."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


class AdmissionGate:
    """Holds the batch's next uploads back while the gateway refuses jobs,
    until the refusal's retry hint has passed or one of the batch's own jobs
    ends, whichever comes first. Uploads waiting here keep their upload slot:
    while the gate is closed none could start anyway."""

    def __init__(self, now: Callable[[], float] = time.monotonic) -> None:
        self._now = now
        self._open = asyncio.Event()
        self._open.set()
        self._reopening: asyncio.TimerHandle | None = None
        self._progress_at_s = now()

    async def wait_open(self) -> None:
        await self._open.wait()

    def refused(self, retry_after_s: float) -> None:
        """The gateway refused a job and said to retry after `retry_after_s`."""
        self._open.clear()
        if self._reopening is not None:
            self._reopening.cancel()
        self._reopening = asyncio.get_running_loop().call_later(retry_after_s, self._open.set)

    def admitted(self) -> None:
        """A job of the batch was admitted: the batch moves."""
        self._progress_at_s = self._now()

    def job_ended(self) -> None:
        """A job of the batch ended: room in the gateway's queue, so the gate opens."""
        self._progress_at_s = self._now()
        if self._reopening is not None:
            self._reopening.cancel()
            self._reopening = None
        self._open.set()

    def stalled_s(self) -> float:
        """Time since a job of the batch was last admitted or ended."""
        return self._now() - self._progress_at_s


def file_request_id(prefix: str, source: str) -> str:
    """A file's request id: stable for one path under a given --request-id
    (a rerun of the same batch gets its jobs back), random without one."""
    if not prefix:
        return uuid.uuid4().hex
    return f"{prefix}/{hashlib.sha256(source.encode()).hexdigest()[:16]}"


class FileUpload:
    """The messages of one file's upload. A read error ends them early and
    is kept in `read_error`: the gateway refuses the short upload, where
    grpc.aio would cancel the call (and with it the batch) for an error
    raised from the messages."""

    def __init__(self, messages: Iterator[gateway_pb2.UploadMediaRequest]) -> None:
        self._messages = messages
        self.read_error: OSError | None = None

    def __iter__(self) -> Iterator[gateway_pb2.UploadMediaRequest]:
        try:
            yield from self._messages
        except OSError as error:
            self.read_error = error


def local_status(error: OSError) -> str:
    """The gRPC status name a local file's error is reported with."""
    if isinstance(error, FileNotFoundError):
        return "NOT_FOUND"
    if isinstance(error, PermissionError):
        return "PERMISSION_DENIED"
    return "UNKNOWN"


def check_readable(path: Path) -> None:
    """Raises LocalFileError for a file that cannot be uploaded, before a call starts."""
    if not path.exists():
        raise LocalFileError("NOT_FOUND", "no such file")
    if not path.is_file():
        raise LocalFileError("INVALID_ARGUMENT", "not a regular file")
    if not os.access(path, os.R_OK):
        raise LocalFileError("PERMISSION_DENIED", "cannot read the file")


class BatchRunner:
    """Transcribes `files` into `settings.output_dir` / `names`, reporting to `progress`."""

    def __init__(
        self,
        stub: gateway_pb2_grpc.GatewayServiceStub,
        settings: BatchSettings,
        files: Sequence[Path],
        names: Sequence[Path],
        progress: BatchProgress,
    ) -> None:
        self._stub = stub
        self._settings = settings
        self._files = files
        self._names = names
        self._progress = progress
        self._request_ids = [
            file_request_id(settings.request_id, str(file if settings.server_paths else file.resolve()))
            for file in files
        ]
        self._upload_slots = asyncio.Semaphore(MAX_UPLOADS_IN_FLIGHT)
        self._gate = AdmissionGate()

    async def run(self) -> list[FileOutcome]:
        """Every file's outcome, in the files' order."""
        redrawing = asyncio.create_task(self._redraw_every_second())
        try:
            return await asyncio.gather(*(self._transcribe(index) for index in range(len(self._files))))
        finally:
            redrawing.cancel()

    async def _redraw_every_second(self) -> None:
        """Keeps the clock moving while no event comes (every job queued)."""
        while True:
            await asyncio.sleep(1.0)
            self._progress.redraw()

    async def _transcribe(self, index: int) -> FileOutcome:
        try:
            job = await self._admitted_job(index)
            self._gate.admitted()
            self._progress.gateway_full = False
            job = await self._followed(index, job.job_id)
            return await self._written(index, job)
        except grpc.aio.AioRpcError as error:
            return self._failed(index, error.code().name, error.details() or "")
        except LocalFileError as error:
            return self._failed(index, error.status, str(error))
        except OSError as error:  # writing the output
            return self._failed(index, local_status(error), str(error))

    async def _admitted_job(self, index: int) -> gateway_pb2.Job:
        """The file's job, once the gateway admits it; refusals of a full
        gateway and a gateway restarting are waited out (see the module)."""
        async with self._upload_slots:
            unavailable_retries = 0
            while True:
                await self._gate.wait_open()
                try:
                    return await self._create_job(index)
                except grpc.aio.AioRpcError as error:
                    code = error.code()
                    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and is_busy(error):
                        if self._gate.stalled_s() > MAX_REFUSED_WAIT_S:
                            raise
                        self._gate.refused(retry_after_s(error) or DEFAULT_RETRY_AFTER_S)
                        self._progress.gateway_full = True
                    elif code == grpc.StatusCode.UNAVAILABLE and unavailable_retries < MAX_UNAVAILABLE_RETRIES:
                        unavailable_retries += 1
                        await asyncio.sleep(min(MAX_RECONNECT_WAIT_S, 0.5 * 2**unavailable_retries))
                    else:
                        raise

    async def _create_job(self, index: int) -> gateway_pb2.Job:
        settings, source = self._settings, self._files[index]
        request_id = self._request_ids[index]
        if settings.server_paths:
            request = gateway_pb2.CreateJobRequest(
                path=str(source), config=settings.config, request_id=request_id, priority=settings.priority
            )
            return await self._stub.CreateJob(request, metadata=settings.call_metadata)
        check_readable(source)
        upload = FileUpload(upload_requests(source, settings.config, request_id, settings.priority))
        try:
            return await self._stub.UploadMedia(iter(upload), metadata=settings.call_metadata)
        except grpc.aio.AioRpcError:
            if upload.read_error is not None:
                raise LocalFileError(local_status(upload.read_error), str(upload.read_error)) from None
            raise

    async def _followed(self, index: int, job_id: str) -> gateway_pb2.Job:
        """The job once it has ended, its events fed to the progress display.
        A broken stream is picked up after the last event seen; a watch the
        gateway refuses (too many watchers) is tried again after its hint."""
        last_sequence = 0
        reconnects = 0
        while True:
            request = gateway_pb2.WatchJobRequest(job_id=job_id, after_sequence=last_sequence)
            try:
                async for event in self._stub.WatchJob(request, metadata=self._settings.call_metadata):
                    last_sequence = event.sequence
                    reconnects = 0
                    self._progress.update(index, event)
                break
            except grpc.aio.AioRpcError as error:
                delay_s = _watch_retry_delay_s(error, reconnects)
                if delay_s is None:
                    raise
                reconnects += 1
                await asyncio.sleep(delay_s)
        self._gate.job_ended()
        return await self._stub.GetJob(
            gateway_pb2.GetJobRequest(job_id=job_id),
            metadata=self._settings.call_metadata,
            timeout=CALL_TIMEOUT_S,
            wait_for_ready=True,
        )

    async def _written(self, index: int, job: gateway_pb2.Job) -> FileOutcome:
        """Writes a succeeded job's result to the file's output."""
        if job.state != gateway_pb2.JOB_STATE_SUCCEEDED:
            state = gateway_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_")
            return self._failed(
                index, job.error.code or state, job.error.message or f"job {job.job_id} {state.lower()}"
            )
        request = gateway_pb2.GetResultRequest(job_id=job.job_id, format=FORMATS[self._settings.result_format])
        result = await self._stub.GetResult(
            request, metadata=self._settings.call_metadata, timeout=CALL_TIMEOUT_S, wait_for_ready=True
        )
        output = self._settings.output_dir / self._names[index]
        output.parent.mkdir(parents=True, exist_ok=True)
        write_output(result.content, str(output))
        audio_s = duration_to_seconds(job.audio_duration)
        took_s = duration_to_seconds(job.processing_duration)
        self._progress.finished(
            index,
            audio_s,
            f"wrote {output}: {len(result.segments)} segments, {audio_s:.1f} s of audio"
            f" ({result.language_code or 'unknown language'}) in {took_s:.1f} s",
        )
        return FileOutcome(str(self._files[index]), output, "OK")

    def _failed(self, index: int, status: str, message: str) -> FileOutcome:
        source = str(self._files[index])
        self._progress.failed(index, f"failed {source}: {status}: {message}")
        return FileOutcome(source, None, status, message)


def _watch_retry_delay_s(error: grpc.aio.AioRpcError, reconnects: int) -> float | None:
    """How long to wait before watching again after `error`; None: give up."""
    if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and is_busy(error):
        return retry_after_s(error) or DEFAULT_RETRY_AFTER_S
    if error.code() == grpc.StatusCode.UNAVAILABLE and reconnects < MAX_WATCH_RECONNECTS:
        return min(MAX_RECONNECT_WAIT_S, 0.5 * 2 ** (reconnects + 1))
    return None

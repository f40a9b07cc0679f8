"""The HTTP front: OpenAI's transcription API on top of the gateway's gRPC.

`POST /v1/audio/transcriptions` and `/v1/audio/translations` take OpenAI's
multipart form (`file`, `model`, `language`, `prompt`, `response_format`:
json, text, srt, verbose_json or vtt, `temperature`,
`timestamp_granularities[]`: word and segment; `stream=true` for
server-sent `transcript.text.delta` events as segments are transcribed, then
`transcript.text.done`) and answer as OpenAI does;
`GET /v1/models` lists the models. The file is streamed to the gateway's
UploadMedia as it arrives (never held whole in memory), the job is followed
to its end, and its result is rendered by the gateway. OpenAI's model name
"whisper-1" means the suite's default model.

gRPC errors become HTTP errors with the gateway's message, in OpenAI's error
shape: INVALID_ARGUMENT 400, UNAUTHENTICATED 401, PERMISSION_DENIED 403,
NOT_FOUND 404, FAILED_PRECONDITION 409, RESOURCE_EXHAUSTED 429 with
Retry-After (413 for an upload over the size limit), UNAVAILABLE 503.
A client's `Authorization: Bearer` header is passed on to the gateway.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
from aiohttp import BodyPartReader, web
from aiohttp.http_exceptions import HttpProcessingError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from common.rpc import metrics
from common.rpc.convert import duration_to_seconds
from services.http.errors import HTTP_STATUS, ApiError, auth_metadata, error_response, from_grpc
from services.http.jobs_api import JobsApi, field_text, file_name_of, form_parts
from services.http.live_api import LiveApi
from services.http.openapi import openapi_document
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from subtitler.status.v1 import status_pb2, status_pb2_grpc

logger = logging.getLogger(__name__)

OPENAI_DEFAULT_MODELS = frozenset({"whisper-1", "default", ""})
RESPONSE_FORMATS = {
    "json": gateway_pb2.RESULT_FORMAT_JSON,
    "verbose_json": gateway_pb2.RESULT_FORMAT_JSON,
    "text": gateway_pb2.RESULT_FORMAT_TEXT,
    "srt": gateway_pb2.RESULT_FORMAT_SRT,
    "vtt": gateway_pb2.RESULT_FORMAT_VTT,
}
CONTENT_TYPES = {"text": "text/plain", "srt": "application/x-subrip", "vtt": "text/vtt"}
UPLOAD_PIECE_BYTES = 1024 * 1024
STATIC_DIR = Path(__file__).parent / "static"
EMBEDDED_MODELS = ("embedded:tiny.en", "embedded:base")
FINISHED = (gateway_pb2.JOB_STATE_SUCCEEDED, gateway_pb2.JOB_STATE_FAILED, gateway_pb2.JOB_STATE_CANCELLED)


@web.middleware
async def _measured(request: web.Request, handler: Any) -> web.StreamResponse:
    """Counts every request by route (its pattern, not its path: no job id in a label) and status."""
    resource = request.match_info.route.resource
    route = resource.canonical if resource is not None else "unmatched"
    started = time.perf_counter()
    status = 500
    try:
        response: web.StreamResponse = await handler(request)
        status = response.status
        return response
    except web.HTTPException as error:
        status = error.status
        raise
    finally:
        metrics.HTTP_REQUESTS.labels(route, request.method, str(status)).inc()
        metrics.HTTP_SECONDS.labels(route).observe(time.perf_counter() - started)


@web.middleware
async def _errors(request: web.Request, handler: Any) -> web.StreamResponse:
    try:
        response: web.StreamResponse = await handler(request)
        return response
    except ApiError as error:
        return error_response(error)
    except grpc.aio.AioRpcError as error:
        return error_response(from_grpc(error))
    except web.HTTPException as error:
        return error_response(ApiError(error.status, error.reason or "error"))
    except HttpProcessingError as error:
        # A body aiohttp cannot parse as it reads it (e.g. a form part's header with a control character).
        status = error.code if 400 <= error.code < 500 else 400
        return error_response(ApiError(status, f"the request cannot be read: {error.message}"))
    except Exception:
        logger.exception("request failed")
        return error_response(ApiError(500, "internal error"))


class HttpFront:
    def __init__(self, gateway_target: str, *, max_upload_bytes: int, job_timeout_s: float) -> None:
        self._channel = grpc.aio.insecure_channel(gateway_target)
        self._gateway = gateway_pb2_grpc.GatewayServiceStub(self._channel)
        self._status = status_pb2_grpc.StatusServiceStub(self._channel)
        self._max_upload_bytes = max_upload_bytes
        self._job_timeout_s = job_timeout_s

    def app(self) -> web.Application:
        # (aiohttp's own body bound, above ours: the form's other fields fit under it.)
        app = web.Application(middlewares=[_measured, _errors], client_max_size=self._max_upload_bytes + 1024 * 1024)
        app.router.add_post("/v1/audio/transcriptions", self.transcriptions)
        app.router.add_post("/v1/audio/translations", self.translations)
        app.router.add_get("/v1/models", self.models)
        app.router.add_get("/healthz", self.health)
        app.router.add_get("/openapi.json", self.openapi)
        app.router.add_get("/metrics", self.prometheus_metrics)
        app.router.add_get("/", self.page)
        app.router.add_get("/live", self.live_page)
        JobsApi(self._gateway, self.upload).add_routes(app)
        LiveApi(self._gateway).add_routes(app)
        app.on_cleanup.append(self._close)
        return app

    async def _close(self, app: web.Application) -> None:
        await self._channel.close()

    async def page(self, request: web.Request) -> web.FileResponse:
        """The web page: upload a file, watch it transcribed, play it with its subtitles."""
        return web.FileResponse(STATIC_DIR / "index.html", headers={"Cache-Control": "no-cache"})

    async def live_page(self, request: web.Request) -> web.FileResponse:
        """The live page: captions the browser's microphone (over /v1/live)."""
        return web.FileResponse(STATIC_DIR / "live.html", headers={"Cache-Control": "no-cache"})

    async def prometheus_metrics(self, request: web.Request) -> web.Response:
        """Prometheus metrics of this process (common.rpc.metrics)."""
        return web.Response(body=generate_latest(), headers={"Content-Type": CONTENT_TYPE_LATEST})

    async def openapi(self, request: web.Request) -> web.Response:
        return web.json_response(openapi_document())

    async def health(self, request: web.Request) -> web.Response:
        return web.json_response({"status": "ok"})

    async def models(self, request: web.Request) -> web.Response:
        reply = await self._status.GetStatus(
            status_pb2.GetStatusRequest(include_peers=True), metadata=auth_metadata(request), timeout=10
        )
        loaded = [name for peer in reply.peers if "asr" in peer.service_name.lower() for name in peer.loaded_models]
        names = list(dict.fromkeys(["whisper-1", *loaded, *EMBEDDED_MODELS]))
        return web.json_response(
            {"object": "list", "data": [{"id": name, "object": "model", "owned_by": "subtitler"} for name in names]}
        )

    async def upload(
        self, request: web.Request, part: BodyPartReader, metadata: gateway_pb2.UploadMetadata
    ) -> gateway_pb2.Job:
        """Streams a form's file part to the gateway's UploadMedia as it
        arrives (never held whole); past SUBTITLER_HTTP_MAX_UPLOAD_BYTES the
        upload is cut off (no job is made) and the answer is 413."""
        too_large: list[int] = []
        try:
            job: gateway_pb2.Job = await self._gateway.UploadMedia(
                _upload_requests(part, metadata, self._max_upload_bytes, too_large),
                metadata=auth_metadata(request),
                timeout=self._job_timeout_s,
            )
        except (grpc.aio.AioRpcError, asyncio.CancelledError):
            # Cut off here (the request iterator raised, which cancels the call: grpc
            # raises CancelledError, though this task was not cancelled): no job was made.
            task = asyncio.current_task()
            if not too_large or (task is not None and task.cancelling()):
                raise
            # Read the rest (thrown away), so the client gets the answer, not a reset.
            while await part.read_chunk(UPLOAD_PIECE_BYTES):
                pass
            raise ApiError(
                413,
                f"the file is over {self._max_upload_bytes} bytes, the most this front takes "
                "(SUBTITLER_HTTP_MAX_UPLOAD_BYTES)",
            ) from None
        return job

    async def transcriptions(self, request: web.Request) -> web.StreamResponse:
        return await self._transcribe(request, translate=False)

    async def translations(self, request: web.Request) -> web.StreamResponse:
        return await self._transcribe(request, translate=True)

    async def _transcribe(self, request: web.Request, *, translate: bool) -> web.StreamResponse:
        if not request.content_type.startswith("multipart/"):
            raise ApiError(400, "send a multipart/form-data body with the audio in its 'file' field")
        fields: dict[str, list[str]] = {}
        job: gateway_pb2.Job | None = None
        async for name, part in form_parts(request):
            if name == "file":
                # Fields after the file are not seen before the upload (OpenAI's clients send it last);
                # those before are checked first, so a bad request makes no job.
                _check_fields(fields)
                metadata = gateway_pb2.UploadMetadata(
                    file_name=file_name_of(part), config=_job_config(fields, translate)
                )
                job = await self.upload(request, part, metadata)
            else:
                fields.setdefault(name.removesuffix("[]"), []).append(await field_text(part))
        if job is None:
            raise ApiError(400, "the form has no 'file' field: attach the audio or video to transcribe")
        try:
            _check_fields(fields)
        except ApiError:
            await self._gateway.CancelJob(
                gateway_pb2.CancelJobRequest(job_id=job.job_id), metadata=auth_metadata(request)
            )
            raise
        response_format = _one(fields, "response_format") or "json"
        if _streamed(fields):
            return await self._stream(job.job_id, request)
        finished = await self._wait(job.job_id, request)
        if finished.state != gateway_pb2.JOB_STATE_SUCCEEDED:
            message = finished.error.message or gateway_pb2.JobState.Name(finished.state)
            status = HTTP_STATUS.get(getattr(grpc.StatusCode, finished.error.code, grpc.StatusCode.UNKNOWN), 500)
            raise ApiError(status, message, finished.error.code.lower())
        result = await self._gateway.GetResult(
            gateway_pb2.GetResultRequest(job_id=job.job_id, format=RESPONSE_FORMATS[response_format]),
            metadata=auth_metadata(request),
            timeout=60,
        )
        if response_format in CONTENT_TYPES:
            return web.Response(text=result.content, content_type=CONTENT_TYPES[response_format])
        document = json.loads(result.content)
        if response_format == "json":
            return web.json_response({"text": document["text"]})
        granularities = set(fields.get("timestamp_granularities", [])) or {"segment"}
        return web.json_response(_verbose(document, translate, granularities, finished))

    async def _stream(self, job_id: str, request: web.Request) -> web.StreamResponse:
        """OpenAI's streamed transcription: server-sent events, a
        `transcript.text.delta` for each segment as the job transcribes it,
        then `transcript.text.done` with the whole text (or an `error`)."""
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            await response.write(f"data: {json.dumps(event, ensure_ascii=False)}\n\n".encode())

        try:
            async for event in self._gateway.WatchJob(
                gateway_pb2.WatchJobRequest(job_id=job_id), metadata=auth_metadata(request)
            ):
                if event.HasField("segment") and event.segment.text.strip():
                    await send({"type": "transcript.text.delta", "delta": event.segment.text.strip() + " "})
            job = await self._gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job_id), metadata=auth_metadata(request))
            if job.state == gateway_pb2.JOB_STATE_SUCCEEDED:
                result = await self._gateway.GetResult(
                    gateway_pb2.GetResultRequest(job_id=job_id, format=gateway_pb2.RESULT_FORMAT_TEXT),
                    metadata=auth_metadata(request),
                )
                await send({"type": "transcript.text.done", "text": " ".join(result.content.split())})
            else:
                await send({"type": "error", "error": {"message": job.error.message, "code": job.error.code.lower()}})
        except asyncio.CancelledError:
            await self._gateway.CancelJob(gateway_pb2.CancelJobRequest(job_id=job_id), metadata=auth_metadata(request))
            raise
        except grpc.aio.AioRpcError as error:
            await send({"type": "error", "error": {"message": error.details(), "code": error.code().name.lower()}})
        await response.write_eof()
        return response

    async def _wait(self, job_id: str, request: web.Request) -> gateway_pb2.Job:
        async def follow() -> None:
            async for _ in self._gateway.WatchJob(
                gateway_pb2.WatchJobRequest(job_id=job_id), metadata=auth_metadata(request)
            ):
                pass

        try:
            await asyncio.wait_for(follow(), self._job_timeout_s)
        except TimeoutError:
            raise ApiError(504, f"job {job_id} did not finish in {self._job_timeout_s:g} s") from None
        except asyncio.CancelledError:
            # The client went away: its job is not wanted any more.
            await self._gateway.CancelJob(gateway_pb2.CancelJobRequest(job_id=job_id), metadata=auth_metadata(request))
            raise
        job: gateway_pb2.Job = await self._gateway.GetJob(
            gateway_pb2.GetJobRequest(job_id=job_id), metadata=auth_metadata(request), timeout=30
        )
        return job


def _check_fields(fields: dict[str, list[str]]) -> None:
    response_format = _one(fields, "response_format") or "json"
    if response_format not in RESPONSE_FORMATS:
        raise ApiError(400, f"response_format {response_format!r}: use one of {', '.join(RESPONSE_FORMATS)}")
    if _streamed(fields) and response_format not in ("json", "text"):
        raise ApiError(400, f"stream=true gives text events: use response_format json or text, not {response_format}")
    for granularity in fields.get("timestamp_granularities", []):
        if granularity not in ("word", "segment"):
            raise ApiError(400, f"timestamp_granularities {granularity!r}: use word or segment")


def _streamed(fields: dict[str, list[str]]) -> bool:
    return _one(fields, "stream").lower() in ("true", "1")


def _one(fields: dict[str, list[str]], name: str) -> str:
    values = fields.get(name) or [""]
    return values[-1].strip()


def _job_config(fields: dict[str, list[str]], translate: bool) -> gateway_pb2.JobConfig:
    model = _one(fields, "model")
    temperature_text = _one(fields, "temperature")
    try:
        temperature = float(temperature_text) if temperature_text else 0.0
    except ValueError:
        raise ApiError(400, f"temperature {temperature_text!r} is not a number") from None
    transcription = asr_pb2.TranscriptionOptions(
        model="" if model in OPENAI_DEFAULT_MODELS else model,
        language_code=_one(fields, "language"),
        initial_prompt=_one(fields, "prompt"),
        temperature=temperature,
        task=asr_pb2.TASK_TRANSLATE if translate else asr_pb2.TASK_TRANSCRIBE,
    )
    return gateway_pb2.JobConfig(transcription=transcription)


async def _upload_requests(
    part: Any, metadata: gateway_pb2.UploadMetadata, max_bytes: int, too_large: list[int]
) -> AsyncIterator[Any]:
    """The upload's messages; past `max_bytes` it notes the size in
    `too_large` and raises, which cancels the call (a cut-off upload makes
    no job)."""
    # The size is said at the end: a stream cut off midway never passes for a whole file.
    metadata.size_at_end = True
    yield gateway_pb2.UploadMediaRequest(metadata=metadata)
    received = 0
    while piece := await part.read_chunk(UPLOAD_PIECE_BYTES):
        received += len(piece)
        if received > max_bytes:
            too_large.append(received)
            raise ValueError(f"upload over {max_bytes} bytes")
        yield gateway_pb2.UploadMediaRequest(chunk=piece)
    yield gateway_pb2.UploadMediaRequest(final_size_bytes=received)


def _verbose(
    document: dict[str, Any], translate: bool, granularities: set[str], job: gateway_pb2.Job
) -> dict[str, Any]:
    """OpenAI's verbose_json from the suite's JSON result."""
    body: dict[str, Any] = {
        "task": "translate" if translate else "transcribe",
        "language": document.get("language_code", ""),
        "duration": round(duration_to_seconds(job.audio_duration), 3),
        "text": document["text"],
    }
    if "segment" in granularities:
        body["segments"] = [
            {
                "id": position,
                "seek": 0,
                "start": segment["start_s"],
                "end": segment["end_s"],
                "text": segment["text"],
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": 0.0,
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for position, segment in enumerate(document["segments"])
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": word["text"], "start": word["start_s"], "end": word["end_s"]}
            for segment in document["segments"]
            for word in segment["words"]
        ]
    return body

"""The HTTP front's REST API for jobs: the gateway's job RPCs over HTTP.

- `POST /v1/jobs`: a multipart form with the media in `file` (streamed to
  UploadMedia) and, optionally, `config` (a JobConfig in proto3 JSON),
  `request_id` and `priority`; or a JSON body `{"path": ..., "config": ...,
  "request_id": ..., "priority": ...}` for media already on the audio
  service's host (CreateJob). 201 with the job and its Location.
- `GET /v1/jobs` (`page_size`, `page_token`, `state`), `GET /v1/jobs/{id}`,
  `POST /v1/jobs/{id}/cancel`.
- `GET /v1/jobs/{id}/result?format=srt|vtt|json|text|ass` (and `preset`,
  `max_line_chars`, ... as SubtitleOptions' fields) renders the result.
- `GET /v1/jobs/{id}/events`: the job's events as server-sent events, each
  with its sequence as `id` (a reconnecting EventSource resumes after
  `Last-Event-ID`) and as `event` `state` for a state change (a failure's
  error in its data) or else the detail's name (`stage_progress`,
  `segment`, `aligned`, ...); the stream ends with an `end` event, or a
  `stream_error` if the gateway cannot be reached.

Jobs, events and configs are the protos in proto3's JSON mapping (field
names as in the .proto files, enums by name, durations as "1.5s"), so a
client in any language reads them as the gRPC API documents them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
from aiohttp import BodyPartReader, web
from google.protobuf import json_format
from google.protobuf.descriptor import EnumDescriptor
from google.protobuf.message import Message

from common.errors import InvalidInputError
from common.rpc.uploads import check_file_name
from services.http.errors import ApiError, auth_metadata
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc

# "srt", "vtt", "json", "text", "ass", "rttm": the proto's enum, named as the CLI names them.
RESULT_FORMATS = {
    name.removeprefix("RESULT_FORMAT_").lower(): value
    for name, value in gateway_pb2.ResultFormat.items()
    if value != gateway_pb2.RESULT_FORMAT_UNSPECIFIED
}
# Query parameters of the result that are SubtitleOptions fields.
_SUBTITLE_FIELDS = {field.name: field for field in gateway_pb2.SubtitleOptions.DESCRIPTOR.fields}


def to_json(message: Message) -> dict[str, Any]:
    """A proto message in proto3's JSON mapping, field names as in the .proto."""
    document: dict[str, Any] = json_format.MessageToDict(message, preserving_proto_field_name=True)
    return document


Upload = Callable[[web.Request, BodyPartReader, gateway_pb2.UploadMetadata], Awaitable[gateway_pb2.Job]]


class JobsApi:
    """Route handlers over the gateway's job RPCs (errors become HTTP errors
    in the front's middleware); `upload` streams a form's file part to
    UploadMedia."""

    def __init__(self, gateway: gateway_pb2_grpc.GatewayServiceStub, upload: Upload) -> None:
        self._gateway = gateway
        self._upload_part = upload

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/v1/jobs", self.create)
        app.router.add_get("/v1/jobs", self.list)
        app.router.add_get("/v1/jobs/{job_id}", self.get)
        app.router.add_post("/v1/jobs/{job_id}/cancel", self.cancel)
        app.router.add_get("/v1/jobs/{job_id}/result", self.result)
        app.router.add_get("/v1/jobs/{job_id}/events", self.events)

    async def create(self, request: web.Request) -> web.Response:
        if request.content_type == "application/json":
            body = await _json_body(request)
            unknown = set(body) - {"path", "config", "request_id", "priority"}
            if unknown:
                raise ApiError(400, f"unknown field(s) {', '.join(sorted(unknown))}: use path, config, request_id")
            if not isinstance(body.get("path"), str) or not body["path"].strip():
                raise ApiError(400, "give the media's 'path' on the audio service's host, or upload it as 'file'")
            job = await self._gateway.CreateJob(
                gateway_pb2.CreateJobRequest(
                    path=body["path"],
                    config=_config(body.get("config")),
                    request_id=str(body.get("request_id") or ""),
                    priority=_priority(body.get("priority")),
                ),
                metadata=auth_metadata(request),
                timeout=60,
            )
        elif request.content_type.startswith("multipart/"):
            job = await self._upload(request)
        else:
            raise ApiError(415, "send multipart/form-data with the media in 'file', or JSON with its 'path'")
        return web.json_response(to_json(job), status=201, headers={"Location": f"/v1/jobs/{job.job_id}"})

    async def _upload(self, request: web.Request) -> gateway_pb2.Job:
        fields: dict[str, str] = {}
        job: gateway_pb2.Job | None = None
        async for name, part in form_parts(request):
            if name == "file":
                if job is not None:
                    raise ApiError(400, "one 'file' a job: send several jobs for several files")
                metadata = gateway_pb2.UploadMetadata(
                    file_name=file_name_of(part),
                    config=_config(_json_field("config", fields["config"]) if fields.get("config") else None),
                    request_id=fields.get("request_id", ""),
                    priority=_priority(fields.get("priority")),
                )
                job = await self._upload_part(request, part, metadata)
            elif name in ("config", "request_id", "priority"):
                if job is not None:
                    raise ApiError(400, f"'{name}' came after 'file': put the form's fields before the file")
                fields[name] = await field_text(part)
            else:
                raise ApiError(400, f"unknown form field {name!r}: use file, config, request_id, priority")
        if job is None:
            raise ApiError(400, "the form has no 'file' field: attach the audio or video to transcribe")
        return job

    async def list(self, request: web.Request) -> web.Response:
        query = request.query
        state = query.get("state", "")
        try:
            state_value = gateway_pb2.JobState.Value(f"JOB_STATE_{state.upper()}") if state else 0
        except ValueError:
            raise ApiError(400, f"state {state!r}: use queued, running, succeeded, failed or cancelled") from None
        reply = await self._gateway.ListJobs(
            gateway_pb2.ListJobsRequest(
                page_size=_int(query.get("page_size", "0"), "page_size"),
                page_token=query.get("page_token", ""),
                state=state_value,  # type: ignore[arg-type]
            ),
            metadata=auth_metadata(request),
            timeout=30,
        )
        return web.json_response(to_json(reply) | {"jobs": [to_json(job) for job in reply.jobs]})

    async def get(self, request: web.Request) -> web.Response:
        job = await self._gateway.GetJob(
            gateway_pb2.GetJobRequest(job_id=request.match_info["job_id"]), metadata=auth_metadata(request), timeout=30
        )
        return web.json_response(to_json(job))

    async def cancel(self, request: web.Request) -> web.Response:
        job = await self._gateway.CancelJob(
            gateway_pb2.CancelJobRequest(job_id=request.match_info["job_id"]),
            metadata=auth_metadata(request),
            timeout=30,
        )
        return web.json_response(to_json(job))

    async def result(self, request: web.Request) -> web.Response:
        query = dict(request.query)
        name = query.pop("format", "srt").lower()
        if name not in RESULT_FORMATS:
            raise ApiError(400, f"format {name!r}: use one of {', '.join(RESULT_FORMATS)}")
        get = gateway_pb2.GetResultRequest(job_id=request.match_info["job_id"], format=RESULT_FORMATS[name])
        if query:
            get.subtitles.CopyFrom(_subtitle_options(query))
        result = await self._gateway.GetResult(get, metadata=auth_metadata(request), timeout=60)
        content_type = result.content_type.split(";")[0].strip() or "text/plain"
        headers = {}
        if request.query.get("download"):
            headers["Content-Disposition"] = f'attachment; filename="{request.match_info["job_id"]}.{name}"'
        return web.Response(text=result.content, content_type=content_type, charset="utf-8", headers=headers)

    async def events(self, request: web.Request) -> web.StreamResponse:
        after = request.headers.get("Last-Event-ID") or request.query.get("after_sequence", "0")
        watch = self._gateway.WatchJob(
            gateway_pb2.WatchJobRequest(job_id=request.match_info["job_id"], after_sequence=_int(after, "after")),
            metadata=auth_metadata(request),
        )
        # The first event (or the error: an unknown job is a 404, not an empty stream).
        iterator = watch.__aiter__()
        try:
            first: gateway_pb2.JobEvent | None = await iterator.__anext__()
        except StopAsyncIteration:
            first = None
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )
        await response.prepare(request)
        try:
            event = first
            while event is not None:
                # State changes are "state" (a failure's error in its data); others are named by their detail.
                kind = "state" if event.state_changed else (event.WhichOneof("detail") or "state")
                data = json.dumps(to_json(event), ensure_ascii=False)
                await response.write(f"id: {event.sequence}\nevent: {kind}\ndata: {data}\n\n".encode())
                try:
                    event = await iterator.__anext__()
                except StopAsyncIteration:
                    event = None
            await response.write(b"event: end\ndata: {}\n\n")
        except grpc.aio.AioRpcError as error:
            message = json.dumps({"code": error.code().name.lower(), "message": error.details()})
            await response.write(f"event: stream_error\ndata: {message}\n\n".encode())
        finally:
            watch.cancel()
        await response.write_eof()
        return response


async def form_parts(request: web.Request) -> AsyncIterator[tuple[str, BodyPartReader]]:
    """The named parts of the request's multipart form (name, part), in
    order; 400 for a body that is not one (no boundary in its Content-Type,
    or none in it)."""
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if isinstance(part, BodyPartReader) and part.name is not None:
                yield part.name, part
    except ValueError as error:  # what aiohttp raises for either
        raise ApiError(400, f"the form cannot be read: {error}") from None


async def field_text(part: BodyPartReader) -> str:
    """A form field's value; 400 for one that is not text in its charset."""
    try:
        return await part.text()
    except (UnicodeDecodeError, LookupError):  # bytes not of the charset, or a charset Python does not know
        raise ApiError(400, f"form field {part.name!r} is not text in {part.get_charset('utf-8')}") from None


def _json_field(name: str, text: str) -> object:
    try:
        return json.loads(text)
    except ValueError:
        raise ApiError(400, f"form field {name!r} is not valid JSON") from None


def file_name_of(part: BodyPartReader) -> str:
    """The name of a form's file (its `filename`, "upload" without one),
    refused here (400) as the gateway would refuse it: before any byte is sent."""
    file_name = part.filename or "upload"
    try:
        check_file_name(file_name)
    except InvalidInputError as error:
        raise ApiError(400, str(error), "invalid_argument") from None
    return file_name


async def _json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ApiError(400, "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise ApiError(400, "the body must be a JSON object")
    return body


def _config(document: object) -> gateway_pb2.JobConfig:
    config = gateway_pb2.JobConfig()
    if document is None:
        return config
    if not isinstance(document, dict):
        raise ApiError(400, "'config' must be a JSON object (a JobConfig)")
    try:
        json_format.ParseDict(document, config)
    except json_format.ParseError as error:
        raise ApiError(400, f"config: {error}") from None
    return config


def _subtitle_options(query: dict[str, str]) -> gateway_pb2.SubtitleOptions:
    document: dict[str, Any] = {}
    for name, text in query.items():
        if name == "download":
            continue
        field = _SUBTITLE_FIELDS.get(name)
        if field is None:
            raise ApiError(400, f"unknown result parameter {name!r}: use format or a SubtitleOptions field")
        if field.type == field.TYPE_BOOL:
            document[name] = text.lower() in ("1", "true", "yes")
        elif field.enum_type is not None:
            document[name] = _enum_name(field.enum_type, text)
        elif field.type == field.TYPE_STRING:
            document[name] = text
        else:
            try:
                document[name] = float(text) if field.type in (field.TYPE_FLOAT, field.TYPE_DOUBLE) else int(text)
            except ValueError:
                raise ApiError(400, f"{name} {text!r} is not a number") from None
    options = gateway_pb2.SubtitleOptions()
    try:
        json_format.ParseDict(document, options)
    except json_format.ParseError as error:
        raise ApiError(400, f"subtitle options: {error}") from None
    return options


def _enum_name(enum: EnumDescriptor, text: str) -> str:
    """An enum value by its proto name or its short name ("bbc",
    "short-video" for SUBTITLE_PRESET_BBC, SUBTITLE_PRESET_SHORT_VIDEO)."""
    names = [value.name for value in enum.values]
    prefix = names[0].removesuffix("UNSPECIFIED")  # value 0 is PREFIX_UNSPECIFIED by proto style
    short = f"{prefix}{text.strip().upper().replace('-', '_')}"
    return short if short in names else text


def _priority(value: object) -> int:
    return _int(str(value), "priority") if value not in (None, "") else 0


def _int(text: str, name: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ApiError(400, f"{name} {text!r} is not a whole number") from None

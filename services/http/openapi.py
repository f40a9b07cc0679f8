"""The HTTP front's OpenAPI 3.1 document, served at /openapi.json.

Jobs, events and configs are the gateway's protos in proto3's JSON mapping;
their fields are documented in protos/subtitler/gateway/v1/gateway.proto, so
the schemas here name them and list the main fields rather than copy every
comment.
"""

from __future__ import annotations

from typing import Any

from services.http.jobs_api import RESULT_FORMATS

_ERROR = {"$ref": "#/components/responses/Error"}
_GATEWAY_PROTO = "protos/subtitler/gateway/v1/gateway.proto"
_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string"}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(status): _ERROR for status in statuses}


def _openai_form(translate: bool) -> dict[str, Any]:
    properties: dict[str, Any] = {
        "file": {"type": "string", "contentMediaType": "application/octet-stream", "description": "audio or video"},
        "model": {"type": "string", "description": "whisper-1 (the suite's default model) or a model name"},
        "prompt": {"type": "string"},
        "response_format": {"type": "string", "enum": ["json", "text", "srt", "verbose_json", "vtt"]},
        "temperature": {"type": "number", "minimum": 0, "maximum": 1},
        "timestamp_granularities[]": {"type": "array", "items": {"type": "string", "enum": ["word", "segment"]}},
        "stream": {"type": "boolean", "description": "server-sent transcript.text.delta events, then done"},
    }
    if not translate:
        properties["language"] = {"type": "string", "description": "ISO 639-1 code; empty: detected"}
    return {
        "summary": "Translate speech into English text (OpenAI-compatible)"
        if translate
        else "Transcribe speech (OpenAI-compatible)",
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {"schema": {"type": "object", "required": ["file"], "properties": properties}}
            },
        },
        "responses": {
            "200": {
                "description": "the transcript in the response_format asked for",
                "content": {
                    "application/json": {"schema": {"type": "object", "properties": {"text": {"type": "string"}}}},
                    "text/plain": {"schema": {"type": "string"}},
                    "text/vtt": {"schema": {"type": "string"}},
                    "application/x-subrip": {"schema": {"type": "string"}},
                    "text/event-stream": {"schema": {"type": "string"}},
                },
            },
            **_errors(400, 401, 404, 413, 429, 503),
        },
    }


def openapi_document() -> dict[str, Any]:
    """The document: OpenAI's paths, then the job API's, then the shared components."""
    return {
        "openapi": "3.1.0",
        "info": _info(),
        "paths": {**_openai_paths(), **_jobs_paths(), **_job_paths()},
        "components": _components(),
    }


def _info() -> dict[str, Any]:
    """Title, version, and where the messages and live captions are described."""
    return {
        "title": "subtitler HTTP API",
        "version": "1",
        "description": "Speech to subtitles: OpenAI's transcription API and the suite's job API over HTTP. "
        f"Jobs, events and configs are the gRPC API's messages ({_GATEWAY_PROTO}) in proto3's JSON mapping. "
        "Live captions are a WebSocket at /v1/live (not described here): a StreamingConfig as JSON text, "
        'then binary audio, then {"end": true}; each reply is a StreamingTranscribeResponse as JSON.',
    }


def _openai_paths() -> dict[str, Any]:
    """OpenAI's transcription API: transcriptions, translations, models."""
    return {
        "/v1/audio/transcriptions": {"post": _openai_form(translate=False)},
        "/v1/audio/translations": {"post": _openai_form(translate=True)},
        "/v1/models": {
            "get": {
                "summary": "The models that can be named",
                "responses": {"200": {"description": "OpenAI's model list", "content": _json_object()}},
            }
        },
    }


def _jobs_paths() -> dict[str, Any]:
    """/v1/jobs: create a job, list jobs."""
    return {"/v1/jobs": {"post": _create_job(), "get": _list_jobs()}}


def _create_job() -> dict[str, Any]:
    """POST /v1/jobs: an upload (multipart) or a path on the audio service's host (JSON)."""
    return {
        "summary": "Create a job: upload the media, or name it on the audio service's host",
        "requestBody": {
            "required": True,
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["file"],
                        "properties": {
                            "config": {"type": "string", "description": "a JobConfig as JSON"},
                            "request_id": {"type": "string"},
                            "priority": {"type": "integer", "minimum": -100, "maximum": 100},
                            "file": {"type": "string", "contentMediaType": "application/octet-stream"},
                        },
                    }
                },
                "application/json": {
                    "schema": {
                        "type": "object",
                        "required": ["path"],
                        "properties": {
                            "path": {"type": "string"},
                            "config": {"$ref": "#/components/schemas/JobConfig"},
                            "request_id": {"type": "string"},
                            "priority": {"type": "integer", "minimum": -100, "maximum": 100},
                        },
                    }
                },
            },
        },
        "responses": {
            "201": {
                "description": "the job",
                "headers": {"Location": {"schema": {"type": "string"}}},
                "content": _job(),
            },
            **_errors(400, 401, 403, 404, 413, 415, 429, 503),
        },
    }


def _list_jobs() -> dict[str, Any]:
    """GET /v1/jobs: a page of jobs, newest first, of one state if asked."""
    return {
        "summary": "List jobs, newest first",
        "parameters": [
            {"name": "page_size", "in": "query", "schema": {"type": "integer", "minimum": 0}},
            {"name": "page_token", "in": "query", "schema": {"type": "string"}},
            {
                "name": "state",
                "in": "query",
                "schema": {
                    "type": "string",
                    "enum": ["queued", "running", "succeeded", "failed", "cancelled"],
                },
            },
        ],
        "responses": {
            "200": {
                "description": "a page of jobs",
                "content": {
                    "application/json": {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "jobs": {"type": "array", "items": {"$ref": "#/components/schemas/Job"}},
                                "next_page_token": {"type": "string"},
                            },
                        }
                    }
                },
            },
            **_errors(400, 401),
        },
    }


def _job_paths() -> dict[str, Any]:
    """/v1/jobs/{job_id}: the job, its cancel, its result and its events."""
    return {
        "/v1/jobs/{job_id}": {
            "get": {
                "summary": "A job",
                "parameters": [_JOB_ID],
                "responses": {"200": {"description": "the job", "content": _job()}, **_errors(401, 404)},
            }
        },
        "/v1/jobs/{job_id}/cancel": {
            "post": {
                "summary": "Cancel a job (harmless when it has ended)",
                "parameters": [_JOB_ID],
                "responses": {"200": {"description": "the job", "content": _job()}, **_errors(401, 404)},
            }
        },
        "/v1/jobs/{job_id}/result": {"get": _job_result()},
        "/v1/jobs/{job_id}/events": {"get": _job_events()},
    }


def _job_result() -> dict[str, Any]:
    """GET /v1/jobs/{job_id}/result: a finished job's result in a format, laid out again if asked."""
    return {
        "summary": "A finished job's result, laid out again with other subtitle rules if asked",
        "parameters": [
            _JOB_ID,
            {"name": "format", "in": "query", "schema": {"type": "string", "enum": list(RESULT_FORMATS)}},
            {"name": "download", "in": "query", "schema": {"type": "boolean"}},
            {
                "name": "preset",
                "in": "query",
                "description": "or any other SubtitleOptions field (max_line_chars, max_lines, ...)",
                "schema": {"type": "string", "enum": ["netflix", "bbc", "short-video"]},
            },
        ],
        "responses": {
            "200": {
                "description": "the result",
                "content": {
                    "application/x-subrip": {"schema": {"type": "string"}},
                    "text/vtt": {"schema": {"type": "string"}},
                    "application/json": {"schema": {"type": "object"}},
                    "text/plain": {"schema": {"type": "string"}},
                    "text/x-ssa": {"schema": {"type": "string"}},
                },
            },
            **_errors(400, 401, 404, 409),
        },
    }


def _job_events() -> dict[str, Any]:
    """GET /v1/jobs/{job_id}/events: the job's events as server-sent events."""
    return {
        "summary": "The job's events as server-sent events, until the job ends",
        "description": "Each event's id is its sequence (send Last-Event-ID to resume after it), its "
        "name the detail it carries (state, stage_progress, segment, aligned, language_code, "
        "queue_position, retry, waiting_reason, ...), its data a JobEvent; then an `end` event.",
        "parameters": [
            _JOB_ID,
            {"name": "after_sequence", "in": "query", "schema": {"type": "integer", "minimum": 0}},
            {"name": "Last-Event-ID", "in": "header", "schema": {"type": "string"}},
        ],
        "responses": {
            "200": {"description": "the stream", "content": {"text/event-stream": {"schema": {}}}},
            **_errors(401, 404),
        },
    }


def _components() -> dict[str, Any]:
    """The shared schemas (Job, JobConfig, Error) and the Error response."""
    return {
        "schemas": {
            "Job": {
                "type": "object",
                "description": f"subtitler.gateway.v1.Job in proto3 JSON ({_GATEWAY_PROTO})",
                "properties": {
                    "job_id": {"type": "string"},
                    "state": {"type": "string"},
                    "progress": {"type": "number"},
                    "config": {"$ref": "#/components/schemas/JobConfig"},
                    "source": {"type": "string"},
                    "language_code": {"type": "string"},
                    "error": {"type": "object"},
                },
            },
            "JobConfig": {
                "type": "object",
                "description": "subtitler.gateway.v1.JobConfig in proto3 JSON: transcription (model, "
                "language_code, task, beam_size, ...), subtitles (preset, max_line_chars, ...), profile, "
                "skip_alignment, align_method",
            },
            "Error": {
                "type": "object",
                "properties": {
                    "error": {
                        "type": "object",
                        "properties": {
                            "message": {"type": "string"},
                            "type": {"type": "string"},
                            "code": {"type": ["string", "null"]},
                        },
                    }
                },
            },
        },
        "responses": {
            "Error": {
                "description": "the gateway's message; 429 carries Retry-After",
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
        },
    }


def _json_object() -> dict[str, Any]:
    return {"application/json": {"schema": {"type": "object"}}}


def _job() -> dict[str, Any]:
    return {"application/json": {"schema": {"$ref": "#/components/schemas/Job"}}}

"""The HTTP front's errors: gRPC statuses as HTTP statuses with the gateway's
message, in OpenAI's error shape; and the caller's token passed on."""

from __future__ import annotations

import grpc
from aiohttp import web

from common.errors import bounded_message

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.FAILED_PRECONDITION: 409,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
}


class ApiError(Exception):
    def __init__(self, status: int, message: str, code: str = "", headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.message, self.code, self.headers = status, message, code, headers or {}


def error_response(error: ApiError) -> web.Response:
    """`error` in OpenAI's shape; its message bounded as the gRPC services bound theirs
    (it may echo a form field, a query parameter or a path of the request)."""
    kind = "invalid_request_error" if error.status < 500 else "server_error"
    message = bounded_message(error.message)
    body = {"error": {"message": message, "type": kind, "param": None, "code": error.code or None}}
    return web.json_response(body, status=error.status, headers=error.headers)


def from_grpc(error: grpc.aio.AioRpcError) -> ApiError:
    code = error.code()
    status = HTTP_STATUS.get(code, 500)
    message = error.details() or code.name
    headers = {}
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED:
        retry = dict(error.trailing_metadata() or ()).get("retry-after-s")
        if retry:
            headers["Retry-After"] = str(max(1, round(float(retry))))
    if code == grpc.StatusCode.INVALID_ARGUMENT and message.startswith("upload of ") and "over the limit" in message:
        # The gateway's SUBTITLER_GATEWAY_MAX_UPLOAD_BYTES (gateway.api.servicer's message).
        status = 413
    return ApiError(status, message, code.name.lower(), headers)


def auth_metadata(request: web.Request) -> tuple[tuple[str, str], ...]:
    header = request.headers.get("Authorization", "")
    return (("authorization", header),) if header.lower().startswith("bearer ") and len(header) > 7 else ()

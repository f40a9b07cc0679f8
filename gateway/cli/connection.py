"""The channel to the gateway (TLS, a bearer token on every call) and the
upload stream a file goes over."""
from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc

from common.config import ConfigError
from common.limits import UPLOAD_CHUNK_BYTES
from common.rpc.tls import TlsConfig
from subtitler.gateway.v1 import gateway_pb2


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self._metadata]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


def upload_requests(
    path: Path, config: gateway_pb2.JobConfig, request_id: str = "", priority: int = 0
) -> Iterator[gateway_pb2.UploadMediaRequest]:
    yield gateway_pb2.UploadMediaRequest(
        metadata=gateway_pb2.UploadMetadata(
            file_name=path.name,
            size_bytes=path.stat().st_size,
            config=config,
            request_id=request_id,
            priority=priority,
        )
    )
    with open(path, "rb") as media:
        while block := media.read(UPLOAD_CHUNK_BYTES):
            yield gateway_pb2.UploadMediaRequest(chunk=block)


def gateway_credentials(ca_file: str) -> grpc.ChannelCredentials | None:
    """TLS credentials verified against `ca_file` (with SUBTITLER_TLS_CLIENT_CERT_FILE
    / _KEY_FILE presented if set); None without one: plaintext."""
    if not ca_file:
        return None
    try:
        credentials = TlsConfig.from_env(
            {**os.environ, "SUBTITLER_TLS_CA_FILE": ca_file}, "SUBTITLER_CLI_"
        ).channel_credentials()
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
    assert credentials is not None
    return credentials


def open_gateway_channel(address: str, ca_file: str) -> grpc.Channel:
    """A channel to the gateway: TLS when `ca_file` is given (see gateway_credentials), else plaintext."""
    credentials = gateway_credentials(ca_file)
    return grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)

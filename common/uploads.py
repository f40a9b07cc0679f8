"""Checks shared by the client-streaming upload RPCs (gateway and audio)."""

from __future__ import annotations

import grpc

from common.errors import CancelledError, InvalidInputError


def ensure_upload_complete(
    context: grpc.aio.ServicerContext, declared_size_bytes: int, received_size_bytes: int, name: str
) -> None:
    """Raises unless the upload's stream ended because the client finished it.

    A client that is cut off midway cancels the call, and grpc.aio may then end
    the request iterator as if the stream were complete: a truncated file must
    not be taken for a whole one. A declared size must also match what came.
    """
    if context.cancelled():
        raise CancelledError(f"the upload of {name!r} was cut off after {received_size_bytes} bytes")
    if declared_size_bytes and received_size_bytes != declared_size_bytes:
        raise InvalidInputError(
            f"the upload of {name!r} ended after {received_size_bytes} of the {declared_size_bytes} bytes it declared"
        )

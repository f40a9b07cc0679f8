"""Domain errors. Engines raise these; `common.rpc.server` maps them to gRPC
status codes in one place, so no servicer sets a status code by hand."""

from __future__ import annotations

MAX_MESSAGE_BYTES = 1024
"""Longest message a caller gets with an error, in UTF-8 bytes. A message may
echo what the request held (an id, a path, a file name), which can be
megabytes; gRPC carries the message percent-encoded in a trailer, and a
client refuses trailers over 8 KiB (grpc.max_metadata_size)."""

_ELLIPSIS = " … "


def bounded_message(message: str, max_bytes: int = MAX_MESSAGE_BYTES) -> str:
    """`message` if it fits in `max_bytes` of UTF-8, else its start and its
    end (where messages say what to do) joined by an ellipsis."""
    encoded = message.encode()
    if len(encoded) <= max_bytes:
        return message
    room = max_bytes - len(_ELLIPSIS.encode())
    head = encoded[: room * 2 // 3].decode(errors="ignore")
    tail = encoded[len(encoded) - (room - len(head.encode())) :].decode(errors="ignore")
    return f"{head}{_ELLIPSIS}{tail}"


class SuiteError(Exception):
    """Base of the errors a caller can act on; the message is shown to them."""


class InvalidInputError(SuiteError):
    """Bad or undecodable input, bad options (INVALID_ARGUMENT)."""


class NotFoundError(SuiteError):
    """Unknown file, audio, job, model or language (NOT_FOUND)."""


class PermissionDeniedError(SuiteError):
    """A path outside the configured media root (PERMISSION_DENIED)."""


class ResourceExhaustedError(SuiteError):
    """Over a configured limit, or at capacity (RESOURCE_EXHAUSTED).

    `retry_after_s` is set when retrying later can succeed."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class UnavailableError(SuiteError):
    """Not ready yet, e.g. a model still loading (UNAVAILABLE)."""


class FailedPreconditionError(SuiteError):
    """The request conflicts with the current state (FAILED_PRECONDITION)."""


class DataLossError(SuiteError):
    """Stored data cannot be read (DATA_LOSS)."""


class CancelledError(SuiteError):
    """The work was cancelled by the caller (CANCELLED)."""


class UnauthenticatedError(SuiteError):
    """No valid credentials for a service that needs them (UNAUTHENTICATED)."""


class OutOfRangeError(SuiteError):
    """Past a bound of what the request may cover, e.g. a stream's maximum duration (OUT_OF_RANGE)."""


class DeadlineExceededError(SuiteError):
    """Something the server waited for did not come in time, e.g. a stream's audio (DEADLINE_EXCEEDED)."""

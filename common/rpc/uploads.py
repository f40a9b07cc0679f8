"""Checks shared by the upload RPCs (gateway and audio) and the HTTP front's uploads."""

from __future__ import annotations

import unicodedata

import grpc

from common.errors import CancelledError, InvalidInputError

MAX_FILE_NAME_BYTES = 1024
"""Longest file name an upload may carry, in UTF-8 bytes, folders included
(a file's own name is at most 255 bytes on common file systems)."""


def check_file_name(file_name: str) -> None:
    """An upload's file name, as a client gives it (folders may come with it):
    `InvalidInputError` for one over `MAX_FILE_NAME_BYTES` or with a control
    character (NUL, a line break, an escape, ...), which would end up in the
    paths, logs and messages the name goes into. The message names the
    character, never the whole name."""
    size_bytes = len(file_name.encode())
    if size_bytes > MAX_FILE_NAME_BYTES:
        raise InvalidInputError(
            f"the file name is {size_bytes} bytes long, over the limit of {MAX_FILE_NAME_BYTES}: rename the file"
        )
    for position, character in enumerate(file_name):
        if unicodedata.category(character) == "Cc":
            raise InvalidInputError(
                f"the file name has a control character (U+{ord(character):04X}) at position {position}: "
                "rename the file"
            )


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

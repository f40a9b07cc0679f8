"""Temporary files that hold uploads until they are decoded.

FFmpeg needs a seekable file for most containers (MP4 keeps its index at the
end), so an upload is written to a file in the spool directory, decoded,
and deleted: always, also when the upload is cut off or fails.
"""

from __future__ import annotations

import logging
import os
import re
import tempfile
import threading
from pathlib import Path
from types import TracebackType

from common.errors import InvalidInputError

logger = logging.getLogger(__name__)

SPOOL_FILE_PREFIX = "upload-"
_SAFE_SUFFIX = re.compile(r"^\.[A-Za-z0-9]{1,10}$")


def check_upload_size(size_bytes: int, max_upload_bytes: int) -> None:
    """Reject an upload whose size is over the limit (`InvalidInputError`)."""
    if size_bytes > max_upload_bytes:
        raise InvalidInputError(
            f"the upload is {size_bytes} bytes, over the maximum of {max_upload_bytes} bytes; "
            "put the file under the service's media root and use DecodeFile, or cut it"
        )


class SpoolFile:
    """One upload being written; use as a context manager, which deletes it.

    The file keeps the extension of the client's file name (a hint for
    formats FFmpeg cannot probe) and is private to the service's user.
    `write` may run in an executor thread while the event loop leaves the
    block (a cancelled upload): a lock orders them, and writes after the
    file is gone are dropped.
    """

    def __init__(self, spool_dir: Path, file_name: str, max_upload_bytes: int) -> None:
        suffix = Path(file_name).suffix
        fd, name = tempfile.mkstemp(
            prefix=SPOOL_FILE_PREFIX,
            suffix=suffix if _SAFE_SUFFIX.match(suffix) else "",
            dir=spool_dir,
        )
        self.path = Path(name)
        self.size_bytes = 0
        self._max_upload_bytes = max_upload_bytes
        self._file = os.fdopen(fd, "wb")
        self._lock = threading.Lock()
        self._deleted = False

    def write(self, chunk: bytes) -> None:
        """Append a chunk; `InvalidInputError` once the upload passes the limit."""
        with self._lock:
            if self._deleted:
                return
            check_upload_size(self.size_bytes + len(chunk), self._max_upload_bytes)
            self._file.write(chunk)
            self.size_bytes += len(chunk)

    def finish(self) -> Path:
        """Flush and close the file for decoding; returns its path."""
        with self._lock:
            self._file.close()
        return self.path

    def delete(self) -> None:
        """Close and delete the file; idempotent."""
        with self._lock:
            if self._deleted:
                return
            self._deleted = True
            try:
                self._file.close()
            finally:
                self.path.unlink(missing_ok=True)
        logger.debug("deleted spool file %s (%d bytes)", self.path.name, self.size_bytes)

    def __enter__(self) -> SpoolFile:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.delete()


def make_spool_dir(spool_dir: Path) -> Path:
    """Create the spool directory (private to the service's user) if needed."""
    spool_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not os.access(spool_dir, os.W_OK):
        raise PermissionError(f"spool directory {spool_dir} is not writable")
    return spool_dir

"""A job's uploaded file on this host: its size, its removal once the job no
longer needs it, and whether the disk has room for another."""

from __future__ import annotations

import shutil
from pathlib import Path

from common.errors import ResourceExhaustedError
from gateway.records import JobRecord


def upload_bytes(job: JobRecord) -> int:
    """The size of a job's kept upload (0: not an upload, or not on this host)."""
    if not (job.uploaded and job.media_path):
        return 0
    try:
        return Path(job.media_path).stat().st_size
    except OSError:
        return 0


def discard_upload(job: JobRecord) -> None:
    """Deletes a job's kept upload, if it has one."""
    if job.uploaded and job.media_path:
        Path(job.media_path).unlink(missing_ok=True)


def check_upload_space(uploads_dir: Path, size_bytes: int, min_free_disk_bytes: int) -> None:
    """RESOURCE_EXHAUSTED when storing `size_bytes` more in `uploads_dir`
    would leave less free disk than `min_free_disk_bytes`."""
    free = shutil.disk_usage(uploads_dir).free
    if free - size_bytes < min_free_disk_bytes:
        raise ResourceExhaustedError(
            f"not enough disk space for uploads ({free} bytes free, {min_free_disk_bytes}"
            " kept free); try again later",
            retry_after_s=60,
        )

"""POSIX shared-memory segments holding float32 audio samples.

The audio service creates one segment per decoded audio and writes the
samples once; the other services on the same host map it read-only instead of
copying the audio over gRPC.

Why files under /dev/shm instead of `multiprocessing.shared_memory`
--------------------------------------------------------------------
On Linux a POSIX shared-memory object named ``name`` *is* the file
``/dev/shm/<name>`` on a tmpfs, so ``shm_open``/``shm_unlink`` are plain
``open``/``unlink`` there. Going through that file directly is the robust
choice, for three reasons:

* Attaching. In Python 3.11, ``SharedMemory(name)`` registers the segment with
  the multiprocessing resource tracker even when it only attaches (``track=``
  arrives in 3.13). When the attaching process exits, the tracker unlinks the
  segment under the feet of its owner and warns about "leaked shared_memory
  objects". Calling ``resource_tracker.unregister`` right after attaching
  narrows the window but still races with a crash, talks to a tracker process
  spawned just for that, and removes the *owner's* registration when the owner
  attaches in-process. Opening ``/dev/shm/<name>`` read-only and mapping it
  with ``PROT_READ`` never involves the tracker, and the mapping is really
  read-only: a consumer cannot corrupt the audio.
* Creating. ``SharedMemory(create=True)`` only ``ftruncate``s the segment, so on
  a small tmpfs (Docker's default ``--shm-size`` is 64 MiB) the first write to
  a page that does not fit kills the service with SIGBUS. Here the creator
  reserves the pages with ``posix_fallocate`` and gets a clean ENOSPC, mapped
  to `ResourceExhaustedError`.
* Crash safety is kept: the creator registers the segment with the resource
  tracker itself (the same registration ``SharedMemory`` makes), so a service
  killed by SIGKILL or the OOM killer still gets its segments unlinked by the
  tracker. A clean release unregisters it.

This makes the module Linux-only, as is `host_id` (which reads /proc).

Zero-length audio: a segment cannot have size 0 (mmap refuses it), so a
segment for 0 samples holds one float32 0.0 that is never part of the audio;
the sample count carried with the segment name stays 0.
"""

from __future__ import annotations

import contextlib
import errno
import logging
import mmap
import os
import secrets
import socket
from collections.abc import Iterable, Iterator
from multiprocessing import resource_tracker
from pathlib import Path
from types import TracebackType

import numpy as np
import numpy.typing as npt

from common.errors import InvalidInputError, NotFoundError, ResourceExhaustedError

logger = logging.getLogger(__name__)

SHM_DIR = Path("/dev/shm")
"""Where Linux exposes POSIX shared-memory objects."""
SEGMENT_NAME_PREFIX = "subtitler-"
"""Prefix of every segment this suite creates (easy to find in /dev/shm)."""
BYTES_PER_SAMPLE = 4
"""Samples are little-endian float32."""
SAMPLE_DTYPE = np.dtype("<f4")

_BOOT_ID_PATH = Path("/proc/sys/kernel/random/boot_id")
_TRACKER_RESOURCE_TYPE = "shared_memory"

Samples = npt.NDArray[np.float32]


def host_id() -> str:
    """Identity of this host's /dev/shm: kernel boot id and hostname.

    Two processes can map each other's segments when their host ids are equal.
    The boot id changes on every reboot (so stale handles never match), the
    hostname separates containers that share a kernel but not /dev/shm.
    """
    boot_id = _BOOT_ID_PATH.read_text(encoding="ascii").strip()
    return f"{boot_id}/{socket.gethostname()}"


def _segment_path(name: str) -> Path:
    if not name or "/" in name or name in (".", ".."):
        raise InvalidInputError(f"invalid shared-memory segment name {name!r}")
    return SHM_DIR / name


def _tracker_name(name: str) -> str:
    # The name the tracker hands to shm_unlink; SharedMemory uses the same.
    return f"/{name}"


class SharedSamples:
    """A segment of float32 samples owned by the process that created it.

    Create it with `SharedSamples.create`, fill it with `write`, read copies
    with `read_bytes`, and end with `release` (or use it as a context
    manager), which unmaps *and unlinks* it. Views into the mapping are never
    handed out, so closing it cannot fail on lingering exports; consumers map
    it on their own with `attach_samples`.
    """

    def __init__(self, name: str, sample_count: int, mapping: mmap.mmap) -> None:
        self.name = name
        self.sample_count = sample_count
        self._mapping: mmap.mmap | None = mapping

    @classmethod
    def create(cls, sample_count: int, *, mode: int = 0o600) -> SharedSamples:
        """Create a zero-filled segment for `sample_count` samples.

        The name is `SEGMENT_NAME_PREFIX` plus a random suffix. `mode` is the
        permission of the segment: the default lets only processes of the
        same user map it. Raises `ResourceExhaustedError` when /dev/shm has
        no room for it.
        """
        if sample_count < 0:
            raise ValueError(f"sample_count must be >= 0, got {sample_count}")
        size_bytes = max(sample_count, 1) * BYTES_PER_SAMPLE
        name = f"{SEGMENT_NAME_PREFIX}{secrets.token_hex(12)}"
        path = _segment_path(name)
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode)
        try:
            try:
                os.posix_fallocate(fd, 0, size_bytes)
            except OSError as error:
                no_room = _no_room(error, size_bytes)
                if no_room is None:
                    raise
                raise no_room from error
            mapping = mmap.mmap(fd, size_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            path.unlink()
            raise
        finally:
            os.close(fd)
        resource_tracker.register(_tracker_name(name), _TRACKER_RESOURCE_TYPE)
        logger.debug("created segment %s for %d samples", name, sample_count)
        return cls(name, sample_count, mapping)

    @property
    def released(self) -> bool:
        return self._mapping is None

    def _live_mapping(self) -> mmap.mmap:
        if self._mapping is None:
            raise NotFoundError(f"shared-memory segment {self.name} was released")
        return self._mapping

    def write(self, offset_samples: int, samples: Samples) -> None:
        """Copy `samples` (1-D float32) into the segment at `offset_samples`."""
        if samples.ndim != 1:
            raise ValueError(f"samples must be 1-D, got shape {samples.shape}")
        end_samples = offset_samples + samples.shape[0]
        if offset_samples < 0 or end_samples > self.sample_count:
            raise ValueError(f"write of [{offset_samples}, {end_samples}) outside [0, {self.sample_count})")
        contiguous = np.ascontiguousarray(samples, dtype=SAMPLE_DTYPE)
        mapping = self._live_mapping()
        mapping[offset_samples * BYTES_PER_SAMPLE : end_samples * BYTES_PER_SAMPLE] = contiguous.data.cast("B")

    def write_chunks(self, chunks: Iterable[Samples]) -> None:
        """Copy consecutive 1-D chunks into the segment, from sample 0."""
        offset_samples = 0
        for chunk in chunks:
            self.write(offset_samples, chunk)
            offset_samples += chunk.shape[0]
        if offset_samples != self.sample_count:
            raise ValueError(f"chunks hold {offset_samples} samples, segment {self.sample_count}")

    def read_bytes(self, start_samples: int, end_samples: int) -> bytes:
        """A copy of samples [start, end) as little-endian float32 bytes."""
        if not 0 <= start_samples <= end_samples <= self.sample_count:
            raise ValueError(f"read of [{start_samples}, {end_samples}) outside [0, {self.sample_count})")
        mapping = self._live_mapping()
        return mapping[start_samples * BYTES_PER_SAMPLE : end_samples * BYTES_PER_SAMPLE]

    def release(self) -> None:
        """Unmap and unlink the segment; idempotent.

        Processes that still map it keep their mapping; the memory is freed
        when the last of them unmaps it.
        """
        mapping, self._mapping = self._mapping, None
        if mapping is None:
            return
        try:
            mapping.close()
        finally:
            try:
                _segment_path(self.name).unlink()
            except FileNotFoundError:
                logger.warning("segment %s was already unlinked by someone else", self.name)
            resource_tracker.unregister(_tracker_name(self.name), _TRACKER_RESOURCE_TYPE)
            logger.debug("released segment %s", self.name)

    def __enter__(self) -> SharedSamples:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def __repr__(self) -> str:
        state = "released" if self.released else "live"
        return f"SharedSamples({self.name!r}, sample_count={self.sample_count}, {state})"


class SegmentWriter:
    """A new segment filled block by block while its length is not yet known
    (a decoder's output), so the samples are never held twice: each block is
    appended to the segment's file with `write` (a full /dev/shm is a clean
    ENOSPC, `ResourceExhaustedError`, as nothing is mapped while it grows),
    and `finish` maps the whole as a `SharedSamples`. Registered with the
    resource tracker from the start, as `SharedSamples.create`; unlinked by
    `abort`, or on leaving a `with` block unfinished."""

    def __init__(self, *, mode: int = 0o600) -> None:
        self.name = f"{SEGMENT_NAME_PREFIX}{secrets.token_hex(12)}"
        self.sample_count = 0
        self._fd: int | None = os.open(
            _segment_path(self.name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, mode
        )
        resource_tracker.register(_tracker_name(self.name), _TRACKER_RESOURCE_TYPE)

    def _live_fd(self) -> int:
        if self._fd is None:
            raise ValueError(f"segment {self.name} is no longer being written")
        return self._fd

    def append(self, samples: Samples) -> None:
        """Copies 1-D `samples` after those written so far (the caller may reuse its array)."""
        if samples.ndim != 1:
            raise ValueError(f"samples must be 1-D, got shape {samples.shape}")
        fd = self._live_fd()
        data = np.ascontiguousarray(samples, dtype=SAMPLE_DTYPE).data.cast("B")
        try:
            while data:
                data = data[os.write(fd, data) :]
        except OSError as error:
            no_room = _no_room(error, (self.sample_count + samples.shape[0]) * BYTES_PER_SAMPLE)
            if no_room is None:
                raise
            raise no_room from error
        self.sample_count += samples.shape[0]

    def finish(self) -> SharedSamples:
        """The segment, mapped, holding every sample appended (see
        `SharedSamples` for zero samples); this writer is done."""
        fd = self._live_fd()
        try:
            if self.sample_count == 0:
                os.ftruncate(fd, BYTES_PER_SAMPLE)  # a segment cannot be empty: one unused sample
            size_bytes = max(self.sample_count, 1) * BYTES_PER_SAMPLE
            mapping = mmap.mmap(fd, size_bytes, mmap.MAP_SHARED, mmap.PROT_READ | mmap.PROT_WRITE)
        except BaseException:
            self.abort()
            raise
        os.close(fd)
        self._fd = None
        logger.debug("wrote segment %s of %d samples", self.name, self.sample_count)
        return SharedSamples(self.name, self.sample_count, mapping)

    def abort(self) -> None:
        """Closes and unlinks the segment unless it was finished; idempotent."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        os.close(fd)
        with contextlib.suppress(FileNotFoundError):
            _segment_path(self.name).unlink()
        resource_tracker.unregister(_tracker_name(self.name), _TRACKER_RESOURCE_TYPE)

    def __enter__(self) -> SegmentWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.abort()


def _no_room(error: OSError, size_bytes: int) -> ResourceExhaustedError | None:
    """What a reservation or write of `size_bytes` of audio in /dev/shm that
    failed for want of room raises; None for another failure."""
    if error.errno not in (errno.ENOSPC, errno.ENOMEM, errno.EFBIG):
        return None
    return ResourceExhaustedError(
        f"no room in {SHM_DIR} for {size_bytes} bytes of audio ({size_bytes // BYTES_PER_SAMPLE} samples): "
        f"{error.strerror}; free shared memory or give the container a larger --shm-size",
        retry_after_s=60.0,
    )


def segment_exists(name: str) -> bool:
    """True when a segment of that name exists on this host."""
    return _segment_path(name).exists()


@contextlib.contextmanager
def attach_samples(name: str, sample_count: int) -> Iterator[Samples]:
    """Map an existing segment read-only and yield its samples, zero-copy.

    The array is read-only (writes raise ValueError). The segment is never
    unlinked and the resource tracker is never told about it. On leaving the
    block the mapping is closed if nothing else references the array; if the
    caller kept a reference (or a slice), the mapping stays valid and is
    unmapped when the last reference goes — never while it is in use.

    Raises `NotFoundError` when the segment does not exist (released or on
    another host) and `InvalidInputError` when it is smaller than
    `sample_count` samples (a handle that does not match the segment).
    """
    if sample_count < 0:
        raise InvalidInputError(f"sample_count must be >= 0, got {sample_count}")
    path = _segment_path(name)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except FileNotFoundError as error:
        raise NotFoundError(
            f"shared-memory segment {name} does not exist on this host (released, expired, or created on another host)"
        ) from error
    try:
        size_bytes = os.fstat(fd).st_size
        needed_bytes = sample_count * BYTES_PER_SAMPLE
        if size_bytes < needed_bytes:
            raise InvalidInputError(
                f"shared-memory segment {name} holds {size_bytes // BYTES_PER_SAMPLE} "
                f"samples, the handle says {sample_count}"
            )
        mapping = mmap.mmap(fd, needed_bytes, mmap.MAP_SHARED, mmap.PROT_READ) if sample_count else None
    finally:
        os.close(fd)
    if mapping is None:
        empty = np.zeros(0, dtype=SAMPLE_DTYPE)
        empty.flags.writeable = False
        yield empty
        return
    samples: Samples | None = np.frombuffer(mapping, dtype=SAMPLE_DTYPE, count=sample_count)
    try:
        assert samples is not None
        yield samples
    finally:
        samples = None
        try:
            mapping.close()
        except BufferError:
            logger.debug(
                "segment %s: a view outlives its block; unmapped when it is collected",
                name,
            )

"""Shared-memory segments: create, fill, map read-only, release; no leaks,
no resource-tracker interference from processes that only attach."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest

from common.audio.shm import (
    SEGMENT_NAME_PREFIX,
    SHM_DIR,
    SegmentWriter,
    SharedSamples,
    attach_samples,
    host_id,
    segment_exists,
)
from common.errors import InvalidInputError, NotFoundError, ResourceExhaustedError

REPO_ROOT = Path(__file__).resolve().parents[4]


def _run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_host_id_is_boot_id_and_hostname() -> None:
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    assert host_id() == f"{boot_id}/{os.uname().nodename}"
    assert host_id() == host_id()


def test_create_write_read_release() -> None:
    samples = np.linspace(-1, 1, 1000, dtype=np.float32)
    segment = SharedSamples.create(samples.size)
    try:
        assert segment.name.startswith(SEGMENT_NAME_PREFIX)
        assert (SHM_DIR / segment.name).stat().st_size == samples.size * 4
        assert oct((SHM_DIR / segment.name).stat().st_mode & 0o777) == oct(0o600)
        segment.write_chunks([samples[:300], samples[300:]])
        assert np.array_equal(np.frombuffer(segment.read_bytes(0, 1000), dtype="<f4"), samples)
        assert np.array_equal(np.frombuffer(segment.read_bytes(10, 20), dtype="<f4"), samples[10:20])
    finally:
        segment.release()
    assert not segment_exists(segment.name)
    segment.release()  # idempotent
    with pytest.raises(NotFoundError):
        segment.read_bytes(0, 1)


def test_context_manager_releases_on_error() -> None:
    with pytest.raises(RuntimeError), SharedSamples.create(10) as segment:
        raise RuntimeError("boom")
    assert not segment_exists(segment.name)


def test_writes_and_reads_are_bounds_checked() -> None:
    with SharedSamples.create(4) as segment:
        with pytest.raises(ValueError, match="outside"):
            segment.write(2, np.zeros(3, dtype=np.float32))
        with pytest.raises(ValueError, match="outside"):
            segment.read_bytes(0, 5)
        with pytest.raises(ValueError, match="hold 3 samples"):
            segment.write_chunks([np.zeros(3, dtype=np.float32)])


def test_attach_is_zero_copy_and_read_only() -> None:
    with SharedSamples.create(8) as segment:
        segment.write(0, np.arange(8, dtype=np.float32))
        with attach_samples(segment.name, 8) as samples:
            assert samples.dtype == np.float32
            assert not samples.flags.writeable
            assert np.array_equal(samples, np.arange(8))
            with pytest.raises(ValueError):
                samples[0] = 42.0
            # Zero-copy: a later write by the owner shows through the mapping.
            segment.write(0, np.full(1, 7.0, dtype=np.float32))
            assert samples[0] == 7.0


def test_a_view_kept_past_the_block_stays_valid_after_release() -> None:
    segment = SharedSamples.create(4)
    segment.write(0, np.arange(4, dtype=np.float32))
    with attach_samples(segment.name, 4) as samples:
        kept = samples[1:3]
    segment.release()
    assert not segment_exists(segment.name)
    # The mapping lives as long as the view; the memory goes with it.
    assert kept.tolist() == [1.0, 2.0]


def test_zero_length_segment() -> None:
    with SharedSamples.create(0) as segment:
        assert segment.sample_count == 0
        assert (SHM_DIR / segment.name).stat().st_size == 4  # one unused sample: mmap refuses size 0
        segment.write_chunks([])
        assert segment.read_bytes(0, 0) == b""
        with attach_samples(segment.name, 0) as samples:
            assert samples.shape == (0,)
    assert not segment_exists(segment.name)


def test_attach_missing_segment_is_not_found() -> None:
    with pytest.raises(NotFoundError, match="does not exist"), attach_samples(f"{SEGMENT_NAME_PREFIX}missing", 1):
        pass


def test_attach_with_a_count_larger_than_the_segment_is_refused() -> None:
    with (
        SharedSamples.create(4) as segment,
        pytest.raises(InvalidInputError, match="holds 4 samples"),
        attach_samples(segment.name, 5),
    ):
        pass


@pytest.mark.parametrize("name", ["", "../etc/passwd", "a/b", ".."])
def test_bad_segment_names_are_refused(name: str) -> None:
    with pytest.raises(InvalidInputError), attach_samples(name, 1):
        pass


def test_full_shared_memory_is_resource_exhausted(monkeypatch: pytest.MonkeyPatch) -> None:
    before = set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*"))

    def no_space(fd: int, offset: int, length: int) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", no_space)
    with pytest.raises(ResourceExhaustedError, match="shm-size") as raised:
        SharedSamples.create(1000)
    assert raised.value.retry_after_s is not None
    assert set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*")) == before


def test_a_writer_appends_blocks_then_maps_the_whole() -> None:
    samples = np.linspace(-1, 1, 1000, dtype=np.float32)
    with SegmentWriter() as writer:
        block = np.empty(300, dtype=np.float32)
        for start in range(0, 1000, 300):
            piece = samples[start : start + 300]
            block[: piece.size] = piece
            writer.append(block[: piece.size])  # the same array, reused
        assert writer.sample_count == 1000
        segment = writer.finish()
    try:
        assert segment_exists(segment.name) and segment.name == writer.name
        assert (SHM_DIR / segment.name).stat().st_size == 4000
        assert oct((SHM_DIR / segment.name).stat().st_mode & 0o777) == oct(0o600)
        with attach_samples(segment.name, 1000) as mapped:
            assert np.array_equal(mapped, samples)
        with pytest.raises(ValueError, match="no longer being written"):
            writer.append(samples)
    finally:
        segment.release()
    assert not segment_exists(segment.name)


def test_a_writer_left_unfinished_unlinks_its_segment() -> None:
    with pytest.raises(RuntimeError), SegmentWriter() as writer:
        writer.append(np.ones(10, dtype=np.float32))
        assert segment_exists(writer.name)
        raise RuntimeError("the decoder failed")
    assert not segment_exists(writer.name)
    writer.abort()  # idempotent


def test_a_writer_of_nothing_gives_an_empty_audio() -> None:
    with SegmentWriter() as writer, writer.finish() as segment:
        assert segment.sample_count == 0
        assert (SHM_DIR / segment.name).stat().st_size == 4
        assert segment.read_bytes(0, 0) == b""


def test_a_writer_on_a_full_shared_memory_is_resource_exhausted(monkeypatch: pytest.MonkeyPatch) -> None:
    before = set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*"))

    def no_space(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with SegmentWriter() as writer:
        monkeypatch.setattr(os, "write", no_space)
        with pytest.raises(ResourceExhaustedError, match="shm-size"):
            writer.append(np.ones(10, dtype=np.float32))
        monkeypatch.undo()
    assert set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*")) == before


def test_attaching_process_neither_unlinks_nor_warns() -> None:
    samples = np.arange(16_000, dtype=np.float32)
    with SharedSamples.create(samples.size) as segment:
        segment.write(0, samples)
        result = _run_python(
            f"""
            from common.audio.shm import attach_samples
            with attach_samples({segment.name!r}, {samples.size}) as samples:
                print(float(samples.sum()))
            """
        )
        assert result.returncode == 0, result.stderr
        assert float(result.stdout) == float(samples.sum())
        assert "resource_tracker" not in result.stderr
        assert "leaked" not in result.stderr
        assert result.stderr == ""
        # The consumer exited; the segment is still there for its owner.
        assert segment_exists(segment.name)
        with attach_samples(segment.name, samples.size) as again:
            assert np.array_equal(again, samples)
    assert not segment_exists(segment.name)


def test_releasing_owner_exits_cleanly() -> None:
    result = _run_python(
        """
        import numpy as np
        from common.audio.shm import SharedSamples, segment_exists
        segment = SharedSamples.create(100)
        segment.write(0, np.ones(100, dtype=np.float32))
        segment.release()
        assert not segment_exists(segment.name)
        print(segment.name)
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert not (SHM_DIR / result.stdout.strip()).exists()


def test_segments_of_a_killed_owner_are_unlinked_by_the_resource_tracker() -> None:
    owner = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\n"
            "from common.audio.shm import SharedSamples\n"
            "segment = SharedSamples.create(1000)\n"
            "print(segment.name, flush=True)\n"
            "time.sleep(60)\n",
        ],
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert owner.stdout is not None
        name = owner.stdout.readline().strip()
        assert segment_exists(name)
        owner.send_signal(signal.SIGKILL)
        owner.wait(timeout=10)
        deadline = time.monotonic() + 10
        while segment_exists(name) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not segment_exists(name)
    finally:
        if owner.poll() is None:
            owner.kill()
            owner.wait()
        for stream in (owner.stdout, owner.stderr):
            if stream is not None:
                stream.close()

"""bench/process_memory.py: PSS and RSS read from /proc, and the sampler."""

from __future__ import annotations

import mmap
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from bench.process_memory import (
    MemorySampler,
    ProportionalMemory,
    mapped_segments,
    parse_smaps_rollup,
    process_tree,
    proportional_memory,
    shared_audio_bytes,
)
from common.audio.shm import SharedSamples

ROLLUP = """\
55d0c8a1e000-7ffd2b5e5000 ---p 00000000 00:00 0                          [rollup]
Rss:              203400 kB
Pss:              150000 kB
Pss_Dirty:        120000 kB
Pss_Anon:         100000 kB
Pss_File:          20000 kB
Pss_Shmem:         30000 kB
Shared_Clean:       1540 kB
"""


def test_rollup_is_read_in_bytes() -> None:
    assert parse_smaps_rollup(ROLLUP) == ProportionalMemory(
        rss_bytes=203400 * 1024, pss_bytes=150000 * 1024, pss_shmem_bytes=30000 * 1024, pss_anon_bytes=100000 * 1024
    )


def test_an_old_kernel_without_the_parts_reads_them_as_zero() -> None:
    assert parse_smaps_rollup("Rss: 10 kB\nPss: 8 kB\n") == ProportionalMemory(10240, 8192, 0, 0)


def test_figures_add_up() -> None:
    assert ProportionalMemory(1, 2, 3, 4) + ProportionalMemory(10, 20, 30, 40) == ProportionalMemory(11, 22, 33, 44)


def test_this_process_has_pss_and_a_gone_one_has_none() -> None:
    own = proportional_memory(os.getpid())
    assert 0 < own.pss_bytes <= own.rss_bytes
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert proportional_memory(child.pid) == ProportionalMemory()


def test_a_child_is_part_of_the_tree() -> None:
    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert process_tree(os.getpid())[0] == os.getpid()
        assert child.pid in process_tree(os.getpid())
    finally:
        child.kill()
        child.wait()


def test_shared_audio_counts_once_in_pss() -> None:
    """Two processes that map a segment's every page: each one's RSS holds it
    all, their PSS together holds it once."""
    sample_count = 4 * 2**20
    with SharedSamples.create(sample_count) as segment:
        segment.write(0, np.ones(sample_count, dtype=np.float32))
        path = f"/dev/shm/{segment.name}"
        reader = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import mmap, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY); "
                "m = mmap.mmap(fd, 0, mmap.MAP_SHARED, mmap.PROT_READ); sum(m[::4096]); print('', flush=True); "
                "time.sleep(30)",
                path,
            ],
            stdout=subprocess.PIPE,
        )
        try:
            assert reader.stdout is not None
            reader.stdout.readline()
            segment_bytes = sample_count * 4
            assert Path(path) in mapped_segments(os.getpid()) & mapped_segments(reader.pid)
            assert shared_audio_bytes(mapped_segments(reader.pid)) == segment_bytes
            # This process wrote every page; the reader touched every page.
            shares = [proportional_memory(pid).pss_shmem_bytes for pid in (os.getpid(), reader.pid)]
            assert abs(sum(shares) - segment_bytes) < segment_bytes * 0.02
            assert all(abs(share - segment_bytes / 2) < segment_bytes * 0.02 for share in shares)
        finally:
            reader.kill()
            reader.wait()


def test_sampler_sees_memory_grow() -> None:
    sampler = MemorySampler({"self": os.getpid()}, keep_timeline=True)
    sampler.start()
    time.sleep(0.3)
    block = mmap.mmap(-1, 64 * 2**20)
    block.write(b"x" * len(block))
    time.sleep(0.8)
    peaks = sampler.stop()
    block.close()
    assert peaks.pss_rounds >= 2
    assert peaks.pss_bytes["self"] >= peaks.timeline[0][1]["self"].pss_bytes + 60 * 2**20
    assert peaks.pss_sum_bytes == peaks.pss_bytes["self"]
    assert peaks.rss_sum_bytes >= peaks.pss_sum_bytes - 2**20
    assert 0.0 < peaks.pss_round_cpu_s < 0.1

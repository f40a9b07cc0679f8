"""The malloc tuning every service applies at start."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from pathlib import Path

from common.machine.memory import (
    DEFAULT_MALLOC_ARENAS,
    DEFAULT_MALLOC_KEEP_BYTES,
    IdleMemoryRelease,
    release_free_memory,
)

REPO = Path(__file__).resolve().parents[4]

# In a child process (the settings are process-wide): applies them, then in
# a worker thread (as a model's) mallocs, fills and frees a 52 MB buffer five
# times, as CTranslate2 does its per-call buffers, and counts the page faults
# of the last four.
_CHILD = """
import ctypes, json, resource, sys, threading
from common.machine.memory import tune_malloc
settings = tune_malloc(json.loads(sys.argv[1]))
libc = ctypes.CDLL(None)
libc.malloc.restype = ctypes.c_void_p
libc.free.argtypes = [ctypes.c_void_p]
size = 52_000_000
def fill_and_free():
    buffer = libc.malloc(size)
    ctypes.memset(buffer, 1, size)
    libc.free(buffer)
faults = []
def work():
    fill_and_free()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(4):
        fill_and_free()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
thread = threading.Thread(target=work)
thread.start()
thread.join()
print(json.dumps({"arenas": settings.arenas, "keep": settings.keep_bytes, "faults": faults[0]}))
"""


def _child(env: dict[str, str]) -> dict[str, int | None]:
    output = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps(env)], capture_output=True, text=True, check=True, cwd=REPO
    )
    return json.loads(output.stdout)  # type: ignore[no-any-return]


def test_defaults_keep_freed_buffers_so_the_next_call_does_not_fault_them_in_again() -> None:
    tuned = _child({})
    assert (tuned["arenas"], tuned["keep"]) == (DEFAULT_MALLOC_ARENAS, DEFAULT_MALLOC_KEEP_BYTES)
    untuned = _child({"SUBTITLER_MALLOC_KEEP_BYTES": "0"})
    assert untuned["keep"] is None
    # 4 x 52 MB is about 50,000 pages of 4 KiB faulted in when glibc hands each buffer back.
    assert untuned["faults"] > 40_000  # type: ignore[operator]
    assert tuned["faults"] < 2_000  # type: ignore[operator]


def test_settings_are_read_and_glibcs_own_variables_win() -> None:
    chosen = _child({"SUBTITLER_MALLOC_ARENAS": "4", "SUBTITLER_MALLOC_KEEP_BYTES": "1048576"})
    assert (chosen["arenas"], chosen["keep"]) == (4, 1048576)
    assert _child({"SUBTITLER_MALLOC_ARENAS": "many"})["arenas"] == DEFAULT_MALLOC_ARENAS
    assert _child({"SUBTITLER_MALLOC_ARENAS": "0"})["arenas"] is None
    glibcs = _child({"MALLOC_ARENA_MAX": "2", "MALLOC_MMAP_THRESHOLD_": "65536"})
    assert (glibcs["arenas"], glibcs["keep"]) == (None, None)


def test_release_free_memory_never_fails() -> None:
    assert release_free_memory() in (True, False)


def test_an_idle_service_hands_kept_memory_back_once_per_spell_of_work() -> None:
    async def main() -> None:
        releases: list[float] = []
        idle = IdleMemoryRelease(after_s=0.2, release=lambda: releases.append(time.monotonic()))
        watch = asyncio.create_task(idle.watch())
        await asyncio.sleep(0.3)
        assert releases == []  # nothing done yet
        idle.started()
        await asyncio.sleep(0.4)
        assert releases == []  # still working
        idle.ended()
        await asyncio.sleep(0.1)
        idle.started()  # more work within the idle time puts it off
        idle.ended()
        ended = time.monotonic()
        await asyncio.sleep(0.5)
        assert len(releases) == 1 and releases[0] - ended >= 0.2
        await asyncio.sleep(0.4)
        assert len(releases) == 1 and idle.releases == 1  # once, until there is work again
        watch.cancel()

    asyncio.run(main())


def test_work_outside_rpcs_is_released_after_it_too() -> None:
    async def main() -> None:
        releases: list[float] = []
        idle = IdleMemoryRelease(after_s=0.2, release=lambda: releases.append(time.monotonic()))
        watch = asyncio.create_task(idle.watch())
        await asyncio.sleep(0.1)
        idle.worked()  # a warm-up ended
        ended = time.monotonic()
        await asyncio.sleep(0.5)
        assert len(releases) == 1 and releases[0] - ended >= 0.2
        watch.cancel()

    asyncio.run(main())


def test_health_probes_reflection_and_status_are_not_work() -> None:
    assert IdleMemoryRelease.is_work("/subtitler.asr.v1.AsrService/Transcribe")
    assert not IdleMemoryRelease.is_work("/grpc.health.v1.Health/Check")
    assert not IdleMemoryRelease.is_work("/grpc.reflection.v1alpha.ServerReflection/ServerReflectionInfo")
    assert not IdleMemoryRelease.is_work("/subtitler.status.v1.StatusService/GetStatus")

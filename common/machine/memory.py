"""glibc malloc tuned for model serving, applied through `mallopt` at start,
before the service's threads exist.

One arena. glibc gives each thread that allocates at once an arena of its
own (up to 8 per core), and memory freed in one is not reused by another:
the services' threads (gRPC's, the model workers', the executors') then hold
far more than they use. Worse for speed, an arena other than the main one
grows in heaps of at most 64 MiB, so a larger block in a model worker's
thread is a fresh `mmap` every time.

Freed memory kept. CTranslate2 allocates its buffers per call: a Whisper
encoder's attention scores are 54 MB a 30 s chunk, a beam search's
cross-attention cache 18 MB a beam. glibc's defaults hand blocks that large
back to the kernel when they are freed (`mmap` above 128 KiB-32 MiB, a
trimmed heap top), and every page of the next call's buffers is then
faulted in and zeroed again: on this project's bench that was about a
million page faults and a second of system time a 10-minute job, and the
ASR decoded 10-20% slower (`bench/end_to_end.py`). Blocks up to `SUBTITLER_MALLOC_KEEP_BYTES` now come from
the heap and up to as much free memory stays at its top; a service that
goes idle hands it back (`IdleMemoryRelease`), also once it has loaded its
models and warmed up: the warm-up's freed buffers (about 200 MB in the ASR,
90 MB in align) otherwise stayed until its first request.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

from common.config import env_int_or_default

logger = logging.getLogger(__name__)

# mallopt's parameters (glibc's malloc.h).
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3
_M_ARENA_MAX = -8
DEFAULT_MALLOC_ARENAS = 1
# Above the largest buffer CTranslate2 allocates for tiny-medium Whisper on a CPU batch of up to 8 chunks
# encoded one at a time (an encoder's attention scores, 54 MB; a layer's cross-attention cache, 18 MB a beam).
DEFAULT_MALLOC_KEEP_BYTES = 256 * 1024 * 1024
ARENAS_SETTING = "SUBTITLER_MALLOC_ARENAS"
KEEP_SETTING = "SUBTITLER_MALLOC_KEEP_BYTES"


@dataclass(frozen=True)
class MallocSettings:
    """What `tune_malloc` applied; None for a setting it left to glibc."""

    arenas: int | None
    keep_bytes: int | None


def _libc_function(name: str) -> Callable[..., int] | None:
    try:
        return cast(Callable[..., int], getattr(ctypes.CDLL(None), name))
    except (OSError, AttributeError):
        return None  # not glibc (musl, macOS)


def tune_malloc(env: Mapping[str, str]) -> MallocSettings:
    """Applies SUBTITLER_MALLOC_ARENAS (default 1) and
    SUBTITLER_MALLOC_KEEP_BYTES (default 256 MiB); 0 leaves either to glibc,
    and glibc's own MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ /
    MALLOC_TRIM_THRESHOLD_ win when set. Never fails: on another C library
    nothing is applied."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return MallocSettings(None, None)
    arenas = env_int_or_default(env, ARENAS_SETTING, DEFAULT_MALLOC_ARENAS)
    glibc_arenas = bool(env.get("MALLOC_ARENA_MAX", "").strip())
    arenas_applied = not glibc_arenas and arenas > 0 and mallopt(_M_ARENA_MAX, arenas) == 1
    keep = env_int_or_default(env, KEEP_SETTING, DEFAULT_MALLOC_KEEP_BYTES)
    glibc_keep = any(env.get(name, "").strip() for name in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
    keep_applied = (
        not glibc_keep and keep > 0 and mallopt(_M_MMAP_THRESHOLD, keep) == 1 and mallopt(_M_TRIM_THRESHOLD, keep) == 1
    )
    return MallocSettings(arenas if arenas_applied else None, keep if keep_applied else None)


def release_free_memory() -> bool:
    """Hands the free memory malloc keeps back to the kernel (glibc's
    `malloc_trim`); True when some was. For a service that has gone idle."""
    trim = _libc_function("malloc_trim")
    return bool(trim(0)) if trim is not None else False


# Seconds without work after which a service hands back the memory malloc keeps.
IDLE_RELEASE_AFTER_S = 10.0
# RPCs that are not work: health probes, reflection and status come at any time.
_NOT_WORK_PREFIXES = ("/grpc.health.", "/grpc.reflection.", "/subtitler.status.")


class IdleMemoryRelease:
    """Hands the memory malloc keeps back (`release_free_memory`) once a
    service has had no RPC of its own running for `after_s`, once per spell
    of work: the freed buffers of the last batch are reused while work goes
    on, and do not stay with an idle service.

    `started`/`ended` are called around every RPC (the server's interceptor),
    `worked` after work outside RPCs (a service's loading and warm-up);
    `watch` runs as a background task. Used from one event loop."""

    def __init__(
        self, after_s: float = IDLE_RELEASE_AFTER_S, release: Callable[[], object] = release_free_memory
    ) -> None:
        self._after_s = after_s
        self._release = release
        self._running = 0
        self._last_end = 0.0
        self._worked = False
        self.releases = 0

    @staticmethod
    def is_work(method: str) -> bool:
        """Whether an RPC (its full name, "/package.Service/Method") is work."""
        return not method.startswith(_NOT_WORK_PREFIXES)

    def started(self) -> None:
        self._running += 1
        self._worked = True

    def worked(self) -> None:
        """Work outside any RPC (loading models, a warm-up) has just ended."""
        self._worked = True
        self._last_end = time.monotonic()

    def ended(self) -> None:
        self._running -= 1
        self._last_end = time.monotonic()

    def due(self) -> bool:
        """Work was done, none runs, and none has for `after_s`."""
        return self._worked and not self._running and time.monotonic() - self._last_end >= self._after_s

    async def watch(self) -> None:
        """Releases whenever `due`; never returns (cancel it)."""
        while True:
            await asyncio.sleep(self._after_s / 4)
            if self.due():
                self._worked = False
                self.releases += 1
                await asyncio.to_thread(self._release)

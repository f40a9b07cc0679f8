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
goes idle hands it back (`release_free_memory`).
"""

from __future__ import annotations

import ctypes
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import cast

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


def _setting(env: Mapping[str, str], name: str, default: int) -> int:
    text = env.get(name, "").strip()
    try:
        return int(text) if text else default
    except ValueError:
        logger.warning("%s=%r is not a whole number; using %d", name, text, default)
        return default


def tune_malloc(env: Mapping[str, str]) -> MallocSettings:
    """Applies SUBTITLER_MALLOC_ARENAS (default 1) and
    SUBTITLER_MALLOC_KEEP_BYTES (default 256 MiB); 0 leaves either to glibc,
    and glibc's own MALLOC_ARENA_MAX / MALLOC_MMAP_THRESHOLD_ /
    MALLOC_TRIM_THRESHOLD_ win when set. Never fails: on another C library
    nothing is applied."""
    mallopt = _libc_function("mallopt")
    if mallopt is None:
        return MallocSettings(None, None)
    arenas = _setting(env, ARENAS_SETTING, DEFAULT_MALLOC_ARENAS)
    glibc_arenas = bool(env.get("MALLOC_ARENA_MAX", "").strip())
    arenas_applied = not glibc_arenas and arenas > 0 and mallopt(_M_ARENA_MAX, arenas) == 1
    keep = _setting(env, KEEP_SETTING, DEFAULT_MALLOC_KEEP_BYTES)
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

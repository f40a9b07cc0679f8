"""Bounded concurrency for a service's model calls: a fixed number running at
once, a small queue, and a clear refusal beyond it.

Whisper on CPU uses every core for one transcription; running two at once
only makes both slower, and the VAD and align services likewise bound their
CPU-heavy work. Callers beyond the queue get `ResourceExhaustedError` with a
retry delay (RESOURCE_EXHAUSTED and a `retry-after-s` trailer) instead of
waiting for minutes on a deadline.

A servicer holds a slot while its model call runs in an executor::

    async with admission.slot():
        result = await run_blocking(executor, call)

`run_blocking` keeps the slot, and whatever the call reads, until the call has
returned, even when the RPC is cancelled meanwhile.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import TypeVar

from common.errors import ResourceExhaustedError

_Result = TypeVar("_Result")


class AdmissionLimit:
    """At most `max_running` holders at once and `max_waiting` waiting.

    `work_name` names what is limited ("transcriptions") in the refusal.
    Used from one event loop only (no locking needed).
    """

    def __init__(self, max_running: int, max_waiting: int, retry_after_s: float, *, work_name: str) -> None:
        if max_running < 1 or max_waiting < 0:
            raise ValueError("max_running must be at least 1 and max_waiting not negative")
        self.max_running = max_running
        self.max_waiting = max_waiting
        self.retry_after_s = retry_after_s
        self.work_name = work_name
        self._slots = asyncio.Semaphore(max_running)
        self._running = 0
        self._waiting = 0

    @property
    def running(self) -> int:
        return self._running

    @property
    def waiting(self) -> int:
        return self._waiting

    @contextlib.asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Holds a slot for the body; raises `ResourceExhaustedError` at once
        when every slot is taken and the queue is full."""
        if self._slots.locked() and self._waiting >= self.max_waiting:
            raise ResourceExhaustedError(
                f"busy: {self._running} {self.work_name} running and {self._waiting} waiting; "
                f"retry in {self.retry_after_s:g} s",
                retry_after_s=self.retry_after_s,
            )
        self._waiting += 1
        try:
            await self._slots.acquire()
        finally:
            self._waiting -= 1
        self._running += 1
        try:
            yield
        finally:
            self._running -= 1
            self._slots.release()


async def run_blocking(
    executor: Executor | None, call: Callable[[], _Result], *, on_cancel: Callable[[], None] | None = None
) -> _Result:
    """Runs `call` in `executor` (None: the loop's default) and returns its result.

    If the awaiting task is cancelled meanwhile, calls `on_cancel` (e.g. to
    ask the engine to stop early), waits for `call` to return, and then
    re-raises the cancellation: the caller's slot and the audio `call` reads
    are given back only once no thread uses them.
    """
    future = asyncio.get_running_loop().run_in_executor(executor, call)
    try:
        return await asyncio.shield(future)
    except asyncio.CancelledError:
        if on_cancel is not None:
            on_cancel()
        while not future.done():
            try:
                await asyncio.wait([future])
            except asyncio.CancelledError:
                continue
        raise

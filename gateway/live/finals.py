"""The finals of one live stream in flight: each decodes on its own, but they
are sent in the order they were made, and at most `MAX_PENDING_FINALS` wait
(a client sending faster than real time then waits too)."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

from gateway.live.decoder import Hypothesis

MAX_PENDING_FINALS = 4


async def resolved(hypothesis: Hypothesis) -> Hypothesis | None:
    """A final's hypothesis already known, as a decode that is done."""
    return hypothesis


class FinalChain:
    """Finals sent in order: a final whose decode ends first still waits for
    the ones before it."""

    def __init__(self, on_done: Callable[[asyncio.Task[None]], None]) -> None:
        # Told of every final's task when it ends (to keep its error).
        self._on_done = on_done
        self._tasks: list[asyncio.Task[None]] = []
        self._last: asyncio.Task[None] | None = None

    @property
    def pending(self) -> bool:
        """Whether a final is still to be sent (its text is not known yet)."""
        return self._last is not None and not self._last.done()

    def add(self, decoding: Awaitable[Hypothesis | None], send: Callable[[Hypothesis], None]) -> None:
        """A final: `send` gets its hypothesis (unless None) once `decoding`
        gives it and every final before it is sent."""
        previous = self._last

        async def run() -> None:
            hypothesis = await decoding
            if previous is not None:
                await previous
            if hypothesis is not None:
                send(hypothesis)

        task = asyncio.get_running_loop().create_task(run())
        task.add_done_callback(self._on_done)
        self._tasks.append(task)
        self._last = task

    async def bound(self) -> None:
        """Waits while more than `MAX_PENDING_FINALS` finals are in flight."""
        self._tasks = [task for task in self._tasks if not task.done()]
        while len(self._tasks) > MAX_PENDING_FINALS:
            await asyncio.shield(self._tasks[0])
            self._tasks = [task for task in self._tasks if not task.done()]

    async def wait(self) -> None:
        """Waits until every final so far is sent."""
        if self._last is not None:
            await self._last

    def unfinished(self) -> list[asyncio.Task[None]]:
        """The finals' tasks still running (to cancel them)."""
        return [task for task in self._tasks if not task.done()]

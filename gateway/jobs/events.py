"""Job events: stored with a sequence number, then fanned out to watchers."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable

from common.errors import ResourceExhaustedError
from common.rpc.convert import epoch_to_timestamp
from gateway.records import JobRecord, JobState
from gateway.store.async_store import AsyncJobStore
from subtitler.gateway.v1 import gateway_pb2


class EventHub:
    """Publishes a job's events: each is stored first (so a watcher that comes
    later replays it), then handed to the live watchers of that job."""

    def __init__(
        self, store: AsyncJobStore, *, max_watchers: int = 1000, retry_after_s: float = 5.0, poll_s: float | None = None
    ) -> None:
        """`max_watchers`: watch streams open at once over all jobs; more are
        refused (RESOURCE_EXHAUSTED with `retry_after_s`). `poll_s`: on a
        store that other gateways share, how often a watcher reads the store
        for events another gateway published even when it heard of none
        (see `listen`; None: only this one writes)."""
        self._store = store
        self._poll_s = poll_s
        # Each watcher's queue: events this gateway published, or None when
        # another gateway stored one (the watcher reads it from the store).
        self._watchers: dict[str, set[asyncio.Queue[gateway_pb2.JobEvent | None]]] = defaultdict(set)
        self._stop_listening: Callable[[], Awaitable[None]] | None = None
        self.max_watchers = max_watchers
        self._retry_after_s = retry_after_s
        self._watcher_count = 0

    @staticmethod
    def make(
        job: JobRecord, *, state_changed: bool = False, previous_state: JobState | None = None, **detail: object
    ) -> gateway_pb2.JobEvent:
        """An event of `job`, not stored yet: its state and progress now, and
        one `detail`. A `state_changed` event says which state the job left
        (`previous_state`; None for a new job)."""
        event = gateway_pb2.JobEvent(
            event_time=epoch_to_timestamp(time.time()),
            job_id=job.job_id,
            state=int(job.state),  # type: ignore[arg-type]
            progress=job.overall_progress(),
            **detail,  # type: ignore[arg-type]
        )
        if state_changed:
            event.state_changed = True
            event.previous_state = int(previous_state or 0)  # type: ignore[assignment]
        return event

    async def publish(
        self,
        job: JobRecord,
        *,
        state_changed: bool = False,
        previous_state: JobState | None = None,
        **detail: object,
    ) -> gateway_pb2.JobEvent:
        """Stores an event of `job` (see `make`) and hands it to the job's
        watchers. LeaseLostError: another gateway runs the job now."""
        event = self.make(job, state_changed=state_changed, previous_state=previous_state, **detail)
        stored = await self._store.append_event(event)
        self.deliver(stored)
        return stored

    async def publish_queue_position(self, job: JobRecord) -> None:
        """Publishes a waiting job's place in the queue, unless a gateway has
        taken the job meanwhile or that place was published already."""
        event = self.make(job)
        stored = await self._store.publish_queue_position(event)
        if stored is not None:
            self.deliver(stored)

    async def listen(self) -> None:
        """On a shared store, wakes this gateway's watchers of a job as soon
        as another gateway stores one of its events (PostgreSQL's
        LISTEN/NOTIFY)."""
        loop = asyncio.get_running_loop()

        def heard(job_id: str) -> None:
            with contextlib.suppress(RuntimeError):  # the loop has closed: nobody is watching
                loop.call_soon_threadsafe(self._wake_watchers, job_id)

        self._stop_listening = await self._store.listen_for_events(heard)

    async def close(self) -> None:
        """Stops listening for other gateways' events (see `listen`)."""
        if self._stop_listening is not None:
            stop, self._stop_listening = self._stop_listening, None
            await stop()

    def _wake_watchers(self, job_id: str) -> None:
        for queue in self._watchers.get(job_id, ()):
            queue.put_nowait(None)

    def deliver(self, event: gateway_pb2.JobEvent) -> None:
        """Hands a stored event to its job's live watchers on this gateway."""
        for queue in self._watchers.get(event.job_id, ()):
            queue.put_nowait(event)

    async def watch(self, job_id: str, after_sequence: int = 0) -> AsyncIterator[gateway_pb2.JobEvent]:
        """Every stored event after `after_sequence`, then live ones, until the
        job's final state. Each event is yielded once, in sequence order.
        `ResourceExhaustedError` when `max_watchers` streams are open."""
        if self._watcher_count >= self.max_watchers:
            raise ResourceExhaustedError(
                f"{self._watcher_count} watch streams are open, the most this gateway keeps; "
                f"retry in {self._retry_after_s:g} s, or poll GetJob",
                retry_after_s=self._retry_after_s,
            )
        queue: asyncio.Queue[gateway_pb2.JobEvent | None] = asyncio.Queue()
        self._watchers[job_id].add(queue)
        self._watcher_count += 1
        try:
            last = after_sequence
            for event in await self._store.events_after(job_id, after_sequence):
                last = event.sequence
                yield event
                if _is_final(event):
                    return
            job = await self._store.get_job(job_id)
            if job.state.finished:
                # It finished while we replayed: its last events are stored.
                for event in await self._store.events_after(job_id, last):
                    yield event
                return
            while True:
                heard: gateway_pb2.JobEvent | None = None
                with contextlib.suppress(TimeoutError):
                    heard = await asyncio.wait_for(queue.get(), self._poll_s)
                if heard is None:
                    # Another gateway may be running the job: read what it
                    # stored, once for every notice waiting (the events among
                    # them are read again from the store, then skipped).
                    waiting = [queue.get_nowait() for _ in range(queue.qsize())]
                    for item in waiting:
                        if item is not None:
                            queue.put_nowait(item)
                    batch = await self._store.events_after(job_id, last)
                elif heard.sequence <= last:
                    if _is_final(heard):
                        return  # asked for events after the last one: the job has ended
                    continue
                else:
                    # Normally the next one; after a gap (events published
                    # concurrently), the stored ones fill it in order.
                    batch = [heard] if heard.sequence == last + 1 else await self._store.events_after(job_id, last)
                for item in batch:
                    last = item.sequence
                    yield item
                    if _is_final(item):
                        return
        finally:
            self._watcher_count -= 1
            self._watchers[job_id].discard(queue)
            if not self._watchers[job_id]:
                del self._watchers[job_id]


def _is_final(event: gateway_pb2.JobEvent) -> bool:
    return event.state in (
        gateway_pb2.JOB_STATE_SUCCEEDED,
        gateway_pb2.JOB_STATE_FAILED,
        gateway_pb2.JOB_STATE_CANCELLED,
    )

"""The gateway-wide slots of Transcribe calls, sized from the ASR status."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from gateway.asr_capacity import CALLS_PER_WORKER, AsrCapacity
from subtitler.status.v1 import status_pb2


class FakeStatus:
    """A StatusService stub answering with fixed figures, or failing."""

    def __init__(self, capacity: int, batch: int, fail: bool = False) -> None:
        self.reply = status_pb2.GetStatusResponse(capacity=capacity, preferred_batch_size=batch)
        self.fail = fail
        self.calls = 0

    async def GetStatus(
        self,
        request: status_pb2.GetStatusRequest,
        timeout: float,  # noqa: ASYNC109 - the gRPC stub's signature
    ) -> status_pb2.GetStatusResponse:
        self.calls += 1
        if self.fail:
            raise grpc.aio.AioRpcError(grpc.StatusCode.UNAVAILABLE, grpc.aio.Metadata(), grpc.aio.Metadata(), "down")
        return self.reply


def test_capacity_is_workers_per_replica_times_replicas() -> None:
    async def run() -> None:
        status = FakeStatus(capacity=2, batch=4)
        capacity = AsrCapacity(status, replica_count=3)  # type: ignore[arg-type]
        figures = await capacity.refresh()
        assert (figures.workers, figures.preferred_batch_size) == (6, 4)
        assert capacity.max_in_flight == 6 * CALLS_PER_WORKER * 4  # in chunks: two full batches a worker
        await capacity.refresh()
        assert status.calls == 1  # asked again only after the refresh interval

    asyncio.run(run())


def test_a_failed_ask_keeps_the_last_figures() -> None:
    async def run() -> None:
        status = FakeStatus(capacity=2, batch=4)
        capacity = AsrCapacity(status, replica_count=1, refresh_interval_s=0.0)  # type: ignore[arg-type]
        await capacity.refresh()
        status.fail = True
        figures = await capacity.refresh()
        assert (figures.workers, figures.preferred_batch_size) == (2, 4)

    asyncio.run(run())


def test_operator_figures_win_over_the_asr_s_and_its_measure_is_still_read() -> None:
    async def run() -> None:
        status = FakeStatus(capacity=8, batch=16)
        status.reply.measured_capacity.live_decode_s = 0.25
        status.reply.measured_capacity.audio_seconds_per_second = 60.0
        capacity = AsrCapacity(status, replica_count=2, fixed_workers=3, fixed_batch_size=2)  # type: ignore[arg-type]
        figures = await capacity.refresh()
        assert (figures.workers, figures.preferred_batch_size) == (3, 2)
        # (Both replicas together transcribe twice what one measured.)
        assert (figures.live_decode_s, figures.audio_seconds_per_second) == (0.25, 120.0)

    asyncio.run(run())


@pytest.mark.parametrize(
    ("requested", "default", "preferred", "expected"),
    [(8, 0, 4, 4), (2, 0, 4, 2), (0, 0, 4, 4), (0, 6, 4, 4), (0, 3, 4, 3), (8, 0, 0, 8), (0, 0, 0, 1)],
)
def test_batch_size_is_capped_by_the_preference(requested: int, default: int, preferred: int, expected: int) -> None:
    capacity = AsrCapacity(None, replica_count=1, fixed_batch_size=preferred)
    assert capacity.batch_size(requested, default) == expected


def test_slots_bound_calls_in_flight_and_go_in_arrival_order() -> None:
    async def run() -> None:
        capacity = AsrCapacity(None, replica_count=1, fixed_workers=1)  # two slots
        await capacity.acquire()
        await capacity.acquire()
        order: list[str] = []

        async def take(name: str) -> None:
            await capacity.acquire()
            order.append(name)

        first = asyncio.create_task(take("first"))
        await asyncio.sleep(0)
        second = asyncio.create_task(take("second"))
        await asyncio.sleep(0.01)
        assert order == [] and capacity.in_flight == 2
        capacity.release()
        await asyncio.sleep(0.01)
        assert order == ["first"]
        capacity.release()
        await asyncio.wait_for(asyncio.gather(first, second), 1.0)
        assert order == ["first", "second"] and capacity.in_flight == 2

    asyncio.run(run())


def test_a_cancelled_waiter_gives_its_turn_on() -> None:
    async def run() -> None:
        capacity = AsrCapacity(None, replica_count=1, fixed_workers=1)
        await capacity.acquire()
        await capacity.acquire()
        cancelled = asyncio.create_task(capacity.acquire())
        waiting = asyncio.create_task(capacity.acquire())
        await asyncio.sleep(0.01)
        cancelled.cancel()
        # Released before the cancelled task runs again: the slot passes over it.
        capacity.release()
        await asyncio.wait_for(waiting, 1.0)
        assert capacity.in_flight == 2
        # It ends cancelled (it once raised ValueError, failing its job).
        with pytest.raises(asyncio.CancelledError):
            await cancelled

    asyncio.run(run())


def test_slots_count_chunks_so_short_calls_fill_the_batches_long_ones_would() -> None:
    async def run() -> None:
        capacity = AsrCapacity(None, replica_count=1, fixed_workers=1, fixed_batch_size=4)  # eight chunks
        # Long job: two calls of four chunks fill the slots.
        for _ in range(2):
            await capacity.acquire()
            capacity.extend(3)
        assert (capacity.in_flight, capacity.chunks_in_flight) == (2, 8)
        third = asyncio.ensure_future(capacity.acquire())
        await asyncio.sleep(0)
        assert not third.done()
        capacity.release(4)
        await third
        capacity.release()
        capacity.release(4)
        assert (capacity.in_flight, capacity.chunks_in_flight) == (0, 0)
        # Short clips: eight one-chunk calls at once, for the ASR to decode in two batches.
        for _ in range(8):
            await asyncio.wait_for(capacity.acquire(), 1)
        assert capacity.in_flight == 8

    asyncio.run(run())

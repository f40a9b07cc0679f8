"""gateway.live.admission: live streams admitted up to what the ASR's
measured decode time holds, refused at once beyond it or while behind."""

from __future__ import annotations

import asyncio

import pytest

from common.errors import ResourceExhaustedError
from gateway.asr_capacity import AsrCapacity
from gateway.config import LiveConfig
from gateway.live.admission import LIVE_LOAD, StreamAdmission
from subtitler.status.v1 import status_pb2


class MeasuredStatus:
    """An ASR status stub with a measured live decode time."""

    def __init__(self, workers: int, live_decode_s: float) -> None:
        self.reply = status_pb2.GetStatusResponse(
            capacity=workers,
            preferred_batch_size=8,
            measured_capacity=status_pb2.MeasuredCapacity(live_decode_s=live_decode_s, source="warm-up"),
        )

    async def GetStatus(
        self,
        request: status_pb2.GetStatusRequest,
        timeout: float,  # noqa: ASYNC109 - the gRPC stub's signature
    ) -> status_pb2.GetStatusResponse:
        return self.reply


class Behind:
    """A live decoder whose oldest request has waited `oldest_wait_s`."""

    def __init__(self, pressure: float = 0.0) -> None:
        self.pressure = pressure
        self.oldest_wait_s = pressure * 0.6


def admission(status: MeasuredStatus, decoder: Behind, max_streams: int = 0) -> StreamAdmission:
    capacity = AsrCapacity(status, replica_count=1, refresh_interval_s=0.0)  # type: ignore[arg-type]
    return StreamAdmission(capacity, decoder, LiveConfig(max_streams=max_streams, retry_after_s=3.0))  # type: ignore[arg-type]


@pytest.mark.parametrize("decode_s", [0.1, 0.25, 0.6])
def test_streams_are_admitted_up_to_the_measured_limit_then_refused_with_a_retry_hint(decode_s: float) -> None:
    async def run() -> None:
        gate = admission(MeasuredStatus(workers=2, live_decode_s=decode_s), Behind())
        expected = LIVE_LOAD.streams(2, decode_s)
        limit = await gate.limit()
        assert limit.streams == expected and "measured" in limit.reason
        for open_streams in range(expected):
            await gate.check(open_streams)
        with pytest.raises(ResourceExhaustedError) as refused:
            await gate.check(expected)
        assert refused.value.retry_after_s == 3.0
        assert f"holds {expected} live streams" in str(refused.value)

    asyncio.run(run())


def test_a_slower_machine_holds_fewer_streams_with_no_setting_changed() -> None:
    async def run() -> None:
        fast = await admission(MeasuredStatus(2, 0.15), Behind()).limit()
        slow = await admission(MeasuredStatus(2, 0.6), Behind()).limit()
        assert fast.streams > slow.streams >= 1

    asyncio.run(run())


def test_the_operator_s_limit_wins_and_any_new_stream_waits_while_the_open_ones_are_behind() -> None:
    async def run() -> None:
        gate = admission(MeasuredStatus(2, 0.15), Behind(), max_streams=2)
        assert (await gate.limit()).streams == 2
        await gate.check(1)
        with pytest.raises(ResourceExhaustedError, match="SUBTITLER_GATEWAY_MAX_STREAMS"):
            await gate.check(2)
        behind = admission(MeasuredStatus(2, 0.15), Behind(pressure=2.5))
        with pytest.raises(ResourceExhaustedError, match="behind"):
            await behind.check(0)

    asyncio.run(run())


def test_before_the_asr_has_measured_anything_each_worker_holds_one_stream() -> None:
    async def run() -> None:
        limit = await admission(MeasuredStatus(2, 0.0), Behind()).limit()
        assert limit.streams == 2 and "not measured" in limit.reason

    asyncio.run(run())


def test_the_decodes_a_stream_needs_are_measured_on_the_streams_served() -> None:
    async def run() -> None:
        gate = admission(MeasuredStatus(2, 0.2), Behind())
        before = (await gate.limit()).streams
        # Long continuous speech: twice the decodes a second the default assumes, for minutes.
        for _ in range(30):
            gate.observe(20.0, 20)
        assert gate.decodes_per_stream_s == pytest.approx(1.0, rel=0.2)
        after = await gate.limit()
        assert after.streams < before and "decodes a second a stream" in after.reason

    asyncio.run(run())

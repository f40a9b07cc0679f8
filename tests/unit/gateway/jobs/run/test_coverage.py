"""The coverage check's second look against a fake ASR stub: what it finds
inside the windows is merged into the chunk, within the ASR slots, and a look
that fails keeps the first pass."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from common.limits import MAX_CHUNKS_PER_REQUEST
from common.rpc.convert import segment_to_proto, time_range_from_proto
from common.transcript import Segment, TimeRange
from gateway.asr_capacity import AsrCapacity
from gateway.jobs.run.coverage import SecondLook
from gateway.store.job_store import JobStore
from subtitler.asr.v1 import asr_pb2
from tests.unit.gateway.jobs.job_fakes import decoded_run, new_job, rpc_error


class LookingAsr:
    """An AsrService stub that finds one segment in each window, and one
    that starts before it; or that refuses every call (`refuse`)."""

    def __init__(self, capacity: AsrCapacity, refuse: bool = False) -> None:
        self.capacity = capacity
        self.refuse = refuse
        self.calls: list[list[TimeRange]] = []
        self.chunks_in_flight: list[int] = []

    def Transcribe(self, request: asr_pb2.TranscribeRequest, **_: Any) -> Any:
        windows = [time_range_from_proto(item) for item in request.chunks]
        self.calls.append(windows)
        self.chunks_in_flight.append(self.capacity.chunks_in_flight)

        async def stream() -> Any:
            if self.refuse:
                raise rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "no")
            for position, window in enumerate(windows):
                found = [
                    Segment("Found.", window.start_s + 0.1, window.end_s, avg_logprob=-0.2),
                    Segment("Before.", window.start_s - 5.0, window.start_s - 4.0, avg_logprob=-0.2),
                ]
                yield asr_pb2.TranscribeResponse(chunk_index=position, segments=[segment_to_proto(s) for s in found])

        return stream()


FIRST_PASS = [Segment("First.", 0.0, 2.0, chunk_index=4), Segment("Last.", 8.0, 9.0, chunk_index=4)]


def test_what_the_windows_hold_is_merged_into_the_chunk(store: JobStore) -> None:
    job = new_job(store)
    capacity = AsrCapacity(None, replica_count=1)
    asr = LookingAsr(capacity)

    async def run() -> list[Segment]:
        look = SecondLook(await decoded_run(store, job), asr, capacity)  # type: ignore[arg-type]
        return await look.look_again(4, FIRST_PASS, [TimeRange(3.0, 7.0)], asr_pb2.TranscriptionOptions())

    merged = asyncio.run(run())
    assert [(segment.text, segment.chunk_index) for segment in merged] == [
        ("First.", 4),
        ("Found.", 4),
        ("Last.", 4),
    ]
    # The window counted in the ASR slots while it was looked at, and given back after.
    assert asr.chunks_in_flight == [1] and capacity.chunks_in_flight == 0


def test_many_windows_go_in_calls_of_at_most_the_request_s_chunks(store: JobStore) -> None:
    job = new_job(store)
    capacity = AsrCapacity(None, replica_count=1)
    asr = LookingAsr(capacity)
    windows = [TimeRange(index * 10.0, index * 10.0 + 5.0) for index in range(MAX_CHUNKS_PER_REQUEST + 3)]

    async def run() -> list[Segment]:
        look = SecondLook(await decoded_run(store, job), asr, capacity)  # type: ignore[arg-type]
        return await look.look_again(0, [], windows, asr_pb2.TranscriptionOptions())

    merged = asyncio.run(run())
    assert [len(call) for call in asr.calls] == [MAX_CHUNKS_PER_REQUEST, 3]
    assert len(merged) == len(windows)


def test_a_look_that_fails_keeps_the_first_pass(store: JobStore) -> None:
    job = new_job(store)
    capacity = AsrCapacity(None, replica_count=1)
    asr = LookingAsr(capacity, refuse=True)

    async def run() -> list[Segment]:
        look = SecondLook(await decoded_run(store, job), asr, capacity)  # type: ignore[arg-type]
        return await look.look_again(4, FIRST_PASS, [TimeRange(3.0, 7.0)], asr_pb2.TranscriptionOptions())

    assert asyncio.run(run()) == FIRST_PASS
    assert capacity.chunks_in_flight == 0

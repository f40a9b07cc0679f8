"""A job's whole pipeline against fake stubs and a real SQLite store: the
coverage check's second look goes out while the rest of its call streams,
and what it found is kept when the call then fails."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from common.rpc.convert import segment_to_proto, time_range_from_proto
from common.rpc.server import ServerConfig
from common.transcript import Segment, TimeRange
from gateway.asr_capacity import AsrCapacity
from gateway.config import GatewayConfig
from gateway.jobs.events import EventHub
from gateway.jobs.run.pipeline import JobPipeline, Peers
from gateway.store.async_store import AsyncJobStore
from gateway.store.job_store import JobStore
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2
from tests.unit.gateway.jobs.job_fakes import FAST, FakeAudio, new_job, rpc_error


class SkippingAsr:
    """An AsrService stub whose first pass leaves a hole in chunk 0's speech
    and streams chunk 1 only once the second look at that hole has come."""

    def __init__(self, chunks: list[TimeRange]) -> None:
        self.chunks = chunks
        self.looked_at: list[list[TimeRange]] = []
        self.look_came = asyncio.Event()

    def Transcribe(self, request: asr_pb2.TranscribeRequest, **_: Any) -> Any:
        ranges = [time_range_from_proto(item) for item in request.chunks]

        async def first_pass() -> Any:
            for position, chunk in enumerate(ranges):
                index = request.first_chunk_index + position
                if index == 1:
                    await asyncio.wait_for(self.look_came.wait(), timeout=5.0)
                # Chunk 0's words end 4 s before it does: speech Whisper skipped.
                end_s = chunk.end_s - (4.0 if index == 0 else 0.0)
                yield asr_pb2.TranscribeResponse(
                    chunk_index=index,
                    language_code="en",
                    segments=[segment_to_proto(Segment(f"Chunk {index}.", chunk.start_s, end_s, chunk_index=index))],
                )

        async def second_look() -> Any:
            self.looked_at.append(ranges)
            self.look_came.set()
            for position, window in enumerate(ranges):
                yield asr_pb2.TranscribeResponse(
                    chunk_index=position,
                    segments=[
                        segment_to_proto(Segment("Found.", window.start_s + 0.5, window.end_s, avg_logprob=-0.2))
                    ],
                )

        return first_pass() if ranges == self.chunks[request.first_chunk_index :][: len(ranges)] else second_look()


LOOKED_AT_CHUNKS = [TimeRange(0.0, 10.0), TimeRange(10.0, 20.0)]


def run_detected_job(store: JobStore, asr: SkippingAsr) -> list[Segment]:
    """A job whose speech was detected before (a resumed job: both of
    `LOOKED_AT_CHUNKS` go in one Transcribe call), run against `asr`."""
    job = new_job(
        store,
        config=gateway_pb2.JobConfig(
            transcription=asr_pb2.TranscriptionOptions(language_code="en", batch_size=2), skip_alignment=True
        ),
    )
    for index, chunk in enumerate(LOOKED_AT_CHUNKS):
        speech = [TimeRange(chunk.start_s, chunk.end_s - 4.0), TimeRange(chunk.end_s - 4.0, chunk.end_s)]
        store.save_speech_chunk(job.job_id, index, chunk, speech)
    store.mark_detection_complete(job.job_id)
    peers = Peers(
        audio=FakeAudio(),  # type: ignore[arg-type]
        vad=None,  # type: ignore[arg-type]
        asr=asr,  # type: ignore[arg-type]
        align=None,  # type: ignore[arg-type]
        asr_capacity=AsrCapacity(None, replica_count=1),
    )
    config = GatewayConfig(server=ServerConfig(), retry=FAST)
    facade = AsyncJobStore(store)
    pipeline = JobPipeline(job, peers, facade, EventHub(facade), config, store.checkpoint(job.job_id))
    return asyncio.run(pipeline.run())


def test_a_second_look_goes_out_while_the_rest_of_its_call_streams(store: JobStore) -> None:
    asr = SkippingAsr(LOOKED_AT_CHUNKS)
    segments = run_detected_job(store, asr)
    # The look at chunk 0's last 4 s went out while chunk 1 was still to come
    # in the same Transcribe call (a look sent after the call's end would never be).
    assert asr.looked_at == [[TimeRange(6.0, 10.0)]]
    assert [(segment.text, segment.chunk_index) for segment in segments] == [
        ("Chunk 0.", 0),
        ("Found.", 0),
        ("Chunk 1.", 1),
    ]


class BreakingAsr(SkippingAsr):
    """A SkippingAsr whose first call breaks off (ABORTED) after chunk 0."""

    def __init__(self, chunks: list[TimeRange]) -> None:
        super().__init__(chunks)
        self.first_passes: list[int] = []

    def Transcribe(self, request: asr_pb2.TranscribeRequest, **_: Any) -> Any:
        stream = super().Transcribe(request)
        if len(request.chunks) == 1 and request.first_chunk_index == 0:
            return stream  # the look
        self.first_passes.append(request.first_chunk_index)

        async def breaking() -> Any:
            async for response in stream:
                yield response
                if len(self.first_passes) == 1:
                    raise rpc_error(grpc.StatusCode.ABORTED, "the ASR restarted")

        return breaking()


def test_a_chunk_looked_at_again_is_kept_when_its_call_then_fails(store: JobStore) -> None:
    asr = BreakingAsr(LOOKED_AT_CHUNKS)
    asr.look_came.set()  # chunk 1 need not wait for the look
    segments = run_detected_job(store, asr)
    # The retry asks for chunk 1 only: chunk 0 came, was looked at again once, and is kept.
    assert asr.first_passes == [0, 1]
    assert asr.looked_at == [[TimeRange(6.0, 10.0)]]
    assert [segment.text for segment in segments] == ["Chunk 0.", "Found.", "Chunk 1."]

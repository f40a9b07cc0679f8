"""A job's transcription dispatch against a fake ASR stub and a real store:
chunks sent in calls of consecutive chunks, each transcript stored,
published and passed on to alignment; chunks transcribed before go straight
to alignment; the language detected on the first batch when not known.
(The coverage check inside a streaming call: tests/unit/gateway/jobs/test_pipeline.py.)"""

from __future__ import annotations

import asyncio
from typing import Any

from common.rpc.convert import segment_to_proto, time_range_from_proto
from common.transcript import Segment, TimeRange
from gateway.asr_capacity import AsrCapacity
from gateway.jobs.run.language import LanguageSettling
from gateway.jobs.run.run_state import RunState, SpeechChunk
from gateway.jobs.run.transcription import TranscriptionDispatch
from gateway.records import JobRecord, Stage
from gateway.store.job_store import JobStore
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2
from tests.unit.gateway.jobs.job_fakes import decoded_run, new_job, published


class FakeAsr:
    """An AsrService stub that hears German and says one sentence per chunk."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, int, str, bool]] = []
        self.detections = 0

    async def DetectLanguage(self, request: asr_pb2.DetectLanguageRequest, **_: Any) -> asr_pb2.DetectLanguageResponse:
        self.detections += 1
        return asr_pb2.DetectLanguageResponse(language_code="de", probability=0.7)

    def Transcribe(self, request: asr_pb2.TranscribeRequest, **_: Any) -> Any:
        ranges = [time_range_from_proto(item) for item in request.chunks]
        self.calls.append((request.first_chunk_index, len(ranges), request.options.language_code, request.last_of_job))

        async def stream() -> Any:
            for position, chunk in enumerate(ranges):
                index = request.first_chunk_index + position
                segment = Segment(f"Satz {index}.", chunk.start_s, chunk.end_s, chunk_index=index)
                yield asr_pb2.TranscribeResponse(
                    chunk_index=index, language_code="de", segments=[segment_to_proto(segment)]
                )

        return stream()


CHUNKS = [SpeechChunk(index, TimeRange(index * 10.0, index * 10.0 + 10.0)) for index in range(4)]


def transcribe(
    store: JobStore, config: gateway_pb2.JobConfig, state: RunState
) -> tuple[FakeAsr, list[int | None], JobRecord]:
    """Runs the dispatch on `CHUNKS` (detection done), with chunk 1 transcribed before."""
    job = new_job(store, config=config)
    asr = FakeAsr()

    async def run() -> list[int | None]:
        job_run = await decoded_run(store, job, state)
        chunk_queue: asyncio.Queue[SpeechChunk | None] = asyncio.Queue()
        for chunk in [*CHUNKS, None]:
            chunk_queue.put_nowait(chunk)
        state.detection_done = True
        align_queue: asyncio.Queue[int | None] = asyncio.Queue()
        language = LanguageSettling(job_run, asr)  # type: ignore[arg-type]
        capacity = AsrCapacity(None, replica_count=1, fixed_workers=1, fixed_batch_size=8)
        dispatch = TranscriptionDispatch(job_run, asr, capacity, language, 8)  # type: ignore[arg-type]
        await dispatch.run(chunk_queue, align_queue)
        assert capacity.chunks_in_flight == 0 and capacity.in_flight == 0
        return [align_queue.get_nowait() for _ in range(align_queue.qsize())]

    return asr, asyncio.run(run()), job


def earlier_state() -> RunState:
    return RunState(chunks=list(CHUNKS), transcripts={1: [Segment("Vorher.", 10.0, 20.0, chunk_index=1)]})


def test_chunks_are_transcribed_stored_and_passed_on_to_alignment(store: JobStore) -> None:
    state = earlier_state()
    config = gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(language_code="de"))
    asr, aligned, job = transcribe(store, config, state)
    # Chunk 1 goes straight to alignment; the others in one call per run of consecutive chunks.
    assert asr.calls == [(0, 1, "de", False), (2, 2, "de", True)]
    assert asr.detections == 0
    assert aligned == [1, 0, 2, 3, None]
    assert sorted(store.checkpoint("job-1").transcripts) == [0, 2, 3]
    assert state.transcripts[3][0].text == "Satz 3."
    assert [segment.text for segment in published(store, job, "segment")] == ["Satz 0.", "Satz 2.", "Satz 3."]
    progress = [(item.stage, item.fraction, item.done_count) for item in published(store, job, "stage_progress")]
    assert progress[-1] == (Stage.TRANSCRIBE, 1.0, 4)
    # What is left is aligning the last chunks.
    assert job.stage == Stage.ALIGN and job.segment_count == 3


def test_an_unknown_language_is_detected_once_on_the_first_batch(store: JobStore) -> None:
    state = earlier_state()
    asr, _, job = transcribe(store, gateway_pb2.JobConfig(skip_alignment=True), state)
    assert asr.detections == 1
    assert {language for _, _, language, _ in asr.calls} == {"de"}
    assert store.get_job("job-1").language_code == "de" and job.stage == Stage.TRANSCRIBE

"""A job's speech detection against a fake VAD stub and a real store."""

from __future__ import annotations

import asyncio
from typing import Any

from common.rpc.convert import seconds_to_duration, time_range_to_proto
from common.transcript import TimeRange
from gateway.jobs.run.detection import SpeechDetection
from gateway.jobs.run.run_state import RunState, SpeechChunk
from gateway.records import Stage
from gateway.store.job_store import JobStore
from subtitler.vad.v1 import vad_pb2
from tests.unit.gateway.jobs.job_fakes import decoded_run, new_job, published


class FakeVad:
    """A VadService stub that finds a 10 s chunk every 10 s of a 30 s audio,
    with a progress-only message between."""

    def __init__(self) -> None:
        self.calls = 0

    def DetectSpeech(self, request: vad_pb2.DetectSpeechRequest, **_: Any) -> Any:
        self.calls += 1

        async def stream() -> Any:
            for index in range(3):
                yield vad_pb2.DetectSpeechResponse(analysed_duration=seconds_to_duration(index * 10.0 + 5.0))
                chunk = TimeRange(index * 10.0, index * 10.0 + 10.0)
                yield vad_pb2.DetectSpeechResponse(
                    chunk=time_range_to_proto(chunk),
                    chunk_index=index,
                    speech_ranges=[time_range_to_proto(TimeRange(chunk.start_s + 1.0, chunk.end_s - 1.0))],
                    analysed_duration=seconds_to_duration(chunk.end_s),
                )

        return stream()


def drained(queue: asyncio.Queue[SpeechChunk | None]) -> list[int | None]:
    items = [queue.get_nowait() for _ in range(queue.qsize())]
    return [item.index if item is not None else None for item in items]


def test_chunks_are_stored_and_queued_as_they_come(store: JobStore) -> None:
    job = new_job(store, audio_duration_s=30.0)
    vad = FakeVad()

    async def run() -> tuple[list[int | None], RunState]:
        job_run = await decoded_run(store, job)
        queue: asyncio.Queue[SpeechChunk | None] = asyncio.Queue()
        await SpeechDetection(job_run, vad).run(queue)  # type: ignore[arg-type]
        return drained(queue), job_run.state

    queued, state = asyncio.run(run())
    assert queued == [0, 1, 2, None]
    assert state.detection_done and state.analysed_s == 30.0
    assert state.chunks[1] == SpeechChunk(1, TimeRange(10.0, 20.0), (TimeRange(11.0, 19.0),))
    checkpoint = store.checkpoint(job.job_id)
    assert checkpoint.detection_complete and sorted(checkpoint.speech_chunks) == [0, 1, 2]
    detect = [(item.done_count, item.total_count) for item in published(store, job, "stage_progress")]
    assert detect[-1] == (30, 30) and (5, 30) in detect
    assert job.stage == Stage.DETECT_SPEECH


def test_a_resumed_detection_queues_the_stored_chunks_first(store: JobStore) -> None:
    job = new_job(store, audio_duration_s=30.0)
    vad = FakeVad()
    stored = RunState(chunks=[SpeechChunk(0, TimeRange(0.0, 10.0))])

    async def run() -> list[int | None]:
        job_run = await decoded_run(store, job, stored)
        queue: asyncio.Queue[SpeechChunk | None] = asyncio.Queue()
        await SpeechDetection(job_run, vad).run(queue)  # type: ignore[arg-type]
        return drained(queue)

    # Detection runs again and adds only the chunks after the stored one.
    assert asyncio.run(run()) == [0, 1, 2, None]
    assert sorted(store.checkpoint(job.job_id).speech_chunks) == [1, 2]


def test_a_finished_detection_is_not_run_again(store: JobStore) -> None:
    job = new_job(store, audio_duration_s=30.0)
    vad = FakeVad()
    stored = RunState(chunks=[SpeechChunk(0, TimeRange(0.0, 10.0))], restored_detection=True)

    async def run() -> list[int | None]:
        job_run = await decoded_run(store, job, stored)
        queue: asyncio.Queue[SpeechChunk | None] = asyncio.Queue()
        await SpeechDetection(job_run, vad).run(queue)  # type: ignore[arg-type]
        return drained(queue)

    assert asyncio.run(run()) == [0, None]
    assert vad.calls == 0 and stored.detection_done

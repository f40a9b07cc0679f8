"""A job's alignment against a fake align stub and a real store."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

from common.rpc.convert import segments_from_proto, segments_to_proto
from common.transcript import Segment, TimeRange, Word
from gateway.jobs.run.alignment import ChunkAlignment
from gateway.jobs.run.language import LanguageSettling
from gateway.jobs.run.run_state import RunState, SpeechChunk
from gateway.records import Stage
from gateway.store.job_store import JobStore
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2
from tests.unit.gateway.jobs.job_fakes import decoded_run, new_job, published


class FakeAlign:
    """An AlignService stub that times each segment as one word."""

    def __init__(self) -> None:
        self.requests: list[align_pb2.AlignWordsRequest] = []

    async def AlignWords(self, request: align_pb2.AlignWordsRequest, **_: Any) -> align_pb2.AlignWordsResponse:
        self.requests.append(request)
        timed = [
            dataclasses.replace(segment, words=(Word(segment.text, segment.start_s, segment.end_s),))
            for segment in segments_from_proto(request.segments)
        ]
        return align_pb2.AlignWordsResponse(segments=segments_to_proto(timed), method=request.method)


SPOKEN = [Segment("Hello.", 1.0, 2.0, chunk_index=0)]
SILENT = [Segment(" ", 11.0, 12.0, chunk_index=1)]
TIMED = [Segment("Timed.", 21.0, 22.0, words=(Word("Timed.", 21.0, 22.0),), chunk_index=2)]


def aligned_state() -> RunState:
    """Three chunks transcribed: one spoken, one silent, one timed by the ASR."""
    return RunState(
        chunks=[SpeechChunk(index, TimeRange(index * 10.0, index * 10.0 + 10.0)) for index in range(3)],
        detection_done=True,
        transcripts={0: SPOKEN, 1: SILENT, 2: TIMED},
    )


def run_alignment(store: JobStore, config: gateway_pb2.JobConfig, language_code: str) -> tuple[FakeAlign, RunState]:
    job = new_job(store, config=config)
    align = FakeAlign()
    state = aligned_state()

    async def run() -> None:
        job_run = await decoded_run(store, job, state)
        language = LanguageSettling(job_run, None)  # type: ignore[arg-type]
        queue: asyncio.Queue[int | None] = asyncio.Queue()
        for index in [0, 1, 2, 0, None]:  # chunk 0 twice: aligned once
            queue.put_nowait(index)
        alignment = ChunkAlignment(job_run, align, language)  # type: ignore[arg-type]
        task = asyncio.create_task(alignment.run(queue))
        await asyncio.sleep(0.01)
        assert task.done() == config.skip_alignment  # it waits for the language, if it aligns
        language.settle(asr_pb2.TranscriptionOptions(language_code=language_code))
        await asyncio.wait_for(task, 5.0)

    asyncio.run(run())
    return align, state


def test_chunks_are_aligned_by_the_service_unless_the_asr_timed_them(store: JobStore) -> None:
    align, state = run_alignment(store, gateway_pb2.JobConfig(), "fr")  # cross-attention
    # Only the spoken chunk without words goes to the service; the silent one keeps its segments.
    assert [request.language_code for request in align.requests] == [""]
    assert align.requests[0].method == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
    assert state.aligned[0][0].words and state.aligned[1] == SILENT and state.aligned[2] == TIMED
    stored = store.checkpoint("job-1").alignments
    assert {index: method for index, (method, _) in stored.items()} == {
        0: align_pb2.ALIGN_METHOD_CROSS_ATTENTION,
        1: align_pb2.ALIGN_METHOD_UNSPECIFIED,
        2: align_pb2.ALIGN_METHOD_CROSS_ATTENTION,
    }
    job = store.get_job("job-1")
    assert [chunk.chunk_index for chunk in published(store, job, "aligned")] == [0, 1, 2]
    progress = [(item.stage, item.fraction, item.done_count) for item in published(store, job, "stage_progress")]
    assert progress[-1] == (Stage.ALIGN, 1.0, 3)


def test_english_words_are_aligned_phonetically_even_when_timed(store: JobStore) -> None:
    align, state = run_alignment(store, gateway_pb2.JobConfig(), "en")
    assert [request.method for request in align.requests] == [align_pb2.ALIGN_METHOD_PHONETIC] * 2
    assert sorted(state.aligned) == [0, 1, 2]


def test_nothing_is_aligned_when_alignment_is_skipped(store: JobStore) -> None:
    align, state = run_alignment(store, gateway_pb2.JobConfig(skip_alignment=True), "en")
    assert align.requests == [] and state.aligned == {}
    assert published(store, store.get_job("job-1"), "stage_progress")[-1].stage == Stage.DECODE

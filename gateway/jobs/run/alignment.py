"""A job's alignment: each chunk's transcript given word times as it comes
from transcription, by the align service or (cross-attention) as the ASR
timed it already; stored and published per chunk."""

from __future__ import annotations

import asyncio
import functools

from common.rpc.convert import segments_from_proto, segments_to_proto
from common.transcript import Segment
from gateway.jobs.run.job_run import JobRun
from gateway.jobs.run.language import LanguageSettling
from gateway.records import Stage
from subtitler.align.v1 import align_pb2, align_pb2_grpc
from subtitler.gateway.v1 import gateway_pb2


class ChunkAlignment:
    """Aligns the words of one job's chunks."""

    def __init__(self, run: JobRun, align: align_pb2_grpc.AlignServiceStub, language: LanguageSettling) -> None:
        self._run = run
        self._job = run.job
        self._store = run.store
        self._state = run.state
        self._align = align
        self._language = language

    async def run(self, align_queue: asyncio.Queue[int | None]) -> None:
        """Aligns every chunk whose index `align_queue` brings, until None."""
        config = self._job.config
        state = self._state
        progress = self._run.progress
        while (chunk_index := await align_queue.get()) is not None:
            if config.skip_alignment or chunk_index in state.aligned:
                continue
            await self._language.wait()
            segments = state.transcripts[chunk_index]
            spoken = [segment for segment in segments if segment.text.strip()]
            method: align_pb2.AlignMethod.ValueType
            if not spoken:
                aligned, method = segments, align_pb2.ALIGN_METHOD_UNSPECIFIED
            elif self._language.align_method == align_pb2.ALIGN_METHOD_CROSS_ATTENTION and all(s.words for s in spoken):
                aligned, method = segments, align_pb2.ALIGN_METHOD_CROSS_ATTENTION  # timed by the ASR pass
            else:
                aligned, method = await self._run.call(
                    Stage.ALIGN, chunk_index, functools.partial(self._align_once, segments)
                )
            await self._store.save_chunk_alignment(self._job.job_id, chunk_index, method, aligned)
            state.aligned[chunk_index] = aligned
            await self._run.events.publish(
                self._job,
                aligned=gateway_pb2.ChunkSegments(
                    chunk_index=chunk_index, segments=segments_to_proto(aligned), method=method
                ),
            )
            await progress.report_chunks(Stage.ALIGN, len(state.aligned))
        if not config.skip_alignment:
            await progress.report(Stage.ALIGN, 1.0, len(state.aligned), len(state.chunks))

    async def _align_once(self, segments: list[Segment]) -> tuple[list[Segment], align_pb2.AlignMethod.ValueType]:
        assert self._run.handle is not None
        config = self._job.config
        response = await self._align.AlignWords(
            align_pb2.AlignWordsRequest(
                audio=self._run.handle,
                segments=segments_to_proto(segments),
                language_code=self._job.language_code or config.transcription.language_code,
                method=self._language.align_method or config.align_method,
                model=config.transcription.model,
            ),
            **self._run.call_options(),
        )
        return segments_from_proto(response.segments), response.method

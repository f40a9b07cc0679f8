"""The coverage check's second look: a chunk's speech that no segment of the
ASR's first pass covers (`gateway.jobs.run.policy.uncovered_speech`) is
transcribed again window by window, within the ASR slots, and what is found
there is merged into the chunk's segments."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Sequence

from common.limits import MAX_CHUNKS_PER_REQUEST
from common.rpc.convert import segments_from_proto, time_range_to_proto
from common.transcript import Segment, TimeRange
from gateway.asr_capacity import AsrCapacity
from gateway.jobs.run.job_run import JobRun
from gateway.jobs.run.policy import merge_found_segments
from gateway.jobs.run.stage_calls import StageFailedError
from gateway.records import Stage
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc

logger = logging.getLogger(__name__)


class SecondLook:
    """Looks again at the uncovered speech of one job's chunks."""

    def __init__(self, run: JobRun, asr: asr_pb2_grpc.AsrServiceStub, capacity: AsrCapacity) -> None:
        self._run = run
        self._job = run.job
        self._asr = asr
        self._capacity = capacity

    async def look_again(
        self,
        chunk_index: int,
        segments: list[Segment],
        windows: list[TimeRange],
        options: asr_pb2.TranscriptionOptions,
    ) -> list[Segment]:
        """Chunk `chunk_index`'s `segments` (its first pass) with what a
        second look at its `windows` found inside them."""
        found = await self._second_look(chunk_index, windows, options)
        inside = [
            dataclasses.replace(segment, chunk_index=chunk_index)
            for segment in found
            if any(window.start_s <= segment.start_s < window.end_s for window in windows)
        ]
        logger.info(
            "job %s chunk %d: %d s of speech had no segment; a second look found %d",
            self._job.job_id,
            chunk_index,
            round(sum(window.duration_s for window in windows)),
            len(inside),
        )
        return merge_found_segments(segments, inside)

    async def _second_look(
        self, chunk_index: int, windows: Sequence[TimeRange], options: asr_pb2.TranscriptionOptions
    ) -> list[Segment]:
        """What the coverage check's windows hold, under the retry policy
        and within the ASR slots; when they cannot be transcribed, nothing
        (the chunks keep what their first pass found)."""
        capacity = self._capacity
        capacity.extend(len(windows))
        try:
            return await self._run.call(
                Stage.TRANSCRIBE,
                chunk_index,
                functools.partial(self._transcribe_windows, windows, options),
            )
        except StageFailedError as error:
            logger.warning("job %s: the coverage check's second look failed (%s)", self._job.job_id, error.message)
            return []
        finally:
            capacity.shrink(len(windows))

    async def _transcribe_windows(
        self, windows: Sequence[TimeRange], options: asr_pb2.TranscriptionOptions
    ) -> list[Segment]:
        """The segments of `windows` transcribed each on its own (the
        coverage check's second look), numbered as their chunks."""
        assert self._run.handle is not None
        found: list[Segment] = []
        for start in range(0, len(windows), MAX_CHUNKS_PER_REQUEST):
            part = windows[start : start + MAX_CHUNKS_PER_REQUEST]
            stream = self._asr.Transcribe(
                asr_pb2.TranscribeRequest(
                    audio=self._run.handle,
                    chunks=[time_range_to_proto(window) for window in part],
                    first_chunk_index=0,
                    options=options,
                    scheduling=asr_pb2.SCHEDULING_THROUGHPUT,
                ),
                **self._run.call_options(),
            )
            async for response in stream:
                found.extend(segments_from_proto(response.segments))
        return found

"""AlignService over gRPC: protobuf in and out, the engine in an executor.

Errors are raised as `common.errors` and mapped to status codes by the
server's interceptor.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from concurrent.futures import Executor

import grpc

from common.audio.access import AudioReader, AudioRef, audio_ref_from_proto, sample_range
from common.errors import InvalidInputError, UnavailableError
from common.limits import SAMPLE_RATE_HERTZ
from common.machine.capacity import WorkRate, timed
from common.rpc.admission import AdmissionLimit, run_blocking
from common.rpc.convert import segments_from_proto, segments_to_proto
from common.speech.word_timing import split_tokens
from common.transcript import Segment, TimeRange
from services.align.engine import AlignEngine, AlignMethod, validate_segments
from subtitler.align.v1 import align_pb2, align_pb2_grpc

SERVICE_NAME = align_pb2.DESCRIPTOR.services_by_name["AlignService"].full_name

_METHOD_FROM_PROTO: dict[int, AlignMethod | None] = {
    align_pb2.ALIGN_METHOD_UNSPECIFIED: None,
    align_pb2.ALIGN_METHOD_CROSS_ATTENTION: AlignMethod.CROSS_ATTENTION,
    align_pb2.ALIGN_METHOD_PHONETIC: AlignMethod.PHONETIC,
}
_METHOD_TO_PROTO = {
    AlignMethod.CROSS_ATTENTION: align_pb2.ALIGN_METHOD_CROSS_ATTENTION,
    AlignMethod.PHONETIC: align_pb2.ALIGN_METHOD_PHONETIC,
}


class AlignServicer(align_pb2_grpc.AlignServiceServicer):
    def __init__(
        self,
        engine: AlignEngine,
        audio_reader: AudioReader,
        admission: AdmissionLimit,
        executor: Executor,
        *,
        default_model: str,
        is_model_loaded: Callable[[str], bool],
        max_read_window_s: float = 120.0,
        rate: WorkRate | None = None,
    ) -> None:
        """`rate`: where each alignment's time in the executor is recorded,
        per second of the audio its segments span (common.machine.capacity; the
        status reports it)."""
        self._engine = engine
        self.rate = rate or WorkRate()
        self._audio_reader = audio_reader
        # Alignments at once, and how many wait.
        self._admission = admission
        self._executor = executor
        self._default_model = default_model
        self._is_model_loaded = is_model_loaded
        self._max_read_window_s = max_read_window_s

    async def AlignWords(
        self, request: align_pb2.AlignWordsRequest, context: grpc.aio.ServicerContext
    ) -> align_pb2.AlignWordsResponse:
        if request.method not in _METHOD_FROM_PROTO:
            raise InvalidInputError(f"unknown align method {request.method}")
        model = request.model.strip() or self._default_model
        method = self._engine.method_for(request.language_code, _METHOD_FROM_PROTO[request.method])
        if method is AlignMethod.CROSS_ATTENTION and model == self._default_model and not self._is_model_loaded(model):
            raise UnavailableError(f"the default model {model!r} is still loading; retry shortly")
        segments = segments_from_proto(request.segments)
        audio = audio_ref_from_proto(request.audio)
        if audio.sample_rate_hertz != SAMPLE_RATE_HERTZ:
            raise InvalidInputError(
                f"audio at {audio.sample_rate_hertz} Hz; the align service takes {SAMPLE_RATE_HERTZ} Hz"
            )
        validate_segments(segments, audio.duration_s, end_tolerance_s=self._engine.options.end_tolerance_s)
        aligned: list[Segment] = []
        async with self._admission.slot():
            for group in _read_groups(segments, self._max_read_window_s):
                aligned.extend(await self._align_group(audio, group, request.language_code, method, model))
        return align_pb2.AlignWordsResponse(segments=segments_to_proto(aligned), method=_METHOD_TO_PROTO[method])

    async def _align_group(
        self, audio: AudioRef, segments: Sequence[Segment], language_code: str, method: AlignMethod, model: str
    ) -> Sequence[Segment]:
        with_text = [segment for segment in segments if split_tokens(segment.text)]
        if not with_text:
            return segments
        window = TimeRange(min(s.start_s for s in with_text), max(s.end_s for s in with_text))
        offset_samples, _ = sample_range(window, audio.sample_rate_hertz, audio.sample_count)
        async with self._audio_reader.open(audio, window) as samples:
            align = functools.partial(
                self._engine.align,
                segments,
                samples,
                samples_start_s=offset_samples / audio.sample_rate_hertz,
                language_code=language_code,
                method=method,
                model=model,
            )
            result = await run_blocking(self._executor, timed(self.rate, window.duration_s, align))
        return result.segments


def _read_groups(segments: Sequence[Segment], max_window_s: float) -> list[list[Segment]]:
    """Consecutive segments grouped so that each group's audio spans at most
    `max_window_s` (a single longer segment is a group of its own)."""
    groups: list[list[Segment]] = []
    low_s = high_s = 0.0
    for segment in segments:
        if groups and max(high_s, segment.end_s) - min(low_s, segment.start_s) <= max_window_s:
            groups[-1].append(segment)
            low_s, high_s = min(low_s, segment.start_s), max(high_s, segment.end_s)
        else:
            groups.append([segment])
            low_s, high_s = segment.start_s, segment.end_s
    return groups

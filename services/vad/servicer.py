"""VadService over gRPC: protobuf in and out, the engine in an executor.

Errors are raised as `common.errors` and mapped to status codes by the
server's interceptor.
"""

from __future__ import annotations

import functools
from collections.abc import AsyncIterator
from concurrent.futures import Executor

import grpc
from google.protobuf.duration_pb2 import Duration

from common.audio.access import AudioReader, audio_ref_from_proto
from common.audio.pcm import float32_samples
from common.errors import InvalidInputError, ResourceExhaustedError
from common.machine.capacity import WorkRate, timed
from common.rpc.admission import AdmissionLimit, run_blocking
from common.rpc.convert import duration_to_seconds, seconds_to_duration, time_range_to_proto
from common.transcript import TimeRange
from services.vad.engine import (
    SAMPLE_RATE_HERTZ,
    DetectionEvent,
    LiveUpdate,
    LiveVadOptions,
    SpeechChunk,
    SpeechDetector,
    VadOptions,
)
from subtitler.vad.v1 import vad_pb2, vad_pb2_grpc

SERVICE_NAME = vad_pb2.DESCRIPTOR.services_by_name["VadService"].full_name


class VadServicer(vad_pb2_grpc.VadServiceServicer):
    def __init__(
        self,
        detector: SpeechDetector,
        audio_reader: AudioReader,
        admission: AdmissionLimit,
        executor: Executor,
        *,
        max_live_streams: int = 64,
        retry_after_s: float = 5.0,
        rate: WorkRate | None = None,
    ) -> None:
        """`rate`: where each detection's time in the executor is recorded,
        per second of audio searched (common.machine.capacity; the status reports it)."""
        self._detector = detector
        self.rate = rate or WorkRate()
        # Live streams are cheap (a few frames a block) but long: their own bound.
        self._max_live_streams = max_live_streams
        self._live_streams = 0
        self._retry_after_s = retry_after_s
        self._audio_reader = audio_reader
        # Detections at once (each is a few seconds per hour of audio), and how many wait.
        self._admission = admission
        self._executor = executor

    async def DetectSpeech(
        self, request: vad_pb2.DetectSpeechRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[vad_pb2.DetectSpeechResponse]:
        options = vad_options_from_proto(request.options)
        audio = audio_ref_from_proto(request.audio)
        if audio.sample_rate_hertz != SAMPLE_RATE_HERTZ:
            raise InvalidInputError(
                f"audio at {audio.sample_rate_hertz} Hz; the VAD service takes {SAMPLE_RATE_HERTZ} Hz"
            )
        block_samples = self._detector.block_samples
        async with self._admission.slot():
            detection = await run_blocking(
                self._executor, timed(self.rate, 0.0, functools.partial(self._detector.start, options))
            )
            # Block by block, so that chunks go out while later audio is still
            # being read (zero-copy from shared memory, or over gRPC).
            for start_samples in range(0, audio.sample_count, block_samples):
                end_samples = min(start_samples + block_samples, audio.sample_count)
                block = TimeRange(start_samples / SAMPLE_RATE_HERTZ, end_samples / SAMPLE_RATE_HERTZ)
                async with self._audio_reader.open(audio, block) as samples:
                    feed = functools.partial(detection.feed, samples)
                    events = await run_blocking(self._executor, timed(self.rate, block.duration_s, feed))
                for event in events:
                    yield detection_event_to_proto(event)
            for event in await run_blocking(self._executor, timed(self.rate, 0.0, detection.finish)):
                yield detection_event_to_proto(event)

    @property
    def live_streams(self) -> int:
        return self._live_streams

    async def StreamSpeech(
        self, request_iterator: AsyncIterator[vad_pb2.StreamSpeechRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[vad_pb2.StreamSpeechResponse]:
        if self._live_streams >= self._max_live_streams:
            raise ResourceExhaustedError(
                f"this VAD replica has its maximum of {self._max_live_streams} live streams; "
                f"retry in {self._retry_after_s:g} s",
                retry_after_s=self._retry_after_s,
            )
        self._live_streams += 1
        try:
            first = await anext(aiter(request_iterator), None)
            if first is None:
                return
            if first.WhichOneof("request") != "options":
                raise InvalidInputError("the first message of a StreamSpeech stream must carry the options")
            options = live_vad_options_from_proto(first.options)
            detection = await run_blocking(self._executor, functools.partial(self._detector.start_live, options))
            async for request in request_iterator:
                if request.WhichOneof("request") != "samples":
                    raise InvalidInputError("options come once, in the first message; later messages carry samples")
                samples = float32_samples(request.samples)
                update = await run_blocking(self._executor, functools.partial(detection.feed, samples))
                yield live_update_to_proto(update)
        finally:
            self._live_streams -= 1


def live_vad_options_from_proto(message: vad_pb2.LiveVadOptions) -> LiveVadOptions:
    defaults = LiveVadOptions()
    return LiveVadOptions(
        threshold=round(message.threshold, 6) or defaults.threshold,
        min_silence_duration_s=_seconds_or_default(message.min_silence_duration, defaults.min_silence_duration_s),
    )


def live_update_to_proto(update: LiveUpdate) -> vad_pb2.StreamSpeechResponse:
    return vad_pb2.StreamSpeechResponse(
        speech_starts=[seconds_to_duration(start) for start in update.speech_starts],
        speech_ends=[time_range_to_proto(end) for end in update.speech_ends],
        analysed_duration=seconds_to_duration(update.analysed_s),
        in_speech=update.in_speech,
        trailing_silence=seconds_to_duration(update.trailing_silence_s),
    )


def _seconds_or_default(duration: Duration, default_s: float) -> float:
    # The contract: a zero field takes the documented default.
    seconds = duration_to_seconds(duration)
    return seconds if seconds != 0.0 else default_s


def vad_options_from_proto(message: vad_pb2.VadOptions) -> VadOptions:
    """The engine's options; `InvalidInputError` for values out of range."""
    defaults = VadOptions()
    if message.chunking not in vad_pb2.ChunkingMethod.values():
        raise InvalidInputError(f"unknown chunking method {message.chunking}; use MERGE or PACK")
    return VadOptions(
        # float32 on the wire: 0.3 arrives as 0.30000001192...; keep what the caller wrote.
        threshold=round(message.threshold, 6) or defaults.threshold,
        min_silence_duration_s=_seconds_or_default(message.min_silence_duration, defaults.min_silence_duration_s),
        speech_pad_s=_seconds_or_default(message.speech_pad, defaults.speech_pad_s),
        max_chunk_duration_s=_seconds_or_default(message.max_chunk_duration, defaults.max_chunk_duration_s),
        min_speech_duration_s=_seconds_or_default(message.min_speech_duration, defaults.min_speech_duration_s),
        pack_speech=message.chunking == vad_pb2.CHUNKING_METHOD_PACK,
    )


def detection_event_to_proto(event: DetectionEvent) -> vad_pb2.DetectSpeechResponse:
    analysed = seconds_to_duration(event.analysed_s)
    if not isinstance(event, SpeechChunk):
        return vad_pb2.DetectSpeechResponse(analysed_duration=analysed)
    return vad_pb2.DetectSpeechResponse(
        chunk=time_range_to_proto(event.range),
        chunk_index=event.index,
        analysed_duration=analysed,
        speech_ranges=[time_range_to_proto(speech) for speech in event.speech_ranges],
    )

"""DiarizeService over gRPC: protobuf in and out, the engine in an executor.

Errors are raised as `common.errors` and mapped to status codes by the
server's interceptor.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable
from concurrent.futures import Executor

import grpc

from common.audio.access import AudioReader, audio_ref_from_proto
from common.errors import InvalidInputError, UnavailableError
from common.limits import SAMPLE_RATE_HERTZ
from common.machine.capacity import WorkRate, timed
from common.rpc.admission import AdmissionLimit, run_blocking
from common.rpc.convert import seconds_to_duration
from common.transcript import TimeRange
from services.diarize.engine import DiarizeOptions, Diarizer
from subtitler.diarize.v1 import diarize_pb2, diarize_pb2_grpc

SERVICE_NAME = diarize_pb2.DESCRIPTOR.services_by_name["DiarizeService"].full_name


class DiarizeServicer(diarize_pb2_grpc.DiarizeServiceServicer):
    def __init__(
        self,
        diarizer: Callable[[], Diarizer | None],
        audio_reader: AudioReader,
        admission: AdmissionLimit,
        executor: Executor,
        rate: WorkRate | None = None,
    ) -> None:
        """`rate`: where each diarization's time in the executor is recorded,
        per second of audio (common.machine.capacity; the status reports it)."""
        self._diarizer = diarizer
        self.rate = rate or WorkRate()
        self._audio_reader = audio_reader
        self._admission = admission
        self._executor = executor

    async def Diarize(
        self, request: diarize_pb2.DiarizeRequest, context: grpc.aio.ServicerContext
    ) -> diarize_pb2.DiarizeResponse:
        options = DiarizeOptions(
            speaker_count=request.speakers.exactly,
            min_speakers=request.speakers.min,
            max_speakers=request.speakers.max,
        )
        audio = audio_ref_from_proto(request.audio)
        if audio.sample_rate_hertz != SAMPLE_RATE_HERTZ:
            raise InvalidInputError(
                f"audio at {audio.sample_rate_hertz} Hz; the diarize service takes {SAMPLE_RATE_HERTZ} Hz"
            )
        diarizer = self._diarizer()
        if diarizer is None:
            raise UnavailableError("the diarization models are still loading; retry shortly")
        stop = threading.Event()
        async with self._admission.slot(), self._audio_reader.open(audio, TimeRange(0.0, audio.duration_s)) as samples:
            turns = await run_blocking(
                self._executor,
                timed(self.rate, audio.duration_s, functools.partial(diarizer.diarize, samples, options, stop.is_set)),
                on_cancel=stop.set,
            )
        return diarize_pb2.DiarizeResponse(
            turns=[
                diarize_pb2.SpeakerTurn(
                    speaker=turn.speaker,
                    start_offset=seconds_to_duration(turn.start_s),
                    end_offset=seconds_to_duration(turn.end_s),
                )
                for turn in turns
            ],
            speaker_count=len({turn.speaker for turn in turns}),
        )

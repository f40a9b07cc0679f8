"""AsrService over gRPC: protobuf in and out, the engine in an executor.

Errors are raised as `common.errors` and mapped to status codes by the
server's interceptor.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import threading
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import Executor
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
import structlog

from common.audio.access import AudioReader, audio_ref_from_proto, sample_range
from common.audio.pcm import float32_samples
from common.errors import InvalidInputError, NotFoundError, UnavailableError
from common.limits import MAX_CHUNK_DURATION_S, SAMPLE_RATE_HERTZ
from common.rpc.admission import AdmissionLimit, run_blocking
from common.rpc.convert import epoch_to_timestamp, seconds_to_duration, segments_to_proto, time_range_from_proto
from common.speech.whisper_models import ModelState, ModelStatus
from common.transcript import TimeRange
from services.asr.batcher import BatchPool
from services.asr.chunks import MAX_CHUNK_PARTS, first_speech
from services.asr.engine import ChunkTranscript, LanguageDetection, Transcriber
from services.asr.options import TranscriptionOptions
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc

logger = logging.getLogger(__name__)

SERVICE_NAME = asr_pb2.DESCRIPTOR.services_by_name["AsrService"].full_name

_TASKS = {
    asr_pb2.TASK_UNSPECIFIED: "transcribe",
    asr_pb2.TASK_TRANSCRIBE: "transcribe",
    asr_pb2.TASK_TRANSLATE: "translate",
}
# Inline audio one Transcribe request may carry (about 65 s).
MAX_INLINE_AUDIO_BYTES = 4 * 1024 * 1024
# Audio read for language detection past the 30 s it listens to (rounding margin).
_DETECTION_MARGIN_S = 1.0

_Result = TypeVar("_Result")


class AsrServicer(asr_pb2_grpc.AsrServiceServicer):
    def __init__(
        self,
        transcriber: Transcriber,
        audio_reader: AudioReader,
        admission: AdmissionLimit,
        executor: Executor,
        pool: BatchPool,
        *,
        default_model: str,
        default_batch_size: int,
    ) -> None:
        self._transcriber = transcriber
        self._audio_reader = audio_reader
        self._admission = admission
        self._executor = executor
        self._pool = pool
        self._default_model = default_model
        self._default_batch_size = default_batch_size

    async def Transcribe(
        self, request: asr_pb2.TranscribeRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[asr_pb2.TranscribeResponse]:
        options = self._options(request.options)
        self._check_ready(options.model)
        chunks = [time_range_from_proto(chunk) for chunk in request.chunks]
        if not chunks:
            return
        # Which chunks each job asked for (the job id is bound by the interceptor).
        first = request.first_chunk_index
        with structlog.contextvars.bound_contextvars(
            scheduling=_enum_name(asr_pb2.Scheduling, request.scheduling), last_of_job=request.last_of_job
        ):
            logger.info("transcribing chunks %d-%d", first, first + len(chunks) - 1)
        stop = threading.Event()
        async with self._admission.slot(), self._samples(request, chunks) as (samples, offset_samples, sample_count):
            admitted = time.perf_counter()
            # The request checked and its model looked up off the model workers:
            # queued behind their batches, a request would miss the next one.
            prepared = await self._run(
                functools.partial(
                    self._transcriber.prepare,
                    samples,
                    chunks,
                    options,
                    request.first_chunk_index,
                    audio_offset_samples=offset_samples,
                    audio_sample_count=sample_count,
                    contexts=list(request.chunk_contexts),
                    prefixes=list(request.chunk_prefixes),
                    parts=[[time_range_from_proto(part) for part in each.ranges] for each in request.chunk_speech],
                ),
                stop,
                model_work=False,
            )
            if prepared.language is None:
                prepared = await self._run(functools.partial(self._transcriber.detect, prepared), stop)
            # Decoded in batches shared with other requests of the same options.
            throughput = request.scheduling == asr_pb2.SCHEDULING_THROUGHPUT
            pooled = self._pool.transcribe(prepared, throughput=throughput, last_of_job=request.last_of_job)
            async for transcript in pooled:
                yield _transcript_to_proto(transcript)
        # What the job's overhead is measured against (bench.end_to_end).
        logger.info("decoded chunks %d-%d in %.3f s", first, first + len(chunks) - 1, time.perf_counter() - admitted)

    @contextlib.asynccontextmanager
    async def _samples(
        self, request: asr_pb2.TranscribeRequest, chunks: list[TimeRange]
    ) -> AsyncIterator[tuple[npt.NDArray[np.float32], int, int]]:
        """The samples the chunks cover: (samples, offset of the first in the
        audio, samples in the whole audio). Inline samples are the whole
        audio; from a handle only the window the chunks cover is read (a copy
        when it comes over gRPC)."""
        if request.HasField("inline_audio"):
            if request.HasField("audio"):
                raise InvalidInputError("give the audio as a handle or inline, not both")
            if len(request.inline_audio.samples) > MAX_INLINE_AUDIO_BYTES:
                raise InvalidInputError(
                    f"inline audio of {len(request.inline_audio.samples)} bytes; at most {MAX_INLINE_AUDIO_BYTES}"
                )
            samples = float32_samples(request.inline_audio.samples)
            if not samples.size:
                raise InvalidInputError("inline audio holds no samples")
            yield samples, 0, samples.shape[0]
            return
        audio = audio_ref_from_proto(request.audio)
        _check_sample_rate(audio.sample_rate_hertz)
        window = TimeRange(min(chunk.start_s for chunk in chunks), max(chunk.end_s for chunk in chunks))
        offset_samples, _ = sample_range(window, audio.sample_rate_hertz, audio.sample_count)
        async with self._audio_reader.open(audio, window) as samples:
            yield samples, offset_samples, audio.sample_count

    async def DetectLanguage(
        self, request: asr_pb2.DetectLanguageRequest, context: grpc.aio.ServicerContext
    ) -> asr_pb2.DetectLanguageResponse:
        model = request.model.strip() or self._default_model
        self._check_ready(model)
        audio = audio_ref_from_proto(request.audio)
        _check_sample_rate(audio.sample_rate_hertz)
        time_range = time_range_from_proto(request.range) if request.HasField("range") else None
        start_s = time_range.start_s if time_range else 0.0
        end_s = time_range.end_s if time_range else audio.duration_s
        parts = [time_range_from_proto(part) for part in request.speech]
        if len(parts) > MAX_CHUNK_PARTS:
            raise InvalidInputError(f"{len(parts)} speech ranges; at most {MAX_CHUNK_PARTS}")
        heard = first_speech(parts, MAX_CHUNK_DURATION_S)
        if heard:
            # Only the audio of the speech judged is read, however far apart
            # (the engine checks the parts against the range).
            window = TimeRange(heard[0].start_s, max(heard[-1].end_s, heard[0].start_s))
        else:
            window = TimeRange(start_s, max(start_s, min(end_s, start_s + MAX_CHUNK_DURATION_S + _DETECTION_MARGIN_S)))
        offset_samples, _ = sample_range(window, audio.sample_rate_hertz, audio.sample_count)
        stop = threading.Event()
        async with self._admission.slot(), self._audio_reader.open(audio, window) as samples:
            detection = await self._run(
                functools.partial(
                    self._transcriber.detect_language,
                    samples,
                    time_range,
                    model,
                    audio_offset_samples=offset_samples,
                    audio_sample_count=audio.sample_count,
                    parts=parts,
                ),
                stop,
            )
        return _detection_to_proto(detection)

    async def ListModels(
        self, request: asr_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> asr_pb2.ListModelsResponse:
        models = self._transcriber.models
        return asr_pb2.ListModelsResponse(
            models=[_model_info(status) for status in models.statuses()],
            max_loaded_models=models.options.max_loaded_models,
            max_memory_bytes=models.max_memory_bytes,
        )

    async def LoadModel(
        self, request: asr_pb2.LoadModelRequest, context: grpc.aio.ServicerContext
    ) -> asr_pb2.ModelInfo:
        name = request.model.strip()
        if not name:
            raise InvalidInputError("model is empty: name the model to load")
        # Off the model workers: a load must not hold up transcriptions.
        await asyncio.to_thread(self._transcriber.models.get, name)
        return self._model_info_of(name)

    async def UnloadModel(
        self, request: asr_pb2.UnloadModelRequest, context: grpc.aio.ServicerContext
    ) -> asr_pb2.ModelInfo:
        return _model_info(self._transcriber.models.unload(request.model))

    def _model_info_of(self, name: str) -> asr_pb2.ModelInfo:
        for status in self._transcriber.models.statuses():
            if status.name == name:
                return _model_info(status)
        raise NotFoundError(f"model {name!r} is unknown to this replica")

    async def _run(self, call: Callable[[], _Result], stop: threading.Event, *, model_work: bool = True) -> _Result:
        """Runs `call` in the model executor (or, not `model_work`, in the
        loop's default one). If the RPC is cancelled, asks the engine to stop
        and waits for the call to return before the audio and the admission
        slot are given back."""
        return await run_blocking(self._executor if model_work else None, call, on_cancel=stop.set)

    def _check_ready(self, model: str) -> None:
        if model == self._default_model and not self._transcriber.models.is_loaded(model):
            raise UnavailableError(f"the default model {model!r} is still loading; retry shortly")

    def _options(self, message: asr_pb2.TranscriptionOptions) -> TranscriptionOptions:
        task = _TASKS.get(message.task)
        if task is None:
            raise InvalidInputError(f"unknown task {message.task}")
        return TranscriptionOptions(
            model=message.model.strip() or self._default_model,
            language_code=message.language_code.strip(),
            task=task,
            beam_size=message.beam_size or TranscriptionOptions.beam_size,
            batch_size=message.batch_size or self._default_batch_size,
            initial_prompt=message.initial_prompt,
            hotwords=message.hotwords,
            temperature=message.temperature,
            word_timestamps=message.word_timestamps,
        )


def _check_sample_rate(sample_rate_hertz: int) -> None:
    if sample_rate_hertz != SAMPLE_RATE_HERTZ:
        raise InvalidInputError(f"audio at {sample_rate_hertz} Hz; the ASR service takes {SAMPLE_RATE_HERTZ} Hz")


def _transcript_to_proto(transcript: ChunkTranscript) -> asr_pb2.TranscribeResponse:
    return asr_pb2.TranscribeResponse(
        chunk_index=transcript.chunk_index,
        segments=segments_to_proto(transcript.segments),
        language_code=transcript.language_code,
        language_probability=transcript.language_probability,
        model=transcript.model,
        chunk_duration=seconds_to_duration(transcript.time_range.duration_s),
    )


_MODEL_STATES = {
    ModelState.LOADING: asr_pb2.MODEL_STATE_LOADING,
    ModelState.READY: asr_pb2.MODEL_STATE_READY,
    ModelState.FAILED: asr_pb2.MODEL_STATE_FAILED,
    ModelState.UNLOADED: asr_pb2.MODEL_STATE_UNLOADED,
}


def _model_info(status: ModelStatus) -> asr_pb2.ModelInfo:
    info = asr_pb2.ModelInfo(
        name=status.name,
        state=_MODEL_STATES[status.state],
        reason=status.reason,
        memory_bytes=status.memory_bytes,
        pinned=status.pinned,
        device=status.device,
        compute_type=status.compute_type,
        load_duration=seconds_to_duration(status.load_duration_s),
        multilingual=status.multilingual,
    )
    if status.last_used_s:
        info.last_used_time.CopyFrom(epoch_to_timestamp(status.last_used_s))
    return info


def _detection_to_proto(detection: LanguageDetection) -> asr_pb2.DetectLanguageResponse:
    return asr_pb2.DetectLanguageResponse(
        language_code=detection.language_code,
        probability=detection.probability,
        candidates=[
            asr_pb2.LanguageProbability(language_code=code, probability=probability)
            for code, probability in detection.candidates
        ],
    )


def _enum_name(enum: Any, value: int) -> str:
    """An enum value's name, or its number when this build does not know it (a newer caller's)."""
    try:
        return str(enum.Name(value))
    except ValueError:
        return str(value)

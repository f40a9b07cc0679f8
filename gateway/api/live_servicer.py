"""StreamingTranscribe: admission, the first message's checks, the stream's
clock and bounds, and the bridge between the client, the VAD service's
StreamSpeech and the engine (`gateway.live.stream`).

Everything that can be refused is refused before any work: the config's
format and options, the model (asked of the ASR service, which loads it if it
must) and the language it can decode.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TypeVar

import grpc
import numpy as np

from common.errors import (
    DeadlineExceededError,
    InvalidInputError,
    NotFoundError,
    OutOfRangeError,
    ResourceExhaustedError,
    UnavailableError,
)
from common.rpc.convert import duration_to_seconds, seconds_to_duration, time_range_from_proto
from gateway.api.model_check import check_capability
from gateway.api.validation import validate_live_vad, validate_transcription
from gateway.config import LiveConfig
from gateway.live.admission import REPORT_EVERY_S, StreamAdmission
from gateway.live.audio import SAMPLE_RATE_HERTZ, AudioConverter, AudioFormat, Samples
from gateway.live.decoder import LiveDecoder
from gateway.live.settings import MAX_CONTEXT_AUDIO_S, MAX_UTTERANCE_S, StreamSettings
from gateway.live.stream import LiveTranscriber, VadUpdate
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc
from subtitler.audio.v1 import audio_pb2, audio_pb2_grpc
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2, vad_pb2_grpc

logger = logging.getLogger(__name__)

_Item = TypeVar("_Item")

# Audio the engine takes at a time: a fast client's big messages are cut so
# that speech events, steps and cuts keep their resolution.
FEED_SAMPLES = SAMPLE_RATE_HERTZ // 4
MIN_UTTERANCE_S = 2.0
# Responses waiting for a client that does not read them.
MAX_PENDING_RESPONSES = 1000
MODEL_CHECK_TIMEOUT_S = 120.0


@dataclass
class _DecodesReported:
    """What a stream has told the admission's measure so far."""

    audio_s: float = 0.0
    decodes: int = 0


class VadLink:
    """A StreamSpeech call to the VAD service, one block at a time."""

    def __init__(self, stub: vad_pb2_grpc.VadServiceStub, options: vad_pb2.LiveVadOptions) -> None:
        self._call = stub.StreamSpeech()
        self._options = options

    async def start(self) -> None:
        await self._call.write(vad_pb2.StreamSpeechRequest(options=self._options))

    async def feed(self, samples: Samples) -> VadUpdate:
        await self._call.write(vad_pb2.StreamSpeechRequest(samples=samples.astype("<f4", copy=False).tobytes()))
        response = await self._call.read()
        if response is grpc.aio.EOF:
            raise UnavailableError("the VAD service ended the speech detection of this stream; start a new stream")
        return VadUpdate(
            speech_starts=tuple(duration_to_seconds(start) for start in response.speech_starts),
            speech_ends=tuple(time_range_from_proto(end) for end in response.speech_ends),
            in_speech=response.in_speech,
            trailing_silence_s=duration_to_seconds(response.trailing_silence),
        )

    def close(self) -> None:
        self._call.cancel()


class LiveCaptioner:
    """Serves every StreamingTranscribe stream of a gateway."""

    def __init__(
        self,
        vad: vad_pb2_grpc.VadServiceStub,
        asr: asr_pb2_grpc.AsrServiceStub,
        decoder: LiveDecoder,
        config: LiveConfig,
        admission: StreamAdmission,
        audio: audio_pb2_grpc.AudioServiceStub | None = None,
    ) -> None:
        self._admission = admission
        self._audio = audio
        self._vad = vad
        self._asr = asr
        self._decoder = decoder
        self._config = config
        self._streams = 0
        # Buffered samples of every open stream, for the memory checks.
        self._transcribers: set[LiveTranscriber] = set()

    @property
    def open_streams(self) -> int:
        return self._streams

    @property
    def buffered_samples(self) -> int:
        return sum(transcriber.buffered_samples for transcriber in self._transcribers)

    async def stream(
        self, requests: AsyncIterator[gateway_pb2.StreamingTranscribeRequest]
    ) -> AsyncIterator[gateway_pb2.StreamingTranscribeResponse]:
        await self._admission.check(self._streams)
        self._streams += 1
        try:
            iterator = aiter(requests)
            first = await self._next(iterator)
            if first is None:
                return
            if first.WhichOneof("request") != "config":
                raise InvalidInputError("the first message of a stream must carry its StreamingConfig, not audio")
            config = first.config
            source_uri = config.source_uri.strip()
            if source_uri:
                # The audio service hands the source's samples out as 16 kHz mono float32.
                audio_format = AudioFormat(gateway_pb2.AUDIO_ENCODING_FLOAT32, SAMPLE_RATE_HERTZ, 1)
            else:
                audio_format = AudioFormat.from_config(config)
            settings = _settings(config)
            options = await self._checked_options(config.transcription)
            responses: asyncio.Queue[gateway_pb2.StreamingTranscribeResponse | None] = asyncio.Queue()

            def emit(response: gateway_pb2.StreamingTranscribeResponse) -> None:
                if responses.qsize() >= MAX_PENDING_RESPONSES:
                    raise ResourceExhaustedError(
                        f"{MAX_PENDING_RESPONSES} responses wait for this client: it must read its stream"
                    )
                responses.put_nowait(response)

            vad = VadLink(self._vad, config.speech_detection)
            transcriber = LiveTranscriber(self._decoder, vad, options, settings, emit)
            self._transcribers.add(transcriber)
            audio = self._client_audio(iterator) if not source_uri else self._source_audio(source_uri, iterator)
            runner = asyncio.get_running_loop().create_task(
                self._run(audio, vad, transcriber, AudioConverter(audio_format), responses)
            )
            try:
                while (response := await responses.get()) is not None:
                    yield response
                await runner  # its error, if it failed
            finally:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await runner
                await transcriber.close()
                vad.close()
                self._transcribers.discard(transcriber)
        finally:
            self._streams -= 1

    async def _client_audio(
        self, iterator: AsyncIterator[gateway_pb2.StreamingTranscribeRequest]
    ) -> AsyncIterator[bytes]:
        while (request := await self._next(iterator)) is not None:
            if request.WhichOneof("request") != "audio":
                raise InvalidInputError("the StreamingConfig comes once, in the first message; send audio now")
            yield request.audio

    async def _source_audio(
        self, uri: str, iterator: AsyncIterator[gateway_pb2.StreamingTranscribeRequest]
    ) -> AsyncIterator[bytes]:
        """The samples of a live source the audio service decodes; the client
        may only half-close (or go away) meanwhile."""
        if self._audio is None:
            raise UnavailableError("this gateway has no audio service for live sources")
        failure: list[BaseException] = []

        async def watch_client() -> None:
            try:
                async for request in iterator:
                    if request.WhichOneof("request") is not None:
                        raise InvalidInputError("a stream with a source_uri takes no audio or second config")
            except InvalidInputError as error:
                failure.append(error)
                call.cancel()

        call = self._audio.StreamLiveSource(audio_pb2.StreamLiveSourceRequest(uri=uri))
        watcher = asyncio.get_running_loop().create_task(watch_client())
        try:
            responses = aiter(call)
            while True:
                try:
                    response = await self._next(responses, "the live source sent no audio", advice="")
                except asyncio.CancelledError:
                    if failure:
                        raise failure[0] from None
                    raise
                except grpc.aio.AioRpcError:
                    if failure:
                        raise failure[0] from None
                    raise
                if response is None:
                    return
                yield response.samples
        finally:
            watcher.cancel()
            call.cancel()

    async def _run(
        self,
        audio: AsyncIterator[bytes],
        vad: VadLink,
        transcriber: LiveTranscriber,
        converter: AudioConverter,
        responses: asyncio.Queue[gateway_pb2.StreamingTranscribeResponse | None],
    ) -> None:
        reported = _DecodesReported()
        try:
            await vad.start()
            async for data in audio:
                samples = converter.convert(data)
                over = converter.received_s > self._config.max_stream_duration_s
                if over:
                    keep = round(self._config.max_stream_duration_s * SAMPLE_RATE_HERTZ) - round(
                        transcriber.received_s * SAMPLE_RATE_HERTZ
                    )
                    samples = samples[: max(0, keep)]
                await self._feed(transcriber, samples)
                if transcriber.received_s - reported.audio_s >= REPORT_EVERY_S:
                    self._report_decodes(transcriber, reported)
                if over:
                    await transcriber.finish()
                    raise OutOfRangeError(
                        f"the stream reached the maximum stream duration of "
                        f"{self._config.max_stream_duration_s:g} s (SUBTITLER_GATEWAY_MAX_STREAM_DURATION_S); "
                        "what was said until then has been sent: start a new stream to go on"
                    )
            await self._feed(transcriber, converter.flush())
            await transcriber.finish()
            self._report_decodes(transcriber, reported)
            logger.info(
                "live stream ended: %.1f s of audio, %d finals, %d decodes, %d finals from the likely-final step, "
                "%d decoded again without lead-in",
                converter.received_s,
                transcriber.final_count,
                transcriber.decode_count,
                transcriber.reused_finals,
                transcriber.second_looks,
            )
            responses.put_nowait(
                gateway_pb2.StreamingTranscribeResponse(
                    summary=gateway_pb2.StreamingSummary(
                        audio_duration=seconds_to_duration(converter.received_s),
                        utterance_count=transcriber.final_count,
                        decode_count=transcriber.decode_count,
                    )
                )
            )
        finally:
            responses.put_nowait(None)

    def _report_decodes(self, transcriber: LiveTranscriber, reported: _DecodesReported) -> None:
        """Tells the admission's measure what the stream needed since its last report."""
        audio_s = transcriber.received_s - reported.audio_s
        decodes = transcriber.needed_decode_count - reported.decodes
        if audio_s > 0:
            self._admission.observe(audio_s, decodes)
        reported.audio_s, reported.decodes = transcriber.received_s, transcriber.needed_decode_count

    @staticmethod
    async def _feed(transcriber: LiveTranscriber, samples: Samples) -> None:
        for start in range(0, samples.shape[0], FEED_SAMPLES):
            await transcriber.feed(np.ascontiguousarray(samples[start : start + FEED_SAMPLES]))

    async def _next(
        self,
        iterator: AsyncIterator[_Item],
        silence: str = "no message came",
        advice: str = "; send audio continuously (silence too) or half-close when done",
    ) -> _Item | None:
        """The next item, or None at the end; DEADLINE_EXCEEDED when none
        comes for the idle timeout ("<silence> for N s ... ended<advice>")."""
        try:
            return await asyncio.wait_for(anext(iterator, None), self._config.idle_timeout_s)
        except TimeoutError:
            raise DeadlineExceededError(
                f"{silence} for {self._config.idle_timeout_s:g} s (SUBTITLER_GATEWAY_STREAM_IDLE_TIMEOUT_S): "
                f"the stream is ended{advice}"
            ) from None

    async def _checked_options(self, transcription: asr_pb2.TranscriptionOptions) -> asr_pb2.TranscriptionOptions:
        """The options, checked against the model they name (loaded now if it must be)."""
        validate_transcription(transcription)
        options = asr_pb2.TranscriptionOptions()
        options.CopyFrom(transcription)
        try:
            if options.model.strip():
                info = await self._asr.LoadModel(
                    asr_pb2.LoadModelRequest(model=options.model.strip()), timeout=MODEL_CHECK_TIMEOUT_S
                )
            else:
                listed = await self._asr.ListModels(asr_pb2.ListModelsRequest(), timeout=MODEL_CHECK_TIMEOUT_S)
                pinned = [model for model in listed.models if model.pinned]
                if not pinned:
                    raise UnavailableError("the ASR service has no default model loaded yet; retry shortly")
                info = pinned[0]
        except grpc.aio.AioRpcError as error:
            if error.code() == grpc.StatusCode.NOT_FOUND:
                raise NotFoundError(error.details() or f"unknown model {options.model!r}") from None
            raise
        check_capability(info.name, info.multilingual, options)
        return options


def _settings(config: gateway_pb2.StreamingConfig) -> StreamSettings:
    max_utterance_s = duration_to_seconds(config.max_utterance_duration) or StreamSettings.max_utterance_s
    if not MIN_UTTERANCE_S <= max_utterance_s <= MAX_UTTERANCE_S:
        raise InvalidInputError(
            f"max_utterance_duration {max_utterance_s:g} s must be between {MIN_UTTERANCE_S:g} and "
            f"{MAX_UTTERANCE_S:g} s"
        )
    context_audio_s = StreamSettings.context_audio_s
    if config.HasField("context_audio_duration"):
        context_audio_s = duration_to_seconds(config.context_audio_duration)
        if not 0.0 <= context_audio_s <= MAX_CONTEXT_AUDIO_S:
            raise InvalidInputError(
                f"context_audio_duration {context_audio_s:g} s must be between 0 and {MAX_CONTEXT_AUDIO_S:g} s"
            )
    validate_live_vad(config.speech_detection)
    return StreamSettings(
        interim_results=config.interim_results, max_utterance_s=max_utterance_s, context_audio_s=context_audio_s
    )

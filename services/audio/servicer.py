"""gRPC face of the audio engine: messages in, engine calls, messages out.

Errors are raised as `common.errors` types and mapped to status codes by the
interceptor of `common.rpc.server`. Decoding runs in a bounded executor (the
service's decode workers); a decode whose RPC is cancelled is told to stop,
and whatever it stored anyway is released.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from pathlib import Path

import grpc

from common.audio.access import audio_ref_to_proto
from common.errors import InvalidInputError, ResourceExhaustedError
from common.rpc.convert import datetime_to_timestamp, duration_to_seconds, seconds_to_duration, time_range_from_proto
from common.rpc.uploads import check_file_name, ensure_upload_complete
from services.audio.engine import AudioEngine, DecodeResult
from services.audio.live_source import check_url, live_samples
from subtitler.audio.v1 import audio_pb2, audio_pb2_grpc
from subtitler.common.v1 import common_pb2

logger = logging.getLogger(__name__)


class AudioServicer(audio_pb2_grpc.AudioServiceServicer):
    """Implements `subtitler.audio.v1.AudioService` on an `AudioEngine`.

    `decode_executor` bounds concurrent decodes (its worker count);
    `io_executor` writes uploads to the spool (None: the loop's default).
    """

    def __init__(
        self,
        engine: AudioEngine,
        decode_executor: Executor,
        io_executor: Executor | None = None,
        *,
        live_sources: tuple[str, ...] = (),
        max_live_sources: int = 16,
    ) -> None:
        self._live_sources = live_sources
        self._max_live_sources = max_live_sources
        self._open_live_sources = 0
        self._engine = engine
        self._decode_executor = decode_executor
        self._io_executor = io_executor

    async def StreamLiveSource(
        self, request: audio_pb2.StreamLiveSourceRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[audio_pb2.StreamLiveSourceResponse]:
        check_url(request.uri, self._live_sources)  # refused before any thread or connection
        if self._open_live_sources >= self._max_live_sources:
            raise ResourceExhaustedError(
                f"this audio service has its maximum of {self._max_live_sources} live sources open; retry later",
                retry_after_s=10.0,
            )
        self._open_live_sources += 1
        stop = threading.Event()
        blocks = live_samples(request.uri, self._live_sources, self._engine.decode_options.allowed_demuxers, stop)
        try:
            # Each block in a thread of its own: a live source may take seconds to deliver one.
            while (block := await asyncio.to_thread(next, blocks, None)) is not None:
                yield audio_pb2.StreamLiveSourceResponse(samples=block.astype("<f4").tobytes())
        finally:
            stop.set()
            self._open_live_sources -= 1
            await asyncio.to_thread(blocks.close)

    async def DecodeFile(
        self, request: audio_pb2.DecodeFileRequest, context: grpc.aio.ServicerContext
    ) -> audio_pb2.DecodeResponse:
        path = self._engine.resolve_media_path(request.path)
        lease_s = duration_to_seconds(request.lease_duration) if request.HasField("lease_duration") else None
        return _decode_response(await self._decode(path, lease_s, display_name=request.path))

    async def UploadAudio(
        self, request_iterator: AsyncIterator[audio_pb2.UploadAudioRequest], context: grpc.aio.ServicerContext
    ) -> audio_pb2.DecodeResponse:
        first = await anext(aiter(request_iterator), None)
        if first is None or not first.HasField("metadata"):
            raise InvalidInputError("the first message of UploadAudio must carry the metadata")
        metadata = first.metadata
        check_file_name(metadata.file_name)
        lease_s = duration_to_seconds(metadata.lease_duration) if metadata.HasField("lease_duration") else None
        self._engine.checked_lease_s(lease_s)
        display_name = Path(metadata.file_name).name or "upload"
        loop = asyncio.get_running_loop()
        with self._engine.open_upload(metadata.file_name, metadata.size_bytes) as spool:
            async for message in request_iterator:
                if message.HasField("metadata"):
                    raise InvalidInputError("UploadAudio takes the metadata once, in the first message")
                if message.chunk:
                    await loop.run_in_executor(self._io_executor, spool.write, message.chunk)
            ensure_upload_complete(context, metadata.size_bytes, spool.size_bytes, display_name)
            path = await loop.run_in_executor(self._io_executor, spool.finish)
            logger.debug("received upload %s: %d bytes", display_name, spool.size_bytes)
            result = await self._decode(path, lease_s, display_name=display_name)
        return _decode_response(result)

    async def ReadSamples(
        self, request: audio_pb2.ReadSamplesRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[audio_pb2.ReadSamplesResponse]:
        time_range = time_range_from_proto(request.range) if request.HasField("range") else None
        for offset_samples, payload in self._engine.sample_chunks(request.audio_id, time_range):
            yield audio_pb2.ReadSamplesResponse(samples_f32le=payload, offset_samples=offset_samples)

    async def RenewLease(
        self, request: audio_pb2.RenewLeaseRequest, context: grpc.aio.ServicerContext
    ) -> audio_pb2.RenewLeaseResponse:
        lease_s = duration_to_seconds(request.lease_duration) if request.HasField("lease_duration") else None
        expire_time = self._engine.renew(request.audio_id, lease_s)
        return audio_pb2.RenewLeaseResponse(lease_expire_time=datetime_to_timestamp(expire_time))

    async def GetAudio(
        self, request: audio_pb2.GetAudioRequest, context: grpc.aio.ServicerContext
    ) -> common_pb2.AudioHandle:
        return audio_ref_to_proto(self._engine.describe(request.audio_id))

    async def ReleaseAudio(
        self, request: audio_pb2.ReleaseAudioRequest, context: grpc.aio.ServicerContext
    ) -> audio_pb2.ReleaseAudioResponse:
        return audio_pb2.ReleaseAudioResponse(released=self._engine.release(request.audio_id))

    async def _decode(self, path: Path, lease_s: float | None, *, display_name: str) -> DecodeResult:
        cancel_event = threading.Event()
        decode = functools.partial(
            self._engine.decode_file, path, lease_s, cancel_event=cancel_event, display_name=display_name
        )
        future = asyncio.get_running_loop().run_in_executor(self._decode_executor, decode)
        try:
            return await asyncio.shield(future)
        except asyncio.CancelledError:
            cancel_event.set()
            future.add_done_callback(self._release_abandoned)
            raise

    def _release_abandoned(self, future: asyncio.Future[DecodeResult]) -> None:
        """Release what a decode stored after its caller went away."""
        if future.cancelled() or future.exception() is not None:
            return
        audio_id = future.result().audio.audio_id
        self._engine.release(audio_id)
        logger.info("released audio %s: its decode was cancelled by the caller", audio_id)


def _decode_response(result: DecodeResult) -> audio_pb2.DecodeResponse:
    source = result.source
    return audio_pb2.DecodeResponse(
        audio=audio_ref_to_proto(result.audio),
        source=audio_pb2.SourceDescription(
            container_format=source.container_format,
            codec=source.codec,
            source_sample_rate_hertz=source.source_sample_rate_hertz,
            source_channel_count=source.source_channel_count,
            size_bytes=source.size_bytes,
        ),
        decode_duration=seconds_to_duration(result.decode_duration_s),
    )

"""The pipeline of one job: decode, detect speech, transcribe, align.

Stages overlap: transcription starts on the first batch of speech chunks while
detection goes on, and alignment runs on each chunk's transcript while the next
batch is transcribed. Every stage output is committed to the store as it is
produced, and every change is published as a job event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import uuid
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from common.convert import (
    duration_to_seconds,
    segment_to_proto,
    segments_from_proto,
    segments_to_proto,
    time_range_from_proto,
    time_range_to_proto,
)
from common.languages import primary_language
from common.server import JOB_ID_KEY, REQUEST_ID_KEY
from common.transcript import Segment, TimeRange
from gateway.config import GatewayConfig
from gateway.events import EventHub
from gateway.jobs import JobRecord, Stage
from gateway.store import JobStore
from subtitler.align.v1 import align_pb2, align_pb2_grpc
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc
from subtitler.audio.v1 import audio_pb2, audio_pb2_grpc
from subtitler.common.v1 import common_pb2
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2, vad_pb2_grpc

logger = logging.getLogger(__name__)

UPLOAD_CHUNK_BYTES = 1024 * 1024
# How often a running job renews the lease of its decoded audio.
LEASE_RENEWAL_INTERVAL_S = 300.0


class StageFailedError(Exception):
    """A peer service refused a stage: the job fails with its status."""

    def __init__(self, stage: Stage, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Peers:
    """Stubs of the stage services."""

    audio: audio_pb2_grpc.AudioServiceStub
    vad: vad_pb2_grpc.VadServiceStub
    asr: asr_pb2_grpc.AsrServiceStub
    align: align_pb2_grpc.AlignServiceStub


@dataclass
class _Chunk:
    index: int
    time_range: TimeRange


class JobPipeline:
    """Runs one job through the stage services."""

    def __init__(self, job: JobRecord, peers: Peers, store: JobStore, events: EventHub, config: GatewayConfig) -> None:
        self._job = job
        self._peers = peers
        self._store = store
        self._events = events
        self._config = config
        self._handle: common_pb2.AudioHandle | None = None
        self._chunks: list[_Chunk] = []
        self._detection_done = False
        self._transcripts: dict[int, list[Segment]] = {}
        self._aligned: dict[int, list[Segment]] = {}
        # Resolved once the language is known (see _choose_align_method).
        self._align_method: align_pb2.AlignMethod.ValueType | None = None

    # Plumbing

    def _call_options(self) -> dict[str, object]:
        return {
            "timeout": self._config.call_timeout_s,
            "wait_for_ready": self._config.wait_for_ready,
            "metadata": ((JOB_ID_KEY, self._job.job_id), (REQUEST_ID_KEY, uuid.uuid4().hex[:16])),
        }

    async def _save(self) -> None:
        await self._store.run(self._store.update_job, self._job)

    async def _progress(self, stage: Stage, fraction: float, done: int = 0, total: int = 0) -> None:
        # Estimates only grow: a watcher never sees progress go back.
        previous = self._job.stage_fractions.get(stage, 0.0)
        self._job.stage_fractions[stage] = min(1.0, max(previous, fraction))
        await self._save()
        await self._events.publish(
            self._job,
            stage_progress=gateway_pb2.StageProgress(
                stage=int(stage),  # type: ignore[arg-type]
                fraction=self._job.stage_fractions[stage],
                done_count=done,
                total_count=total,
            ),
        )

    async def _enter(self, stage: Stage) -> None:
        self._job.stage = stage
        await self._progress(stage, self._job.stage_fractions.get(stage, 0.0))

    # The job

    async def run(self) -> list[Segment]:
        """Runs every stage and returns the final segments."""
        try:
            self._handle = await self._decode()
            renewal = asyncio.get_running_loop().create_task(self._renew_lease_forever())
            try:
                return await self._detect_transcribe_align()
            finally:
                renewal.cancel()
        finally:
            await self._release_audio()

    async def _decode(self) -> common_pb2.AudioHandle:
        await self._enter(Stage.DECODE)
        try:
            if self._job.uploaded:
                response = await self._peers.audio.UploadAudio(
                    self._upload_requests(Path(self._job.media_path)), **self._call_options()
                )
            else:
                response = await self._peers.audio.DecodeFile(
                    audio_pb2.DecodeFileRequest(path=self._job.media_path), **self._call_options()
                )
        except grpc.aio.AioRpcError as error:
            raise StageFailedError(Stage.DECODE, error.code(), error.details() or "") from error
        handle = response.audio
        await self._store.run(self._store.save_audio_handle, self._job.job_id, handle)
        self._job.audio_duration_s = duration_to_seconds(handle.duration)
        await self._save()
        await self._events.publish(self._job, audio_duration=handle.duration)
        await self._progress(Stage.DECODE, 1.0)
        return handle

    async def _upload_requests(self, path: Path) -> AsyncIterator[audio_pb2.UploadAudioRequest]:
        media = await asyncio.to_thread(open, path, "rb")
        try:
            size = os.fstat(media.fileno()).st_size
            yield audio_pb2.UploadAudioRequest(
                metadata=audio_pb2.UploadMetadata(file_name=self._job.source.removeprefix("upload:"), size_bytes=size)
            )
            while block := await asyncio.to_thread(media.read, UPLOAD_CHUNK_BYTES):
                yield audio_pb2.UploadAudioRequest(chunk=block)
        finally:
            media.close()

    async def _renew_lease_forever(self) -> None:
        assert self._handle is not None
        while True:
            await asyncio.sleep(LEASE_RENEWAL_INTERVAL_S)
            try:
                await self._peers.audio.RenewLease(
                    audio_pb2.RenewLeaseRequest(audio_id=self._handle.audio_id), **self._call_options()
                )
            except grpc.aio.AioRpcError as error:
                logger.warning("lease renewal failed for job %s: %s", self._job.job_id, error.details())

    async def _release_audio(self) -> None:
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        try:
            await self._peers.audio.ReleaseAudio(audio_pb2.ReleaseAudioRequest(audio_id=handle.audio_id), timeout=10.0)
        except grpc.aio.AioRpcError as error:
            # The lease frees it anyway; nothing is lost.
            logger.warning("could not release audio of job %s: %s", self._job.job_id, error.details())
        with contextlib.suppress(Exception):
            await self._store.run(self._store.save_audio_handle, self._job.job_id, None)

    async def _detect_transcribe_align(self) -> list[Segment]:
        chunk_queue: asyncio.Queue[_Chunk | None] = asyncio.Queue()
        align_queue: asyncio.Queue[int | None] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as group:
                group.create_task(self._detect(chunk_queue))
                group.create_task(self._transcribe(chunk_queue, align_queue))
                group.create_task(self._align(align_queue))
        except ExceptionGroup as group:
            # The first stage that failed is the job's failure; the others
            # were cancelled because of it.
            failures = [error for error in group.exceptions if isinstance(error, StageFailedError)]
            raise (failures[0] if failures else group.exceptions[0]) from None
        order = sorted(self._transcripts)
        source = self._transcripts if self._job.config.skip_alignment else self._aligned
        return [segment for index in order for segment in source[index]]

    async def _detect(self, chunk_queue: asyncio.Queue[_Chunk | None]) -> None:
        assert self._handle is not None
        self._job.stage_fractions.setdefault(Stage.DETECT_SPEECH, 0.0)
        duration_s = max(self._job.audio_duration_s, 1e-9)
        try:
            stream = self._peers.vad.DetectSpeech(
                vad_pb2.DetectSpeechRequest(audio=self._handle, options=self._job.config.speech_detection),
                **self._call_options(),
            )
            async for response in stream:
                if response.HasField("chunk"):
                    chunk = _Chunk(response.chunk_index, time_range_from_proto(response.chunk))
                    await self._store.run(
                        self._store.save_speech_chunk, self._job.job_id, chunk.index, chunk.time_range
                    )
                    self._chunks.append(chunk)
                    chunk_queue.put_nowait(chunk)
                analysed_s = duration_to_seconds(response.analysed_duration)
                await self._progress(Stage.DETECT_SPEECH, analysed_s / duration_s, len(self._chunks))
        except grpc.aio.AioRpcError as error:
            raise StageFailedError(Stage.DETECT_SPEECH, error.code(), error.details() or "") from error
        finally:
            chunk_queue.put_nowait(None)
        self._detection_done = True
        await self._progress(Stage.DETECT_SPEECH, 1.0, len(self._chunks), len(self._chunks))

    async def _next_batch(self, chunk_queue: asyncio.Queue[_Chunk | None]) -> list[_Chunk] | None:
        """Up to a batch of chunks: as many as are ready once at least one is
        (a full batch when detection runs ahead); None when there are no more."""
        first = await chunk_queue.get()
        if first is None:
            return None
        batch = [first]
        size = self._job.config.transcription.batch_size or self._config.asr_batch_size
        while len(batch) < size:
            if chunk_queue.empty() and not self._detection_done:
                # Detection is still running: wait for a full batch rather than
                # sending a small one (batching is where the speed is).
                item = await chunk_queue.get()
            elif chunk_queue.empty():
                break
            else:
                item = chunk_queue.get_nowait()
            if item is None:
                chunk_queue.put_nowait(None)
                break
            batch.append(item)
        return batch

    async def _transcribe(
        self, chunk_queue: asyncio.Queue[_Chunk | None], align_queue: asyncio.Queue[int | None]
    ) -> None:
        assert self._handle is not None
        options = asr_pb2.TranscriptionOptions()
        options.CopyFrom(self._job.config.transcription)
        try:
            while (batch := await self._next_batch(chunk_queue)) is not None:
                if self._job.stage < Stage.TRANSCRIBE:
                    await self._enter(Stage.TRANSCRIBE)
                if not options.language_code:
                    options.language_code = await self._detect_language(batch[0])
                if self._align_method is None:
                    self._align_method = self._choose_align_method(options)
                    # Cross-attention times come almost free in the ASR's own pass.
                    options.word_timestamps = self._align_method == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
                await self._transcribe_batch(batch, options, align_queue)
        except grpc.aio.AioRpcError as error:
            raise StageFailedError(Stage.TRANSCRIBE, error.code(), error.details() or "") from error
        finally:
            align_queue.put_nowait(None)
        if not self._job.config.skip_alignment:
            self._job.stage = Stage.ALIGN  # what is left is aligning the last chunks
        await self._progress(Stage.TRANSCRIBE, 1.0, len(self._transcripts), len(self._chunks))

    async def _detect_language(self, chunk: _Chunk) -> str:
        assert self._handle is not None
        response = await self._peers.asr.DetectLanguage(
            asr_pb2.DetectLanguageRequest(
                audio=self._handle,
                range=time_range_to_proto(chunk.time_range),
                model=self._job.config.transcription.model,
            ),
            **self._call_options(),
        )
        self._job.language_code = response.language_code
        self._job.language_probability = response.probability
        await self._save()
        await self._events.publish(self._job, language_code=response.language_code)
        return response.language_code

    async def _transcribe_batch(
        self, batch: Sequence[_Chunk], options: asr_pb2.TranscriptionOptions, align_queue: asyncio.Queue[int | None]
    ) -> None:
        assert self._handle is not None
        stream = self._peers.asr.Transcribe(
            asr_pb2.TranscribeRequest(
                audio=self._handle,
                chunks=[time_range_to_proto(chunk.time_range) for chunk in batch],
                first_chunk_index=batch[0].index,
                options=options,
            ),
            **self._call_options(),
        )
        async for response in stream:
            segments = segments_from_proto(response.segments)
            await self._store.run(
                self._store.save_chunk_transcript,
                self._job.job_id,
                response.chunk_index,
                response.language_code,
                segments,
            )
            self._transcripts[response.chunk_index] = segments
            if not self._job.language_code:
                self._job.language_code = response.language_code
                self._job.language_probability = response.language_probability
            self._job.segment_count += len(segments)
            for segment in segments:
                await self._events.publish(self._job, segment=segment_to_proto(segment))
            await self._progress(
                Stage.TRANSCRIBE,
                self._stage_fraction(len(self._transcripts)),
                len(self._transcripts),
                len(self._chunks),
            )
            align_queue.put_nowait(response.chunk_index)

    def _stage_fraction(self, done_chunks: int) -> float:
        """Chunks done over chunks known, scaled by how much of the audio
        detection has covered (the total is not known before it ends)."""
        known = max(len(self._chunks), 1)
        detected = 1.0 if self._detection_done else self._job.stage_fractions.get(Stage.DETECT_SPEECH, 0.0)
        return done_chunks / known * detected

    def _choose_align_method(self, options: asr_pb2.TranscriptionOptions) -> align_pb2.AlignMethod.ValueType:
        """The requested method, or: phonetic (pocketsphinx, ~30 ms) for English
        speech, Whisper cross-attention for any other language and for
        translations (whose words were never spoken as such)."""
        config = self._job.config
        if config.skip_alignment:
            return align_pb2.ALIGN_METHOD_UNSPECIFIED
        if config.align_method != align_pb2.ALIGN_METHOD_UNSPECIFIED:
            return config.align_method
        if options.task != asr_pb2.TASK_TRANSLATE and primary_language(options.language_code) == "en":
            return align_pb2.ALIGN_METHOD_PHONETIC
        return align_pb2.ALIGN_METHOD_CROSS_ATTENTION

    async def _align(self, align_queue: asyncio.Queue[int | None]) -> None:
        assert self._handle is not None
        config = self._job.config
        while (chunk_index := await align_queue.get()) is not None:
            if config.skip_alignment:
                continue
            segments = self._transcripts[chunk_index]
            spoken = [segment for segment in segments if segment.text.strip()]
            if not spoken:
                aligned, method = segments, align_pb2.ALIGN_METHOD_UNSPECIFIED
            elif self._align_method == align_pb2.ALIGN_METHOD_CROSS_ATTENTION and all(s.words for s in spoken):
                aligned, method = segments, align_pb2.ALIGN_METHOD_CROSS_ATTENTION  # timed by the ASR pass
            else:
                try:
                    response = await self._peers.align.AlignWords(
                        align_pb2.AlignWordsRequest(
                            audio=self._handle,
                            segments=segments_to_proto(segments),
                            language_code=self._job.language_code or config.transcription.language_code,
                            method=self._align_method or config.align_method,
                            model=config.transcription.model,
                        ),
                        **self._call_options(),
                    )
                except grpc.aio.AioRpcError as error:
                    raise StageFailedError(Stage.ALIGN, error.code(), error.details() or "") from error
                aligned, method = segments_from_proto(response.segments), response.method
            await self._store.run(self._store.save_chunk_alignment, self._job.job_id, chunk_index, method, aligned)
            self._aligned[chunk_index] = aligned
            await self._progress(
                Stage.ALIGN, self._stage_fraction(len(self._aligned)), len(self._aligned), len(self._chunks)
            )
        if not config.skip_alignment:
            await self._progress(Stage.ALIGN, 1.0, len(self._aligned), len(self._chunks))

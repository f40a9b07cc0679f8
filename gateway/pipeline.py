"""The pipeline of one job: decode, detect speech, transcribe, align.

Stages overlap: transcription starts on the first batch of speech chunks while
detection goes on, and alignment runs on each chunk's transcript while the next
batch is transcribed. Every stage output is committed to the store as it is
produced, and every change is published as a job event.

A job resumed after a restart starts from its checkpoint: audio still held by
the audio service is used again (else decoded again), stored speech chunks
are not detected again, stored transcripts are not sent to ASR again, stored
words are not aligned again.

Calls to the stage services have deadlines. UNAVAILABLE means a service is
down or loading: the job waits, its reason visible to watchers, up to
`RetryPolicy.max_unavailable_wait_s`. DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED
and ABORTED are retried with exponential backoff and jitter up to
`RetryPolicy.max_retries` times per call. Any other code fails the job with the
service's message. A NOT_FOUND while the job's audio is gone (the audio
service restarted, the lease expired) decodes again instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import math
import os
import random
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import grpc

from common.convert import (
    duration_to_seconds,
    epoch_to_timestamp,
    seconds_to_duration,
    segment_to_proto,
    segments_from_proto,
    segments_to_proto,
    time_range_from_proto,
    time_range_to_proto,
    timestamp_to_epoch,
)
from common.languages import primary_language
from common.server import JOB_ID_KEY, REQUEST_ID_KEY, RETRY_AFTER_KEY
from common.transcript import Segment, TimeRange
from gateway.asr_capacity import AsrCapacity
from gateway.config import GatewayConfig
from gateway.events import EventHub
from gateway.jobs import JobRecord, Stage
from gateway.store import Checkpoint, JobStore
from subtitler.align.v1 import align_pb2, align_pb2_grpc
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc
from subtitler.audio.v1 import audio_pb2, audio_pb2_grpc
from subtitler.common.v1 import common_pb2
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2, vad_pb2_grpc

logger = logging.getLogger(__name__)

T = TypeVar("T")

UPLOAD_CHUNK_BYTES = 1024 * 1024
# A running job renews its audio's lease at half of what is left, at least this often.
MAX_LEASE_RENEWAL_INTERVAL_S = 300.0
# Codes worth another attempt; UNAVAILABLE is waited out rather than counted.
RETRIED_CODES = frozenset(
    {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
)
STAGE_SERVICES = {
    Stage.DECODE: "audio",
    Stage.DETECT_SPEECH: "vad",
    Stage.TRANSCRIBE: "asr",
    Stage.ALIGN: "align",
}


class StageFailedError(Exception):
    """A peer service refused a stage: the job fails with its status."""

    def __init__(self, stage: Stage, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.code = code
        self.message = message


@dataclass(frozen=True)
class Peers:
    """Stubs of the stage services, and the slots of Transcribe calls their
    ASR workers take at once (shared by every job)."""

    audio: audio_pb2_grpc.AudioServiceStub
    vad: vad_pb2_grpc.VadServiceStub
    asr: asr_pb2_grpc.AsrServiceStub
    align: align_pb2_grpc.AlignServiceStub
    asr_capacity: AsrCapacity = field(default_factory=lambda: AsrCapacity(None, replica_count=1))


@dataclass(frozen=True)
class _Chunk:
    index: int
    time_range: TimeRange


class JobPipeline:
    """Runs one job through the stage services."""

    def __init__(
        self,
        job: JobRecord,
        peers: Peers,
        store: JobStore,
        events: EventHub,
        config: GatewayConfig,
        checkpoint: Checkpoint | None = None,
    ) -> None:
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
        # Set when the gateway stops: the audio is kept for the resumed job.
        self.keep_audio = False
        self._resumed_handle: common_pb2.AudioHandle | None = None
        self._restored_detection = False
        self._redecode_lock = asyncio.Lock()
        self._language_settled = asyncio.Event()
        # Why each call now waiting for a service waits, in the order they began.
        self._waiting: dict[object, str] = {}
        if checkpoint is not None:
            self._restore(checkpoint)

    def _restore(self, checkpoint: Checkpoint) -> None:
        self._resumed_handle = checkpoint.audio_handle
        self._chunks = [_Chunk(index, checkpoint.speech_chunks[index]) for index in sorted(checkpoint.speech_chunks)]
        self._restored_detection = checkpoint.detection_complete
        self._transcripts = {index: segments for index, (_, segments) in checkpoint.transcripts.items()}
        self._aligned = {index: segments for index, (_, segments) in checkpoint.alignments.items()}

    def resume_summary(self, audio_reused: bool) -> gateway_pb2.ResumeSummary:
        return gateway_pb2.ResumeSummary(
            audio_reused=audio_reused,
            detection_reused=self._restored_detection,
            transcribed_chunk_count=len(self._transcripts),
            aligned_chunk_count=len(self._aligned),
        )

    # Plumbing

    def _call_options(self) -> dict[str, object]:
        return {
            "timeout": self._config.call_timeout_s,
            "metadata": ((JOB_ID_KEY, self._job.job_id), (REQUEST_ID_KEY, uuid.uuid4().hex[:16])),
        }

    async def _save(self) -> None:
        await self._store.save(self._job)

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

    async def _call(self, stage: Stage, chunk_index: int, attempt: Callable[[], Awaitable[T]]) -> T:
        """Runs `attempt` (one call, its stream consumed) under the retry policy."""
        policy = self._config.retry
        retries = 0
        waits = 0
        waited_s = 0.0
        # This call's key among the waits in progress (stages run concurrently).
        wait_key = object()
        while True:
            handle = self._handle
            try:
                result = await attempt()
            except grpc.aio.AioRpcError as error:
                code, details = error.code(), error.details() or error.code().name
                if (
                    code == grpc.StatusCode.NOT_FOUND
                    and stage != Stage.DECODE
                    and await self._replace_lost_audio(handle)
                ):
                    # The audio went away under the job and is decoded again.
                    retries += 1
                    if retries > policy.max_retries:
                        raise StageFailedError(stage, code, details) from error
                    await self._record_retry(stage, chunk_index, retries, policy.max_retries + 1, code, details, 0.0)
                    continue
                if code == grpc.StatusCode.UNAVAILABLE:
                    waits += 1
                    backoff_s = self._backoff_s(waits)
                    if waited_s + backoff_s > policy.max_unavailable_wait_s:
                        message = f"the {STAGE_SERVICES[stage]} service was unavailable for {waited_s:.0f} s: {details}"
                        raise StageFailedError(stage, code, message) from error
                    waited_s += backoff_s
                    await self._wait_for_service(wait_key, stage, details, backoff_s)
                elif code in RETRIED_CODES:
                    retries += 1
                    if retries > policy.max_retries:
                        message = f"{details} (gave up after {retries} attempts)"
                        raise StageFailedError(stage, code, message) from error
                    backoff_s = _retry_after_s(error) or self._backoff_s(retries)
                else:
                    raise StageFailedError(stage, code, details) from error
                if code == grpc.StatusCode.UNAVAILABLE:
                    # Waits are bounded by time, not by a count.
                    await self._record_retry(stage, chunk_index, waits, 0, code, details, backoff_s)
                else:
                    await self._record_retry(
                        stage, chunk_index, retries, policy.max_retries + 1, code, details, backoff_s
                    )
                await asyncio.sleep(backoff_s)
                continue
            if self._waiting.pop(wait_key, None) is not None:
                # Another stage may still be waiting: its reason stays.
                self._job.waiting_reason = next(reversed(self._waiting.values()), "")
                await self._save()
                await self._events.publish(self._job, waiting_reason=self._job.waiting_reason)
            return result

    def _backoff_s(self, attempt: int) -> float:
        """Exponential backoff with full jitter."""
        policy = self._config.retry
        ceiling_s = min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** (attempt - 1))
        return random.uniform(ceiling_s / 2, ceiling_s)

    async def _wait_for_service(self, wait_key: object, stage: Stage, details: str, backoff_s: float) -> None:
        reason = f"waiting for the {STAGE_SERVICES[stage]} service ({details}); next try in {backoff_s:.1f} s"
        self._waiting[wait_key] = reason
        self._job.waiting_reason = reason
        await self._save()
        await self._events.publish(self._job, waiting_reason=self._job.waiting_reason)

    async def _record_retry(
        self,
        stage: Stage,
        chunk_index: int,
        attempt: int,
        max_attempts: int,
        code: grpc.StatusCode,
        details: str,
        backoff_s: float,
    ) -> None:
        retry = gateway_pb2.RetryAttempt(
            stage=int(stage),  # type: ignore[arg-type]
            chunk_index=chunk_index,
            attempt=attempt,
            max_attempts=max_attempts,
            code=code.name,
            message=details,
            backoff=seconds_to_duration(backoff_s),
            attempt_time=epoch_to_timestamp(time.time()),
        )
        logger.info(
            "job %s: %s call failed with %s (%s); attempt %d, next in %.1f s",
            self._job.job_id,
            STAGE_SERVICES[stage],
            code.name,
            details,
            attempt,
            backoff_s,
        )
        await self._store.run(self._store.add_retry, self._job.job_id, retry)
        await self._events.publish(self._job, retry=retry)

    # The job

    async def run(self) -> list[Segment]:
        """Runs every stage still to do and returns the final segments."""
        try:
            self._handle = await self._reuse_or_decode()
            renewal = asyncio.get_running_loop().create_task(self._renew_lease_forever())
            try:
                return await self._detect_transcribe_align()
            finally:
                renewal.cancel()
        finally:
            if not self.keep_audio:
                await self._release_audio()

    async def _reuse_or_decode(self) -> common_pb2.AudioHandle:
        resumed = self._resumed_handle is not None
        if resumed:
            self._handle = self._resumed_handle
            if await self._audio_alive(self._resumed_handle):
                await self._events.publish(self._job, resumed=self.resume_summary(audio_reused=True))
                return self._resumed_handle  # type: ignore[return-value]
            self._handle = None
        if resumed or self._transcripts or self._chunks:
            await self._events.publish(self._job, resumed=self.resume_summary(audio_reused=False))
        return await self._decode()

    async def _replace_lost_audio(self, used: common_pb2.AudioHandle | None) -> bool:
        """After a NOT_FOUND from a call made with `used`: whether the audio was
        lost and is now decoded again (False: the NOT_FOUND was about something
        else). Stages run concurrently; one decode serves them all."""
        async with self._redecode_lock:
            if self._handle is not used:
                return True  # another stage decoded it again meanwhile
            if await self._audio_alive(used):
                return False
            stage = self._job.stage
            self._handle = await self._decode()
            self._job.stage = stage  # back to the stage that lost it
            return True

    async def _audio_alive(self, handle: common_pb2.AudioHandle | None) -> bool:
        """Whether the audio service still holds `handle`'s audio (renewing its lease)."""
        if handle is None:
            return False
        request = audio_pb2.RenewLeaseRequest(audio_id=handle.audio_id)
        try:
            await self._call(Stage.DECODE, -1, lambda: self._peers.audio.RenewLease(request, **self._call_options()))
        except StageFailedError as failure:
            if failure.code == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def _decode(self) -> common_pb2.AudioHandle:
        await self._enter(Stage.DECODE)

        async def decode_once() -> audio_pb2.DecodeResponse:
            if self._job.uploaded:
                return await self._peers.audio.UploadAudio(
                    self._upload_requests(Path(self._job.media_path)), **self._call_options()
                )
            return await self._peers.audio.DecodeFile(
                audio_pb2.DecodeFileRequest(path=self._job.media_path), **self._call_options()
            )

        handle = (await self._call(Stage.DECODE, -1, decode_once)).audio
        self._handle = handle  # released by run() from now on, whatever happens next
        await self._store.run(self._store.save_audio_handle, self._job.job_id, handle)
        if not self._job.audio_duration_s:
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
        """Renews the audio's lease when half of what is left of it has passed."""
        expire_s = timestamp_to_epoch(self._handle.lease_expire_time) if self._handle else 0.0
        while True:
            await asyncio.sleep(min(MAX_LEASE_RENEWAL_INTERVAL_S, max(1.0, (expire_s - time.time()) / 2)))
            if self._handle is None:
                continue
            try:
                response = await self._peers.audio.RenewLease(
                    audio_pb2.RenewLeaseRequest(audio_id=self._handle.audio_id), **self._call_options()
                )
                expire_s = timestamp_to_epoch(response.lease_expire_time)
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
        order = [chunk.index for chunk in self._chunks]
        source = self._transcripts if self._job.config.skip_alignment else self._aligned
        return [segment for index in order for segment in source[index]]

    async def _detect(self, chunk_queue: asyncio.Queue[_Chunk | None]) -> None:
        # Stored chunks go first: detection is deterministic, so a detection
        # that runs again only adds the chunks after them.
        for chunk in self._chunks:
            chunk_queue.put_nowait(chunk)
        try:
            if not self._restored_detection:
                await self._enter(Stage.DETECT_SPEECH)
                await self._call(Stage.DETECT_SPEECH, -1, lambda: self._detect_once(chunk_queue))
                await self._store.run(self._store.mark_detection_complete, self._job.job_id)
        finally:
            chunk_queue.put_nowait(None)
        self._detection_done = True
        audio_s = round(self._job.audio_duration_s)
        await self._progress(Stage.DETECT_SPEECH, 1.0, audio_s, audio_s)

    async def _detect_once(self, chunk_queue: asyncio.Queue[_Chunk | None]) -> None:
        assert self._handle is not None
        duration_s = max(self._job.audio_duration_s, 1e-9)
        stream = self._peers.vad.DetectSpeech(
            vad_pb2.DetectSpeechRequest(audio=self._handle, options=self._job.config.speech_detection),
            **self._call_options(),
        )
        async for response in stream:
            if response.HasField("chunk") and response.chunk_index >= len(self._chunks):
                chunk = _Chunk(response.chunk_index, time_range_from_proto(response.chunk))
                await self._store.run(self._store.save_speech_chunk, self._job.job_id, chunk.index, chunk.time_range)
                self._chunks.append(chunk)
                chunk_queue.put_nowait(chunk)
            analysed_s = duration_to_seconds(response.analysed_duration)
            await self._progress(Stage.DETECT_SPEECH, analysed_s / duration_s, round(analysed_s), round(duration_s))

    async def _next_batch(
        self, chunk_queue: asyncio.Queue[_Chunk | None], align_queue: asyncio.Queue[int | None]
    ) -> list[_Chunk] | None:
        """Up to a batch of chunks still to transcribe: as many as are ready
        once at least one is (a full batch while detection runs ahead); None
        when there are no more. Once detection is done, the chunks left are
        split evenly over the ASR workers, so that none idles at the end while
        another decodes a full batch. Chunks transcribed before go straight to
        alignment."""
        capacity = self._peers.asr_capacity
        size = capacity.batch_size(self._job.config.transcription.batch_size, self._config.asr_batch_size)
        batch: list[_Chunk] = []
        while len(batch) < self._tail_share(size, len(batch) + chunk_queue.qsize()):
            if batch and chunk_queue.empty() and self._detection_done:
                break
            item = await chunk_queue.get()
            if item is None:
                chunk_queue.put_nowait(None)
                break
            if item.index in self._transcripts:
                align_queue.put_nowait(item.index)
                continue
            batch.append(item)
        return batch or None

    def _tail_share(self, size: int, queued: int) -> int:
        """Chunks for the next call: `size`, or once detection is done, the
        `queued` chunks left (the end-of-chunks mark among them) shared over
        the ASR workers."""
        if not self._detection_done:
            return size
        left = max(1, queued - 1)
        return max(1, min(size, math.ceil(left / self._peers.asr_capacity.figures.workers)))

    async def _transcribe(
        self, chunk_queue: asyncio.Queue[_Chunk | None], align_queue: asyncio.Queue[int | None]
    ) -> None:
        options = asr_pb2.TranscriptionOptions()
        options.CopyFrom(self._job.config.transcription)
        if not options.language_code and self._job.language_code:
            options.language_code = self._job.language_code  # detected before a restart
        elif options.language_code and not self._job.language_code:
            self._job.language_code, self._job.language_probability = options.language_code, 1.0
            await self._save()
            await self._events.publish(self._job, language_code=options.language_code)
        if options.language_code:
            self._settle_language(options)
        capacity = self._peers.asr_capacity
        await capacity.refresh()
        try:
            # Batches go out while a slot is free, so one job keeps every ASR
            # worker busy; results are stored per chunk whatever their order.
            async with asyncio.TaskGroup() as calls:
                while True:
                    await capacity.acquire()
                    try:
                        batch = await self._next_batch(chunk_queue, align_queue)
                        if batch is not None:
                            if self._job.stage < Stage.TRANSCRIBE:
                                await self._enter(Stage.TRANSCRIBE)
                            if not options.language_code:
                                options.language_code = await self._detect_language(batch[0])
                                self._settle_language(options)
                    except BaseException:
                        capacity.release()
                        raise
                    if batch is None:
                        capacity.release()
                        break
                    call_options = asr_pb2.TranscriptionOptions()
                    call_options.CopyFrom(options)
                    calls.create_task(self._transcribe_batch(batch, call_options, align_queue))
        except ExceptionGroup as group:
            failures = [error for error in group.exceptions if isinstance(error, StageFailedError)]
            raise (failures[0] if failures else group.exceptions[0]) from None
        finally:
            align_queue.put_nowait(None)
        if not self._job.config.skip_alignment:
            self._job.stage = Stage.ALIGN  # what is left is aligning the last chunks
        await self._progress(Stage.TRANSCRIBE, 1.0, len(self._transcripts), len(self._chunks))

    async def _transcribe_batch(
        self, batch: list[_Chunk], options: asr_pb2.TranscriptionOptions, align_queue: asyncio.Queue[int | None]
    ) -> None:
        """Transcribes one batch (holding a slot taken by the caller), one
        call per run of consecutive chunks, each under the retry policy."""
        try:
            for run in _consecutive_runs(batch):
                await self._call(
                    Stage.TRANSCRIBE,
                    run[0].index,
                    functools.partial(self._transcribe_once, run, options, align_queue),
                )
        finally:
            self._peers.asr_capacity.release()

    async def _detect_language(self, chunk: _Chunk) -> str:
        assert self._handle is not None
        request = asr_pb2.DetectLanguageRequest(
            audio=self._handle,
            range=time_range_to_proto(chunk.time_range),
            model=self._job.config.transcription.model,
        )
        response = await self._call(
            Stage.TRANSCRIBE, chunk.index, lambda: self._peers.asr.DetectLanguage(request, **self._call_options())
        )
        self._job.language_code = response.language_code
        self._job.language_probability = response.probability
        await self._save()
        await self._events.publish(self._job, language_code=response.language_code)
        return response.language_code

    async def _transcribe_once(
        self, run: Sequence[_Chunk], options: asr_pb2.TranscriptionOptions, align_queue: asyncio.Queue[int | None]
    ) -> None:
        """One Transcribe call for the chunks of `run` (consecutive) not yet
        transcribed; after a failed attempt only those left are sent again."""
        assert self._handle is not None
        remaining = [chunk for chunk in run if chunk.index not in self._transcripts]
        if not remaining:
            return
        stream = self._peers.asr.Transcribe(
            asr_pb2.TranscribeRequest(
                audio=self._handle,
                chunks=[time_range_to_proto(chunk.time_range) for chunk in remaining],
                first_chunk_index=remaining[0].index,
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

    def _settle_language(self, options: asr_pb2.TranscriptionOptions) -> None:
        """Once the language is known: the alignment method, and whether the
        ASR times words (cross-attention times come almost free in its pass)."""
        self._align_method = self._choose_align_method(options)
        options.word_timestamps = self._align_method == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
        self._language_settled.set()

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
        config = self._job.config
        while (chunk_index := await align_queue.get()) is not None:
            if config.skip_alignment or chunk_index in self._aligned:
                continue
            await self._language_settled.wait()
            segments = self._transcripts[chunk_index]
            spoken = [segment for segment in segments if segment.text.strip()]
            method: align_pb2.AlignMethod.ValueType
            if not spoken:
                aligned, method = segments, align_pb2.ALIGN_METHOD_UNSPECIFIED
            elif self._align_method == align_pb2.ALIGN_METHOD_CROSS_ATTENTION and all(s.words for s in spoken):
                aligned, method = segments, align_pb2.ALIGN_METHOD_CROSS_ATTENTION  # timed by the ASR pass
            else:
                aligned, method = await self._call(
                    Stage.ALIGN, chunk_index, functools.partial(self._align_once, segments)
                )
            await self._store.run(self._store.save_chunk_alignment, self._job.job_id, chunk_index, method, aligned)
            self._aligned[chunk_index] = aligned
            await self._progress(
                Stage.ALIGN, self._stage_fraction(len(self._aligned)), len(self._aligned), len(self._chunks)
            )
        if not config.skip_alignment:
            await self._progress(Stage.ALIGN, 1.0, len(self._aligned), len(self._chunks))

    async def _align_once(self, segments: list[Segment]) -> tuple[list[Segment], align_pb2.AlignMethod.ValueType]:
        assert self._handle is not None
        config = self._job.config
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
        return segments_from_proto(response.segments), response.method


def _consecutive_runs(chunks: Sequence[_Chunk]) -> list[list[_Chunk]]:
    """Chunks split where their indices jump (a Transcribe call numbers its
    chunks from first_chunk_index on)."""
    runs: list[list[_Chunk]] = []
    for chunk in chunks:
        if runs and runs[-1][-1].index + 1 == chunk.index:
            runs[-1].append(chunk)
        else:
            runs.append([chunk])
    return runs


def _retry_after_s(error: grpc.aio.AioRpcError) -> float | None:
    """The retry hint a service gave with RESOURCE_EXHAUSTED, if any."""
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_KEY:
            with contextlib.suppress(ValueError):
                return float(value)
    return None

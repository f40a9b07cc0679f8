"""The pipeline of one job: decode, detect speech, transcribe, align.

Stages overlap: transcription starts on the first batch of speech chunks while
detection goes on, several batches are transcribed at once (as many as the
ASR workers take, see `gateway.asr_capacity`), and alignment runs on each
chunk's transcript while the next batches are transcribed. Every stage output
is committed to the store as it is produced, and every change is published as
a job event.

A job resumed after a restart starts from its checkpoint: audio still held by
the audio service is used again (else decoded again), stored speech chunks
are not detected again, stored transcripts are not sent to ASR again, stored
words are not aligned again.

The units it is made of, each readable alone: `gateway.jobs.stage_calls` (the retry
policy of every call), `gateway.jobs.audio_lease` (the job's audio), and the
plain policy functions of `gateway.jobs.policy`; this module holds the three stage
workers and the job's progress.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc

from common.limits import MAX_CHUNKS_PER_REQUEST
from common.rpc import metrics
from common.rpc.convert import (
    duration_to_seconds,
    segment_to_proto,
    segments_from_proto,
    segments_to_proto,
    time_range_from_proto,
    time_range_to_proto,
)
from common.rpc.server import JOB_ID_KEY, REQUEST_ID_KEY
from common.transcript import Segment, TimeRange
from gateway.asr_capacity import AsrCapacity
from gateway.config import GatewayConfig
from gateway.jobs.audio_lease import AudioLease
from gateway.jobs.events import EventHub
from gateway.jobs.policy import (
    choose_align_method,
    consecutive_runs,
    merge_found_segments,
    tail_share,
    uncovered_speech,
)
from gateway.jobs.stage_calls import StageCaller, StageFailedError
from gateway.output.speakers import assign_speakers, turns_from_proto
from gateway.records import JobRecord, Stage
from gateway.store.job_store import Checkpoint, JobStore, LeaseLostError, StoreUnavailableError
from subtitler.align.v1 import align_pb2, align_pb2_grpc
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc
from subtitler.audio.v1 import audio_pb2_grpc
from subtitler.common.v1 import common_pb2
from subtitler.diarize.v1 import diarize_pb2, diarize_pb2_grpc
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2, vad_pb2_grpc

logger = logging.getLogger(__name__)

__all__ = ["JobPipeline", "Peers", "StageFailedError"]


@dataclass(frozen=True)
class Peers:
    """Stubs of the stage services, and the slots of Transcribe calls their
    ASR workers take at once (shared by every job)."""

    audio: audio_pb2_grpc.AudioServiceStub
    vad: vad_pb2_grpc.VadServiceStub
    asr: asr_pb2_grpc.AsrServiceStub
    align: align_pb2_grpc.AlignServiceStub
    asr_capacity: AsrCapacity = field(default_factory=lambda: AsrCapacity(None, replica_count=1))
    # None: no diarize service (a job that asks for speakers fails, saying so).
    diarize: diarize_pb2_grpc.DiarizeServiceStub | None = None


@dataclass(frozen=True)
class _Chunk:
    index: int
    time_range: TimeRange
    # The VAD's speech ranges merged into the chunk (for the coverage check).
    speech: tuple[TimeRange, ...] = ()


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
        self._chunks: list[_Chunk] = []
        self._detection_done = False
        # Seconds of the audio the VAD has looked at so far.
        self._analysed_s = 0.0
        self._transcripts: dict[int, list[Segment]] = {}
        self._aligned: dict[int, list[Segment]] = {}
        # Resolved once the language is known (see gateway.jobs.policy.choose_align_method).
        self._align_method: align_pb2.AlignMethod.ValueType | None = None
        # Set when the gateway stops: the audio is kept for the resumed job.
        self.keep_audio = False
        self._restored_detection = False
        self._language_settled = asyncio.Event()
        # The diarization, once done (or restored from the checkpoint).
        self._speaker_turns: diarize_pb2.DiarizeResponse | None = None
        # The last progress published per stage: the same figures are not sent twice.
        self._published_progress: dict[Stage, tuple[float, int, int]] = {}
        # When each stage's first progress was published (its duration's start, for the metrics).
        self._stage_started: dict[Stage, float] = {}
        self._calls = StageCaller(job, store, events, config.retry)
        self._audio = AudioLease(
            job,
            peers.audio,
            store,
            self._calls,
            self._call_options,
            lambda: self._enter(Stage.DECODE),
            self._decoded,
            checkpoint.audio_handle if checkpoint is not None else None,
        )
        if checkpoint is not None:
            self._restore(checkpoint)

    def _restore(self, checkpoint: Checkpoint) -> None:
        self._chunks = [
            _Chunk(index, checkpoint.speech_chunks[index], checkpoint.speech_ranges.get(index, ()))
            for index in sorted(checkpoint.speech_chunks)
        ]
        self._speaker_turns = checkpoint.speaker_turns
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

    @property
    def _packed(self) -> bool:
        """Whether the job's chunks are packed speech (their speech ranges decoded back to back)."""
        return self._job.config.speech_detection.chunking == vad_pb2.CHUNKING_METHOD_PACK

    def _packed_speech(self, chunk: _Chunk) -> list[common_pb2.TimeRange]:
        """What of a chunk the ASR hears: its speech ranges when packed; none (all of it) else."""
        return [time_range_to_proto(part) for part in chunk.speech] if self._packed else []

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
        figures = (self._job.stage_fractions[stage], done, total)
        if self._published_progress.get(stage) == figures:
            return
        if stage not in self._published_progress:
            self._stage_started[stage] = time.monotonic()
        if figures[0] >= 1.0 and stage in self._stage_started:
            metrics.STAGE_SECONDS.labels(stage.name.lower()).observe(time.monotonic() - self._stage_started.pop(stage))
        self._published_progress[stage] = figures
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

    async def _decoded(self, handle: common_pb2.AudioHandle) -> None:
        if not self._job.audio_duration_s:
            self._job.audio_duration_s = duration_to_seconds(handle.duration)
            await self._save()
            await self._events.publish(self._job, audio_duration=handle.duration)
        await self._progress(Stage.DECODE, 1.0)

    @property
    def _handle(self) -> common_pb2.AudioHandle | None:
        return self._audio.handle

    # The job

    async def run(self) -> list[Segment]:
        """Runs every stage still to do and returns the final segments."""
        try:
            if await self._audio.reuse():
                await self._events.publish(self._job, resumed=self.resume_summary(audio_reused=True))
            else:
                if self._audio.resumed or self._transcripts or self._chunks:
                    await self._events.publish(self._job, resumed=self.resume_summary(audio_reused=False))
                await self._audio.decode()
            renewal = asyncio.get_running_loop().create_task(self._audio.renew_forever())
            try:
                return await self._detect_transcribe_align()
            finally:
                renewal.cancel()
        except (LeaseLostError, StoreUnavailableError):
            # Another gateway goes on with the job, or it resumes here from
            # its checkpoint: the audio it holds is still needed.
            self.keep_audio = True
            raise
        finally:
            if not self.keep_audio:
                await self._audio.release()

    async def _detect_transcribe_align(self) -> list[Segment]:
        chunk_queue: asyncio.Queue[_Chunk | None] = asyncio.Queue()
        align_queue: asyncio.Queue[int | None] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as group:
                if self._job.config.diarization.enabled and self._speaker_turns is None:
                    group.create_task(self._diarize())  # beside the rest: it needs only the audio
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
        segments = [segment for index in order for segment in source[index]]
        if self._speaker_turns is not None:
            segments = assign_speakers(segments, turns_from_proto(self._speaker_turns))
        return segments

    async def _diarize(self) -> None:
        if self._peers.diarize is None:
            raise StageFailedError(
                Stage.DIARIZE,
                grpc.StatusCode.FAILED_PRECONDITION,
                "this gateway has no diarize service: set SUBTITLER_DIARIZE_TARGET, or leave diarization off",
            )
        await self._progress(Stage.DIARIZE, 0.0)
        turns = await self._calls.call(Stage.DIARIZE, -1, self._diarize_once, audio=self._audio)
        await self._store.run(self._store.save_speaker_turns, self._job.job_id, turns)
        self._speaker_turns = turns
        await self._progress(Stage.DIARIZE, 1.0, turns.speaker_count, turns.speaker_count)

    async def _diarize_once(self) -> diarize_pb2.DiarizeResponse:
        assert self._handle is not None and self._peers.diarize is not None
        response: diarize_pb2.DiarizeResponse = await self._peers.diarize.Diarize(
            diarize_pb2.DiarizeRequest(audio=self._handle, speakers=self._job.config.diarization.speakers),
            **self._call_options(),
        )
        return response

    async def _detect(self, chunk_queue: asyncio.Queue[_Chunk | None]) -> None:
        # Stored chunks go first: detection is deterministic, so a detection
        # that runs again only adds the chunks after them.
        for chunk in self._chunks:
            chunk_queue.put_nowait(chunk)
        try:
            if not self._restored_detection:
                await self._enter(Stage.DETECT_SPEECH)
                await self._calls.call(
                    Stage.DETECT_SPEECH, -1, lambda: self._detect_once(chunk_queue), audio=self._audio
                )
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
                speech = tuple(time_range_from_proto(item) for item in response.speech_ranges)
                chunk = _Chunk(response.chunk_index, time_range_from_proto(response.chunk), speech)
                await self._store.run(
                    self._store.save_speech_chunk, self._job.job_id, chunk.index, chunk.time_range, chunk.speech
                )
                self._chunks.append(chunk)
                chunk_queue.put_nowait(chunk)
            analysed_s = duration_to_seconds(response.analysed_duration)
            self._analysed_s = max(self._analysed_s, analysed_s)
            await self._progress(Stage.DETECT_SPEECH, analysed_s / duration_s, round(analysed_s), round(duration_s))

    async def _next_batch(
        self, chunk_queue: asyncio.Queue[_Chunk | None], align_queue: asyncio.Queue[int | None]
    ) -> list[_Chunk] | None:
        """Up to a batch of chunks still to transcribe: as many as are ready
        once at least one is; None when there are no more. While detection
        runs ahead, a call that would wait in the ASR's queue anyway gathers a
        full batch, and one that an idle worker would take at once goes with
        what is ready (no worker waits for detection). Once detection is done,
        the chunks left are split evenly over the ASR workers, so that none
        idles at the end while another decodes a full batch. Chunks
        transcribed before go straight to alignment."""
        capacity = self._peers.asr_capacity
        size = capacity.batch_size(self._job.config.transcription.batch_size, self._config.asr_batch_size)
        # This call's slot is counted: at most one call per worker means a worker is free for it.
        worker_idle = capacity.in_flight <= capacity.figures.workers
        batch: list[_Chunk] = []
        while len(batch) < tail_share(
            size,
            len(batch) + chunk_queue.qsize(),
            capacity.figures.workers,
            detection_done=self._detection_done,
            expected_more=self._chunks_to_come(),
        ):
            if batch and chunk_queue.empty() and (self._detection_done or worker_idle):
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

    def _chunks_to_come(self) -> float | None:
        """Chunks the VAD has still to find, at the rate it found them so
        far; None before it has found any."""
        if self._detection_done:
            return 0.0
        if self._analysed_s <= 0.0 or not self._chunks:
            return None
        rest_s = max(0.0, self._job.audio_duration_s - self._analysed_s)
        return len(self._chunks) / self._analysed_s * rest_s

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
                    capacity.extend(len(batch) - 1)
                    call_options = asr_pb2.TranscriptionOptions()
                    call_options.CopyFrom(options)
                    # Detection done and only its end mark left: nothing of the job follows.
                    last = self._detection_done and chunk_queue.qsize() <= 1
                    calls.create_task(self._transcribe_batch(batch, call_options, align_queue, last_of_job=last))
        except ExceptionGroup as group:
            failures = [error for error in group.exceptions if isinstance(error, StageFailedError)]
            raise (failures[0] if failures else group.exceptions[0]) from None
        finally:
            align_queue.put_nowait(None)
        if not self._job.config.skip_alignment:
            self._job.stage = Stage.ALIGN  # what is left is aligning the last chunks
        await self._progress(Stage.TRANSCRIBE, 1.0, len(self._transcripts), len(self._chunks))

    async def _transcribe_batch(
        self,
        batch: list[_Chunk],
        options: asr_pb2.TranscriptionOptions,
        align_queue: asyncio.Queue[int | None],
        *,
        last_of_job: bool = False,
    ) -> None:
        """Transcribes one batch (holding a slot taken by the caller), one
        call per run of consecutive chunks, each under the retry policy.
        `last_of_job`: nothing of the job follows the batch."""
        try:
            runs = consecutive_runs(batch, key=lambda chunk: chunk.index)
            for number, run in enumerate(runs, start=1):
                await self._calls.call(
                    Stage.TRANSCRIBE,
                    run[0].index,
                    functools.partial(
                        self._transcribe_once,
                        run,
                        options,
                        align_queue,
                        last_of_job=last_of_job and number == len(runs),
                    ),
                    audio=self._audio,
                )
        finally:
            self._peers.asr_capacity.release(len(batch))

    async def _detect_language(self, chunk: _Chunk) -> str:
        assert self._handle is not None
        request = asr_pb2.DetectLanguageRequest(
            audio=self._handle,
            range=time_range_to_proto(chunk.time_range),
            model=self._job.config.transcription.model,
            # A packed chunk is judged on its speech, not on the silence or
            # music between (its first 30 s of audio could hold little speech).
            speech=self._packed_speech(chunk),
        )
        response = await self._calls.call(
            Stage.TRANSCRIBE,
            chunk.index,
            lambda: self._peers.asr.DetectLanguage(request, **self._call_options()),
            audio=self._audio,
        )
        self._job.language_code = response.language_code
        self._job.language_probability = response.probability
        await self._save()
        await self._events.publish(self._job, language_code=response.language_code)
        return response.language_code

    async def _transcribe_once(
        self,
        run: Sequence[_Chunk],
        options: asr_pb2.TranscriptionOptions,
        align_queue: asyncio.Queue[int | None],
        *,
        last_of_job: bool = False,
    ) -> None:
        """One Transcribe call for the chunks of `run` (consecutive) not yet
        transcribed; after a failed attempt only those left are sent again.
        `last_of_job`: nothing of the job follows them."""
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
                chunk_speech=[asr_pb2.ChunkParts(ranges=self._packed_speech(chunk)) for chunk in remaining]
                if self._packed
                else [],
                # The job ends with its last chunk: the ASR may time words after later chunks are decoded.
                scheduling=asr_pb2.SCHEDULING_THROUGHPUT,
                last_of_job=last_of_job,
            ),
            **self._call_options(),
        )
        by_index = {chunk.index: chunk for chunk in remaining}
        # A chunk with speech no segment covers is looked at again at once,
        # beside the rest of the stream: its windows reach the ASR while it
        # still decodes or times the words of the job's other chunks, instead
        # of after the call's last chunk (on a CPU that is the job's end: the
        # ASR times most words last). The chunk is accepted once its look ends.
        looks: list[asyncio.Task[None]] = []
        try:
            async for response in stream:
                segments = segments_from_proto(response.segments)
                chunk = by_index[response.chunk_index]
                windows = (
                    []
                    if self._job.config.skip_coverage_check
                    else uncovered_speech(chunk.speech, segments, chunk.time_range)
                )
                if windows:
                    looks.append(
                        asyncio.create_task(self._look_again(response, segments, windows, options, align_queue))
                    )
                else:
                    await self._accept_transcript(response, segments, align_queue)
        finally:
            # Chunks whose results came are kept even when the stream then
            # fails: their looks end (a failed look keeps the first pass), and
            # a retry sends only the chunks after them.
            outcomes = await asyncio.gather(*looks, return_exceptions=True) if looks else []
            failures = [outcome for outcome in outcomes if isinstance(outcome, BaseException)]
            if failures:
                raise failures[0]

    async def _look_again(
        self,
        response: asr_pb2.TranscribeResponse,
        segments: list[Segment],
        windows: list[TimeRange],
        options: asr_pb2.TranscriptionOptions,
        align_queue: asyncio.Queue[int | None],
    ) -> None:
        """The coverage check's second look at one chunk's `windows`, then the
        chunk accepted with what it found."""
        found = await self._second_look(response.chunk_index, windows, options)
        inside = [
            dataclasses.replace(segment, chunk_index=response.chunk_index)
            for segment in found
            if any(window.start_s <= segment.start_s < window.end_s for window in windows)
        ]
        logger.info(
            "job %s chunk %d: %d s of speech had no segment; a second look found %d",
            self._job.job_id,
            response.chunk_index,
            round(sum(window.duration_s for window in windows)),
            len(inside),
        )
        await self._accept_transcript(response, merge_found_segments(segments, inside), align_queue)

    async def _second_look(
        self, chunk_index: int, windows: Sequence[TimeRange], options: asr_pb2.TranscriptionOptions
    ) -> list[Segment]:
        """What the coverage check's windows hold, under the retry policy
        and within the ASR slots; when they cannot be transcribed, nothing
        (the chunks keep what their first pass found)."""
        capacity = self._peers.asr_capacity
        capacity.extend(len(windows))
        try:
            return await self._calls.call(
                Stage.TRANSCRIBE,
                chunk_index,
                functools.partial(self._transcribe_windows, windows, options),
                audio=self._audio,
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
        assert self._handle is not None
        found: list[Segment] = []
        for start in range(0, len(windows), MAX_CHUNKS_PER_REQUEST):
            part = windows[start : start + MAX_CHUNKS_PER_REQUEST]
            stream = self._peers.asr.Transcribe(
                asr_pb2.TranscribeRequest(
                    audio=self._handle,
                    chunks=[time_range_to_proto(window) for window in part],
                    first_chunk_index=0,
                    options=options,
                    scheduling=asr_pb2.SCHEDULING_THROUGHPUT,
                ),
                **self._call_options(),
            )
            async for response in stream:
                found.extend(segments_from_proto(response.segments))
        return found

    async def _accept_transcript(
        self, response: asr_pb2.TranscribeResponse, segments: list[Segment], align_queue: asyncio.Queue[int | None]
    ) -> None:
        """Stores a chunk's transcript, tells the watchers, and passes the chunk on to alignment."""
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
        self._align_method = choose_align_method(self._job.config, options)
        options.word_timestamps = self._align_method == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
        self._language_settled.set()

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
                aligned, method = await self._calls.call(
                    Stage.ALIGN, chunk_index, functools.partial(self._align_once, segments), audio=self._audio
                )
            await self._store.run(self._store.save_chunk_alignment, self._job.job_id, chunk_index, method, aligned)
            self._aligned[chunk_index] = aligned
            await self._events.publish(
                self._job,
                aligned=gateway_pb2.ChunkSegments(
                    chunk_index=chunk_index, segments=segments_to_proto(aligned), method=method
                ),
            )
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

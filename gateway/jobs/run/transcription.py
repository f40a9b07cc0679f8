"""A job's transcription: chunks from the detection queue sent to the ASR in
batches while a slot is free (so one job keeps every ASR worker busy), one
Transcribe call per run of consecutive chunks under the retry policy; each
chunk's transcript checked for uncovered speech, stored, published and
passed on to alignment as it comes, whatever the order."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Sequence

from common.rpc.convert import segment_to_proto, segments_from_proto, time_range_to_proto
from common.transcript import Segment, TimeRange
from gateway.asr_capacity import AsrCapacity
from gateway.jobs.run.coverage import SecondLook
from gateway.jobs.run.job_run import JobRun
from gateway.jobs.run.language import LanguageSettling
from gateway.jobs.run.policy import consecutive_runs, tail_share, uncovered_speech
from gateway.jobs.run.run_state import SpeechChunk
from gateway.jobs.run.stage_calls import StageFailedError
from gateway.records import Stage
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc


class TranscriptionDispatch:
    """Transcribes one job's chunks."""

    def __init__(
        self,
        run: JobRun,
        asr: asr_pb2_grpc.AsrServiceStub,
        capacity: AsrCapacity,
        language: LanguageSettling,
        gateway_batch_size: int,
    ) -> None:
        """`gateway_batch_size`: the gateway's batch size (see `AsrCapacity.batch_size`)."""
        self._run = run
        self._job = run.job
        self._store = run.store
        self._state = run.state
        self._asr = asr
        self._capacity = capacity
        self._language = language
        self._gateway_batch_size = gateway_batch_size
        self._second_look = SecondLook(run, asr, capacity)

    async def run(self, chunk_queue: asyncio.Queue[SpeechChunk | None], align_queue: asyncio.Queue[int | None]) -> None:
        """Transcribes every chunk `chunk_queue` brings, puts each chunk's
        index on `align_queue` once its transcript is stored, then None."""
        options = asr_pb2.TranscriptionOptions()
        options.CopyFrom(self._job.config.transcription)
        await self._language.start(options)
        capacity = self._capacity
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
                                await self._run.progress.enter(Stage.TRANSCRIBE)
                            if not options.language_code:
                                await self._language.detect(batch[0], options)
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
                    last = self._state.detection_done and chunk_queue.qsize() <= 1
                    calls.create_task(self._transcribe_batch(batch, call_options, align_queue, last_of_job=last))
        except ExceptionGroup as group:
            failures = [error for error in group.exceptions if isinstance(error, StageFailedError)]
            raise (failures[0] if failures else group.exceptions[0]) from None
        finally:
            align_queue.put_nowait(None)
        if not self._job.config.skip_alignment:
            self._job.stage = Stage.ALIGN  # what is left is aligning the last chunks
        await self._run.progress.report(Stage.TRANSCRIBE, 1.0, len(self._state.transcripts), len(self._state.chunks))

    async def _next_batch(
        self, chunk_queue: asyncio.Queue[SpeechChunk | None], align_queue: asyncio.Queue[int | None]
    ) -> list[SpeechChunk] | None:
        """Up to a batch of chunks still to transcribe: as many as are ready
        once at least one is; None when there are no more. While detection
        runs ahead, a call that would wait in the ASR's queue anyway gathers a
        full batch, and one that an idle worker would take at once goes with
        what is ready (no worker waits for detection). Once detection is done,
        the chunks left are split evenly over the ASR workers, so that none
        idles at the end while another decodes a full batch. Chunks
        transcribed before go straight to alignment."""
        capacity = self._capacity
        state = self._state
        size = capacity.batch_size(self._job.config.transcription.batch_size, self._gateway_batch_size)
        # This call's slot is counted: at most one call per worker means a worker is free for it.
        worker_idle = capacity.in_flight <= capacity.figures.workers
        batch: list[SpeechChunk] = []
        while len(batch) < tail_share(
            size,
            len(batch) + chunk_queue.qsize(),
            capacity.figures.workers,
            detection_done=state.detection_done,
            expected_more=state.chunks_to_come(self._job.audio_duration_s),
        ):
            if batch and chunk_queue.empty() and (state.detection_done or worker_idle):
                break
            item = await chunk_queue.get()
            if item is None:
                chunk_queue.put_nowait(None)
                break
            if item.index in state.transcripts:
                align_queue.put_nowait(item.index)
                continue
            batch.append(item)
        return batch or None

    async def _transcribe_batch(
        self,
        batch: list[SpeechChunk],
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
                await self._run.call(
                    Stage.TRANSCRIBE,
                    run[0].index,
                    functools.partial(
                        self._transcribe_once,
                        run,
                        options,
                        align_queue,
                        last_of_job=last_of_job and number == len(runs),
                    ),
                )
        finally:
            self._capacity.release(len(batch))

    async def _transcribe_once(
        self,
        run: Sequence[SpeechChunk],
        options: asr_pb2.TranscriptionOptions,
        align_queue: asyncio.Queue[int | None],
        *,
        last_of_job: bool = False,
    ) -> None:
        """One Transcribe call for the chunks of `run` (consecutive) not yet
        transcribed; after a failed attempt only those left are sent again.
        `last_of_job`: nothing of the job follows them."""
        assert self._run.handle is not None
        remaining = [chunk for chunk in run if chunk.index not in self._state.transcripts]
        if not remaining:
            return
        stream = self._asr.Transcribe(
            asr_pb2.TranscribeRequest(
                audio=self._run.handle,
                chunks=[time_range_to_proto(chunk.time_range) for chunk in remaining],
                first_chunk_index=remaining[0].index,
                options=options,
                chunk_speech=[asr_pb2.ChunkParts(ranges=self._run.packed_speech(chunk)) for chunk in remaining]
                if self._run.packed
                else [],
                # The job ends with its last chunk: the ASR may time words after later chunks are decoded.
                scheduling=asr_pb2.SCHEDULING_THROUGHPUT,
                last_of_job=last_of_job,
            ),
            **self._run.call_options(),
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
        merged = await self._second_look.look_again(response.chunk_index, segments, windows, options)
        await self._accept_transcript(response, merged, align_queue)

    async def _accept_transcript(
        self, response: asr_pb2.TranscribeResponse, segments: list[Segment], align_queue: asyncio.Queue[int | None]
    ) -> None:
        """Stores a chunk's transcript, tells the watchers, and passes the chunk on to alignment."""
        await self._store.save_chunk_transcript(
            self._job.job_id,
            response.chunk_index,
            response.language_code,
            segments,
        )
        self._state.transcripts[response.chunk_index] = segments
        if not self._job.language_code:
            self._job.language_code = response.language_code
            self._job.language_probability = response.language_probability
        self._job.segment_count += len(segments)
        for segment in segments:
            await self._run.events.publish(self._job, segment=segment_to_proto(segment))
        await self._run.progress.report_chunks(Stage.TRANSCRIBE, len(self._state.transcripts))
        align_queue.put_nowait(response.chunk_index)

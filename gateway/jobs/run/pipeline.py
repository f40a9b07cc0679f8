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

This module composes the units, each readable alone: `gateway.jobs.run.stage_calls`
(the retry policy of every call), `gateway.jobs.run.audio_lease` (the job's audio),
`gateway.jobs.run.run_state` (the run's outputs, restored from the checkpoint),
`gateway.jobs.run.progress` (the job's progress), `gateway.jobs.run.job_run` (what the
units share), the stage units `gateway.jobs.run.detection`,
`gateway.jobs.run.transcription` (with `gateway.jobs.run.language` and the coverage
check of `gateway.jobs.run.coverage`), `gateway.jobs.run.alignment` and
`gateway.jobs.run.diarization`, and the plain policy functions of
`gateway.jobs.run.policy`.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field

from common.rpc.server import JOB_ID_KEY, REQUEST_ID_KEY
from common.transcript import Segment
from gateway.asr_capacity import AsrCapacity
from gateway.config import GatewayConfig
from gateway.jobs.events import EventHub
from gateway.jobs.run.alignment import ChunkAlignment
from gateway.jobs.run.audio_lease import AudioLease
from gateway.jobs.run.detection import SpeechDetection
from gateway.jobs.run.diarization import Diarization
from gateway.jobs.run.job_run import JobRun
from gateway.jobs.run.language import LanguageSettling
from gateway.jobs.run.progress import ProgressReporter
from gateway.jobs.run.run_state import RunState, SpeechChunk
from gateway.jobs.run.stage_calls import StageCaller, StageFailedError
from gateway.jobs.run.transcription import TranscriptionDispatch
from gateway.records import JobRecord, Stage
from gateway.store.async_store import AsyncJobStore
from gateway.store.errors import LeaseLostError, StoreUnavailableError
from gateway.store.stage_outputs import Checkpoint
from subtitler.align.v1 import align_pb2_grpc
from subtitler.asr.v1 import asr_pb2_grpc
from subtitler.audio.v1 import audio_pb2_grpc
from subtitler.diarize.v1 import diarize_pb2_grpc
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2_grpc

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


class JobPipeline:
    """Runs one job through the stage services."""

    def __init__(
        self,
        job: JobRecord,
        peers: Peers,
        store: AsyncJobStore,
        events: EventHub,
        config: GatewayConfig,
        checkpoint: Checkpoint | None = None,
    ) -> None:
        self._job = job
        self._events = events
        self._config = config
        # Set when the gateway stops: the audio is kept for the resumed job.
        self.keep_audio = False
        self._state = RunState.from_checkpoint(checkpoint)
        progress = ProgressReporter(job, store, events, self._state)
        calls = StageCaller(job, store, events, config.retry)
        self._audio = AudioLease(
            job,
            peers.audio,
            store,
            calls,
            self._call_options,
            lambda: progress.enter(Stage.DECODE),
            progress.decoded,
            checkpoint.audio_handle if checkpoint is not None else None,
        )
        run = JobRun(job, store, events, progress, self._state, self._audio, calls, self._call_options)
        language = LanguageSettling(run, peers.asr)
        self._diarization = Diarization(run, peers.diarize)
        self._detection = SpeechDetection(run, peers.vad)
        self._transcription = TranscriptionDispatch(run, peers.asr, peers.asr_capacity, language, config.asr_batch_size)
        self._alignment = ChunkAlignment(run, peers.align, language)

    def resume_summary(self, audio_reused: bool) -> gateway_pb2.ResumeSummary:
        """What the job takes up again from its checkpoint."""
        return self._state.resume_summary(audio_reused)

    def _call_options(self) -> dict[str, object]:
        return {
            "timeout": self._config.call_timeout_s,
            "metadata": ((JOB_ID_KEY, self._job.job_id), (REQUEST_ID_KEY, uuid.uuid4().hex[:16])),
        }

    # The job

    async def run(self) -> list[Segment]:
        """Runs every stage still to do and returns the final segments."""
        try:
            if await self._audio.reuse():
                await self._events.publish(self._job, resumed=self.resume_summary(audio_reused=True))
            else:
                if self._audio.resumed or self._state.transcripts or self._state.chunks:
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
        chunk_queue: asyncio.Queue[SpeechChunk | None] = asyncio.Queue()
        align_queue: asyncio.Queue[int | None] = asyncio.Queue()
        try:
            async with asyncio.TaskGroup() as group:
                if self._job.config.diarization.enabled and self._state.speaker_turns is None:
                    group.create_task(self._diarization.run())  # beside the rest: it needs only the audio
                group.create_task(self._detection.run(chunk_queue))
                group.create_task(self._transcription.run(chunk_queue, align_queue))
                group.create_task(self._alignment.run(align_queue))
        except ExceptionGroup as group:
            # The first stage that failed is the job's failure; the others
            # were cancelled because of it.
            failures = [error for error in group.exceptions if isinstance(error, StageFailedError)]
            raise (failures[0] if failures else group.exceptions[0]) from None
        return self._state.segments(self._job.config.skip_alignment)

"""One job's run as its stage units share it: the job record, its store and
watchers, its progress and outputs so far, and the way its calls reach the
stage services (the job's metadata and deadline, its audio, the retry policy
of `gateway.jobs.run.stage_calls`)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

from common.rpc.convert import time_range_to_proto
from gateway.jobs.events import EventHub
from gateway.jobs.run.audio_lease import AudioLease
from gateway.jobs.run.progress import ProgressReporter
from gateway.jobs.run.run_state import RunState, SpeechChunk
from gateway.jobs.run.stage_calls import StageCaller
from gateway.records import JobRecord, Stage
from gateway.store.async_store import AsyncJobStore
from subtitler.common.v1 import common_pb2
from subtitler.vad.v1 import vad_pb2

T = TypeVar("T")


@dataclass(frozen=True)
class JobRun:
    """What every stage unit of one job's run is given."""

    job: JobRecord
    store: AsyncJobStore
    events: EventHub
    progress: ProgressReporter
    state: RunState
    audio: AudioLease
    calls: StageCaller
    # The keyword arguments of every call: deadline and metadata (job id, a fresh request id).
    call_options: Callable[[], dict[str, object]]

    @property
    def handle(self) -> common_pb2.AudioHandle | None:
        """The job's audio handle in use now."""
        return self.audio.handle

    async def call(self, stage: Stage, chunk_index: int, attempt: Callable[[], Awaitable[T]]) -> T:
        """Runs `attempt` under the retry policy, the job's audio decoded again if it was lost."""
        return await self.calls.call(stage, chunk_index, attempt, audio=self.audio)

    @property
    def packed(self) -> bool:
        """Whether the job's chunks are packed speech (their speech ranges decoded back to back)."""
        return self.job.config.speech_detection.chunking == vad_pb2.CHUNKING_METHOD_PACK

    def packed_speech(self, chunk: SpeechChunk) -> list[common_pb2.TimeRange]:
        """What of a chunk the ASR hears: its speech ranges when packed; none (all of it) else."""
        return [time_range_to_proto(part) for part in chunk.speech] if self.packed else []

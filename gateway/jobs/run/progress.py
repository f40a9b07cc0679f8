"""A job's progress as its watchers see it: each stage's fraction (an
estimate that only grows), published once per change with the job record
saved, and each stage's duration observed for the metrics."""

from __future__ import annotations

import time

from common.rpc import metrics
from common.rpc.convert import duration_to_seconds
from gateway.jobs.events import EventHub
from gateway.jobs.run.run_state import RunState
from gateway.records import JobRecord, Stage
from gateway.store.async_store import AsyncJobStore
from subtitler.common.v1 import common_pb2
from subtitler.gateway.v1 import gateway_pb2


class ProgressReporter:
    """Saves and publishes one job's stage progress."""

    def __init__(self, job: JobRecord, store: AsyncJobStore, events: EventHub, state: RunState) -> None:
        self._job = job
        self._store = store
        self._events = events
        self._state = state
        # The last progress published per stage: the same figures are not sent twice.
        self._published_progress: dict[Stage, tuple[float, int, int]] = {}
        # When each stage's first progress was published (its duration's start, for the metrics).
        self._stage_started: dict[Stage, float] = {}

    async def save(self) -> None:
        """Stores the job record as it is now."""
        await self._store.save(self._job)

    async def report(self, stage: Stage, fraction: float, done: int = 0, total: int = 0) -> None:
        """Publishes `stage`'s progress: `fraction` of it done (never less
        than before), `done` of `total` items."""
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
        await self.save()
        await self._events.publish(
            self._job,
            stage_progress=gateway_pb2.StageProgress(
                stage=int(stage),  # type: ignore[arg-type]
                fraction=self._job.stage_fractions[stage],
                done_count=done,
                total_count=total,
            ),
        )

    async def report_chunks(self, stage: Stage, done_chunks: int) -> None:
        """Publishes a per-chunk stage's progress: `done_chunks` of the chunks known so far."""
        await self.report(stage, self.chunk_fraction(done_chunks), done_chunks, len(self._state.chunks))

    def chunk_fraction(self, done_chunks: int) -> float:
        """Chunks done over chunks known, scaled by how much of the audio
        detection has covered (the total is not known before it ends)."""
        known = max(len(self._state.chunks), 1)
        detected = 1.0 if self._state.detection_done else self._job.stage_fractions.get(Stage.DETECT_SPEECH, 0.0)
        return done_chunks / known * detected

    async def enter(self, stage: Stage) -> None:
        """The job is now at `stage`."""
        self._job.stage = stage
        await self.report(stage, self._job.stage_fractions.get(stage, 0.0))

    async def decoded(self, handle: common_pb2.AudioHandle) -> None:
        """The audio is decoded: its duration is known (published once) and the decode done."""
        if not self._job.audio_duration_s:
            self._job.audio_duration_s = duration_to_seconds(handle.duration)
            await self.save()
            await self._events.publish(self._job, audio_duration=handle.duration)
        await self.report(Stage.DECODE, 1.0)

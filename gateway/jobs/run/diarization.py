"""A job's diarization: who speaks when, asked of the diarize service once
for the whole audio (beside the other stages, it needs only the audio), and
stored as the job's speaker turns."""

from __future__ import annotations

import grpc

from gateway.jobs.run.job_run import JobRun
from gateway.jobs.run.stage_calls import StageFailedError
from gateway.records import Stage
from subtitler.diarize.v1 import diarize_pb2, diarize_pb2_grpc


class Diarization:
    """Diarizes one job's audio."""

    def __init__(self, run: JobRun, diarize: diarize_pb2_grpc.DiarizeServiceStub | None) -> None:
        """`diarize`: None when the gateway has no diarize service."""
        self._run = run
        self._job = run.job
        self._store = run.store
        self._diarize = diarize

    async def run(self) -> None:
        """Diarizes the audio and stores the speaker turns (also in the run state)."""
        if self._diarize is None:
            raise StageFailedError(
                Stage.DIARIZE,
                grpc.StatusCode.FAILED_PRECONDITION,
                "this gateway has no diarize service: set SUBTITLER_DIARIZE_TARGET, or leave diarization off",
            )
        progress = self._run.progress
        await progress.report(Stage.DIARIZE, 0.0)
        turns = await self._run.call(Stage.DIARIZE, -1, self._diarize_once)
        await self._store.save_speaker_turns(self._job.job_id, turns)
        self._run.state.speaker_turns = turns
        await progress.report(Stage.DIARIZE, 1.0, turns.speaker_count, turns.speaker_count)

    async def _diarize_once(self) -> diarize_pb2.DiarizeResponse:
        assert self._run.handle is not None and self._diarize is not None
        response: diarize_pb2.DiarizeResponse = await self._diarize.Diarize(
            diarize_pb2.DiarizeRequest(audio=self._run.handle, speakers=self._job.config.diarization.speakers),
            **self._run.call_options(),
        )
        return response

"""A job's speech detection: the VAD's chunks streamed into the chunk queue
as it finds them, each stored as it comes; chunks stored before a restart go
first and are not detected again."""

from __future__ import annotations

import asyncio

from common.rpc.convert import duration_to_seconds, time_range_from_proto
from gateway.jobs.run.job_run import JobRun
from gateway.jobs.run.run_state import SpeechChunk
from gateway.records import Stage
from subtitler.vad.v1 import vad_pb2, vad_pb2_grpc


class SpeechDetection:
    """Detects the speech chunks of one job's audio."""

    def __init__(self, run: JobRun, vad: vad_pb2_grpc.VadServiceStub) -> None:
        self._run = run
        self._job = run.job
        self._store = run.store
        self._state = run.state
        self._vad = vad

    async def run(self, chunk_queue: asyncio.Queue[SpeechChunk | None]) -> None:
        """Puts every chunk of the job on `chunk_queue`, then None."""
        # Stored chunks go first: detection is deterministic, so a detection
        # that runs again only adds the chunks after them.
        for chunk in self._state.chunks:
            chunk_queue.put_nowait(chunk)
        try:
            if not self._state.restored_detection:
                await self._run.progress.enter(Stage.DETECT_SPEECH)
                await self._run.call(Stage.DETECT_SPEECH, -1, lambda: self._detect_once(chunk_queue))
                await self._store.mark_detection_complete(self._job.job_id)
        finally:
            chunk_queue.put_nowait(None)
        self._state.detection_done = True
        audio_s = round(self._job.audio_duration_s)
        await self._run.progress.report(Stage.DETECT_SPEECH, 1.0, audio_s, audio_s)

    async def _detect_once(self, chunk_queue: asyncio.Queue[SpeechChunk | None]) -> None:
        assert self._run.handle is not None
        duration_s = max(self._job.audio_duration_s, 1e-9)
        stream = self._vad.DetectSpeech(
            vad_pb2.DetectSpeechRequest(audio=self._run.handle, options=self._job.config.speech_detection),
            **self._run.call_options(),
        )
        async for response in stream:
            if response.HasField("chunk") and response.chunk_index >= len(self._state.chunks):
                speech = tuple(time_range_from_proto(item) for item in response.speech_ranges)
                chunk = SpeechChunk(response.chunk_index, time_range_from_proto(response.chunk), speech)
                await self._store.save_speech_chunk(self._job.job_id, chunk.index, chunk.time_range, chunk.speech)
                self._state.chunks.append(chunk)
                chunk_queue.put_nowait(chunk)
            analysed_s = duration_to_seconds(response.analysed_duration)
            self._state.analysed_s = max(self._state.analysed_s, analysed_s)
            await self._run.progress.report(
                Stage.DETECT_SPEECH, analysed_s / duration_s, round(analysed_s), round(duration_s)
            )

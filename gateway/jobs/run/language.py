"""A job's language, settled before its first words are aligned: the one the
job asked for, the one detected before a restart, or the one the ASR detects
on the job's first chunk; once known, it fixes the alignment method and
whether the ASR times the words."""

from __future__ import annotations

import asyncio

from common.rpc.convert import time_range_to_proto
from gateway.jobs.run.job_run import JobRun
from gateway.jobs.run.policy import choose_align_method
from gateway.jobs.run.run_state import SpeechChunk
from gateway.records import Stage
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc


class LanguageSettling:
    """Settles one job's language and the alignment method that follows from it."""

    def __init__(self, run: JobRun, asr: asr_pb2_grpc.AsrServiceStub) -> None:
        self._run = run
        self._job = run.job
        self._asr = asr
        # Resolved once the language is known (see gateway.jobs.run.policy.choose_align_method).
        self._align_method: align_pb2.AlignMethod.ValueType | None = None
        self._settled = asyncio.Event()

    @property
    def align_method(self) -> align_pb2.AlignMethod.ValueType | None:
        """The alignment method, once the language is settled (None before)."""
        return self._align_method

    async def wait(self) -> None:
        """Returns once the language is settled."""
        await self._settled.wait()

    async def start(self, options: asr_pb2.TranscriptionOptions) -> None:
        """Settles the language from what is known before any chunk is
        transcribed (asked for, or detected before a restart), if anything;
        `options` (the job's transcription options) take it."""
        if not options.language_code and self._job.language_code:
            options.language_code = self._job.language_code  # detected before a restart
        elif options.language_code and not self._job.language_code:
            self._job.language_code, self._job.language_probability = options.language_code, 1.0
            await self._run.progress.save()
            await self._run.events.publish(self._job, language_code=options.language_code)
        if options.language_code:
            self.settle(options)

    async def detect(self, chunk: SpeechChunk, options: asr_pb2.TranscriptionOptions) -> None:
        """Has the ASR detect the language on `chunk` and settles it; `options` take it."""
        options.language_code = await self._detect_language(chunk)
        self.settle(options)

    def settle(self, options: asr_pb2.TranscriptionOptions) -> None:
        """Once the language is known: the alignment method, and whether the
        ASR times words (cross-attention times come almost free in its pass)."""
        self._align_method = choose_align_method(self._job.config, options)
        options.word_timestamps = self._align_method == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
        self._settled.set()

    async def _detect_language(self, chunk: SpeechChunk) -> str:
        assert self._run.handle is not None
        request = asr_pb2.DetectLanguageRequest(
            audio=self._run.handle,
            range=time_range_to_proto(chunk.time_range),
            model=self._job.config.transcription.model,
            # A packed chunk is judged on its speech, not on the silence or
            # music between (its first 30 s of audio could hold little speech).
            speech=self._run.packed_speech(chunk),
        )
        response = await self._run.call(
            Stage.TRANSCRIBE,
            chunk.index,
            lambda: self._asr.DetectLanguage(request, **self._run.call_options()),
        )
        self._job.language_code = response.language_code
        self._job.language_probability = response.probability
        await self._run.progress.save()
        await self._run.events.publish(self._job, language_code=response.language_code)
        return response.language_code

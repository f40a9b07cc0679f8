"""A job's language settling against a fake ASR stub and a real store."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from common.rpc.convert import time_range_from_proto
from common.transcript import TimeRange
from gateway.jobs.run.language import LanguageSettling
from gateway.jobs.run.run_state import SpeechChunk
from gateway.store.job_store import JobStore
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2
from tests.unit.gateway.jobs.job_fakes import decoded_run, new_job, published


class FakeAsr:
    """An AsrService stub that hears French."""

    def __init__(self) -> None:
        self.requests: list[asr_pb2.DetectLanguageRequest] = []

    async def DetectLanguage(self, request: asr_pb2.DetectLanguageRequest, **_: Any) -> asr_pb2.DetectLanguageResponse:
        self.requests.append(request)
        return asr_pb2.DetectLanguageResponse(language_code="fr", probability=0.9)


def test_a_language_asked_for_is_settled_at_once(store: JobStore) -> None:
    job = new_job(store, config=gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(language_code="en")))
    options = asr_pb2.TranscriptionOptions(language_code="en")

    async def run() -> LanguageSettling:
        language = LanguageSettling(await decoded_run(store, job), FakeAsr())  # type: ignore[arg-type]
        await language.start(options)
        await asyncio.wait_for(language.wait(), 1.0)
        return language

    language = asyncio.run(run())
    assert (job.language_code, job.language_probability) == ("en", 1.0)
    assert published(store, job, "language_code") == ["en"]
    # English is aligned phonetically: the ASR does not time the words.
    assert language.align_method == align_pb2.ALIGN_METHOD_PHONETIC and not options.word_timestamps


def test_a_language_detected_before_a_restart_is_taken_again(store: JobStore) -> None:
    job = new_job(store, language_code="fr", language_probability=0.8)
    options = asr_pb2.TranscriptionOptions()

    async def run() -> LanguageSettling:
        language = LanguageSettling(await decoded_run(store, job), FakeAsr())  # type: ignore[arg-type]
        await language.start(options)
        return language

    language = asyncio.run(run())
    assert options.language_code == "fr" and job.language_probability == pytest.approx(0.8)
    assert published(store, job, "language_code") == []
    # Cross-attention: the ASR times the words in its pass.
    assert language.align_method == align_pb2.ALIGN_METHOD_CROSS_ATTENTION and options.word_timestamps


def test_an_unknown_language_is_detected_on_the_first_chunk_s_speech(store: JobStore) -> None:
    job = new_job(
        store,
        config=gateway_pb2.JobConfig(speech_detection=vad_pb2.VadOptions(chunking=vad_pb2.CHUNKING_METHOD_PACK)),
    )
    asr = FakeAsr()
    options = asr_pb2.TranscriptionOptions()
    chunk = SpeechChunk(3, TimeRange(30.0, 60.0), (TimeRange(31.0, 35.0), TimeRange(50.0, 52.0)))

    async def run() -> LanguageSettling:
        language = LanguageSettling(await decoded_run(store, job), asr)  # type: ignore[arg-type]
        await language.start(options)
        assert language.align_method is None  # nothing known yet
        await language.detect(chunk, options)
        await asyncio.wait_for(language.wait(), 1.0)
        return language

    language = asyncio.run(run())
    assert options.language_code == "fr" and job.language_code == "fr"
    assert job.language_probability == pytest.approx(0.9)
    assert published(store, job, "language_code") == ["fr"]
    assert language.align_method == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
    (request,) = asr.requests
    assert time_range_from_proto(request.range) == chunk.time_range
    assert [time_range_from_proto(part) for part in request.speech] == list(chunk.speech)

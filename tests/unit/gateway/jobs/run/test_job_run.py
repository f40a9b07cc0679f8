"""What a job's stage units share: calls that get lost audio back, and the
speech of a packed chunk."""

from __future__ import annotations

import asyncio

import grpc
import pytest

from common.rpc.convert import time_range_from_proto
from common.transcript import TimeRange
from gateway.jobs.run.run_state import SpeechChunk
from gateway.records import Stage
from gateway.store.job_store import JobStore
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2
from tests.unit.gateway.jobs.job_fakes import decoded_run, new_job, rpc_error


def test_a_call_that_finds_the_audio_gone_is_made_again_on_new_audio(store: JobStore) -> None:
    job = new_job(store)
    handles: list[str] = []

    async def run() -> str:
        job_run = await decoded_run(store, job)

        async def attempt() -> str:
            assert job_run.handle is not None
            handles.append(job_run.handle.audio_id)
            if len(handles) == 1:
                job_run.audio._audio.held.clear()  # type: ignore[attr-defined]  # the audio service restarted
                raise rpc_error(grpc.StatusCode.NOT_FOUND, "no such audio")
            return "done"

        return await job_run.call(Stage.ALIGN, 0, attempt)

    assert asyncio.run(run()) == "done"
    assert handles == ["audio-1", "audio-2"]


@pytest.mark.parametrize("chunking", [vad_pb2.CHUNKING_METHOD_PACK, vad_pb2.CHUNKING_METHOD_UNSPECIFIED])
def test_the_asr_hears_a_packed_chunk_s_speech_only(store: JobStore, chunking: int) -> None:
    config = gateway_pb2.JobConfig(speech_detection=vad_pb2.VadOptions(chunking=chunking))  # type: ignore[arg-type]
    job = new_job(store, config=config)
    chunk = SpeechChunk(0, TimeRange(0.0, 30.0), (TimeRange(1.0, 4.0), TimeRange(20.0, 29.0)))
    job_run = asyncio.run(decoded_run(store, job))
    packed = chunking == vad_pb2.CHUNKING_METHOD_PACK
    assert job_run.packed == packed
    heard = [time_range_from_proto(part) for part in job_run.packed_speech(chunk)]
    assert heard == (list(chunk.speech) if packed else [])

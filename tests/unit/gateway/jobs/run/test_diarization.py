"""A job's diarization against a fake diarize stub and a real store."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc
import pytest

from common.rpc.convert import seconds_to_duration
from gateway.jobs.run.diarization import Diarization
from gateway.jobs.run.stage_calls import StageFailedError
from gateway.records import Stage
from gateway.store.job_store import JobStore
from subtitler.diarize.v1 import diarize_pb2
from subtitler.gateway.v1 import gateway_pb2
from tests.unit.gateway.jobs.job_fakes import decoded_run, new_job, published, rpc_error


class FakeDiarize:
    """A DiarizeService stub that finds two speakers, after `failures` busy answers."""

    def __init__(self, failures: int = 0) -> None:
        self.requests: list[diarize_pb2.DiarizeRequest] = []
        self.failures = failures

    async def Diarize(self, request: diarize_pb2.DiarizeRequest, **_: Any) -> diarize_pb2.DiarizeResponse:
        self.requests.append(request)
        if len(self.requests) <= self.failures:
            raise rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED)
        turns = [
            diarize_pb2.SpeakerTurn(
                speaker=f"SPEAKER_0{index}",
                start_offset=seconds_to_duration(index * 1.0),
                end_offset=seconds_to_duration(index + 1.0),
            )
            for index in range(2)
        ]
        return diarize_pb2.DiarizeResponse(turns=turns, speaker_count=2)


def test_the_turns_are_stored_and_kept(store: JobStore) -> None:
    job = new_job(
        store,
        config=gateway_pb2.JobConfig(
            diarization=gateway_pb2.DiarizationOptions(enabled=True, speakers=diarize_pb2.SpeakerCount(exactly=2))
        ),
    )
    diarize = FakeDiarize(failures=1)

    async def run() -> None:
        job_run = await decoded_run(store, job)
        await Diarization(job_run, diarize).run()  # type: ignore[arg-type]
        assert job_run.state.speaker_turns is not None and job_run.state.speaker_turns.speaker_count == 2

    asyncio.run(run())
    assert [request.speakers.exactly for request in diarize.requests] == [2, 2]  # retried under the policy
    assert diarize.requests[-1].audio.audio_id == "audio-1"
    stored = store.checkpoint(job.job_id).speaker_turns
    assert stored is not None and [turn.speaker for turn in stored.turns] == ["SPEAKER_00", "SPEAKER_01"]
    progress = [(item.stage, item.fraction, item.done_count) for item in published(store, job, "stage_progress")]
    assert progress[-2:] == [(Stage.DIARIZE, 0.0, 0), (Stage.DIARIZE, 1.0, 2)]


def test_a_gateway_without_a_diarize_service_fails_the_job_saying_so(store: JobStore) -> None:
    job = new_job(store)

    async def run() -> None:
        await Diarization(await decoded_run(store, job), None).run()

    with pytest.raises(StageFailedError) as raised:
        asyncio.run(run())
    assert raised.value.code == grpc.StatusCode.FAILED_PRECONDITION
    assert "SUBTITLER_DIARIZE_TARGET" in raised.value.message

"""A job's audio lease: audio still held reused on resume, audio gone decoded
again once, and releasing audio never failing a job."""

from __future__ import annotations

import asyncio
from typing import Any

import grpc

from gateway.jobs.run.audio_lease import AudioLease, release_audio
from gateway.records import JobRecord
from gateway.store.async_store import AsyncJobStore
from gateway.store.job_store import JobStore
from subtitler.audio.v1 import audio_pb2
from subtitler.common.v1 import common_pb2
from tests.unit.gateway.jobs.job_fakes import FakeAudio, new_job, rpc_error, stage_caller


def lease(
    store: JobStore, job: JobRecord, audio: FakeAudio, resumed: common_pb2.AudioHandle | None = None
) -> AudioLease:
    decoded: list[str] = []

    async def nothing() -> None:
        return None

    async def on_decoded(handle: common_pb2.AudioHandle) -> None:
        decoded.append(handle.audio_id)

    return AudioLease(
        job,
        audio,
        AsyncJobStore(store),
        stage_caller(store, job),
        lambda: {},
        nothing,
        on_decoded,
        resumed,  # type: ignore[arg-type]
    )


def test_a_resumed_job_reuses_audio_still_held_and_decodes_audio_gone(store: JobStore) -> None:
    job = new_job(store)
    audio = FakeAudio()
    audio.held.add("kept")

    async def run() -> None:
        kept = lease(store, job, audio, common_pb2.AudioHandle(audio_id="kept"))
        assert await kept.reuse() and kept.handle is not None and kept.handle.audio_id == "kept"
        gone = lease(store, job, audio, common_pb2.AudioHandle(audio_id="gone"))
        assert not await gone.reuse() and gone.handle is None
        await gone.decode()
        assert gone.handle is not None and gone.handle.audio_id == "audio-1"

    asyncio.run(run())
    assert audio.decodes == 1


def test_lost_audio_is_decoded_again_once_for_every_stage(store: JobStore) -> None:
    job = new_job(store)
    audio = FakeAudio()

    async def run() -> None:
        audio_lease = lease(store, job, audio)
        await audio_lease.decode()
        used = audio_lease.handle
        audio.held.clear()  # the audio service restarted
        first, second = await asyncio.gather(audio_lease.replace_if_lost(used), audio_lease.replace_if_lost(used))
        assert first and second
        assert audio_lease.handle is not None and audio_lease.handle.audio_id == "audio-2"
        # A NOT_FOUND about something else (the audio is there): no decode.
        assert not await audio_lease.replace_if_lost(audio_lease.handle)
        await audio_lease.release()
        await audio_lease.release()

    asyncio.run(run())
    assert audio.decodes == 2 and audio.released == ["audio-2"]
    assert store.audio_handle(job.job_id) is None


def test_release_audio_never_fails(store: JobStore) -> None:
    job = new_job(store)

    class Down(FakeAudio):
        async def ReleaseAudio(
            self, request: audio_pb2.ReleaseAudioRequest, **_: Any
        ) -> audio_pb2.ReleaseAudioResponse:
            raise rpc_error(grpc.StatusCode.UNAVAILABLE)

    asyncio.run(release_audio(Down(), AsyncJobStore(store), job.job_id, common_pb2.AudioHandle(audio_id="x")))  # type: ignore[arg-type]

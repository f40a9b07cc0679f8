"""gateway.jobs.outcomes: a job's end (succeeded, cancelled, failed) written
to a real SQLite store with its event, its upload deleted, and stored audio
given back to a fake audio service."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from common.transcript import Segment
from gateway.jobs.admission import JobSizes
from gateway.jobs.events import EventHub
from gateway.jobs.outcomes import OutcomeRecorder
from gateway.jobs.run.pipeline import Peers
from gateway.records import JobFailure, JobRecord, JobState, Stage
from gateway.store.async_store import AsyncJobStore
from gateway.store.job_store import JobStore
from subtitler.audio.v1 import audio_pb2
from subtitler.common.v1 import common_pb2
from subtitler.gateway.v1 import gateway_pb2


class FakeAudio:
    """An AudioService stub that records the audio given back."""

    def __init__(self) -> None:
        self.released: list[str] = []

    async def ReleaseAudio(self, request: audio_pb2.ReleaseAudioRequest, **_: Any) -> audio_pb2.ReleaseAudioResponse:
        self.released.append(request.audio_id)
        return audio_pb2.ReleaseAudioResponse()


def running_job(store: JobStore, upload: Path) -> JobRecord:
    upload.write_bytes(b"x" * 1000)
    now = time.time()
    job = JobRecord(
        job_id="job-1",
        state=JobState.RUNNING,
        config=gateway_pb2.JobConfig(),
        source="talk.wav",
        created_s=now,
        updated_s=now,
        media_path=str(upload),
        uploaded=True,
        stage=Stage.TRANSCRIBE,
        waiting_reason="waiting for asr",
    )
    store.insert_job(job)
    return job


def recorder(store: JobStore, audio: FakeAudio | None = None, sizes: JobSizes | None = None) -> OutcomeRecorder:
    peers = Peers(audio=audio or FakeAudio(), vad=None, asr=None, align=None)  # type: ignore[arg-type]
    return OutcomeRecorder(AsyncJobStore(store), EventHub(AsyncJobStore(store)), peers, sizes or JobSizes())


def test_a_success_stores_the_result_and_teaches_the_sizes(store: JobStore, tmp_path: Path) -> None:
    job = running_job(store, tmp_path / "talk.wav")
    job.audio_duration_s = 20.0
    sizes = JobSizes()
    segments = [Segment(start_s=0.0, end_s=1.0, text="hello")]
    asyncio.run(recorder(store, sizes=sizes).succeeded(job, segments, time.monotonic() - 2.0))
    stored = store.get_job(job.job_id)
    assert stored.state == JobState.SUCCEEDED and stored.stage == Stage.NONE
    assert stored.segment_count == 1 and stored.processing_s >= 2.0 and stored.finished_s > 0
    assert [segment.text for segment in store.result(job.job_id)] == ["hello"]
    assert sizes.estimate_s() == 20.0 and sizes.estimate_s(upload_bytes=2000) == 40.0
    assert not (tmp_path / "talk.wav").exists()
    (event,) = store.events_after(job.job_id, 0)
    assert event.state_changed and event.previous_state == gateway_pb2.JOB_STATE_RUNNING


def test_a_cancelled_job_is_finished_and_its_upload_deleted(store: JobStore, tmp_path: Path) -> None:
    job = running_job(store, tmp_path / "talk.wav")
    asyncio.run(recorder(store).cancelled(job, time.monotonic()))
    stored = store.get_job(job.job_id)
    assert stored.state == JobState.CANCELLED and stored.stage == Stage.NONE and not stored.waiting_reason
    assert stored.finished_s > 0
    assert not (tmp_path / "talk.wav").exists()
    (event,) = store.events_after(job.job_id, 0)
    assert event.state == gateway_pb2.JOB_STATE_CANCELLED


def test_a_failure_is_stored_and_told_in_its_event(store: JobStore, tmp_path: Path) -> None:
    job = running_job(store, tmp_path / "talk.wav")
    failure = JobFailure("INVALID_ARGUMENT", "not media", Stage.DECODE)
    asyncio.run(recorder(store).failed(job, failure, time.monotonic()))
    stored = store.get_job(job.job_id)
    assert stored.state == JobState.FAILED and stored.failure == failure and stored.finished_s > 0
    assert not (tmp_path / "talk.wav").exists()
    (event,) = store.events_after(job.job_id, 0)
    assert event.error.code == "INVALID_ARGUMENT" and event.error.stage == gateway_pb2.STAGE_DECODE


def test_stored_audio_is_given_back_once(store: JobStore, tmp_path: Path) -> None:
    job = running_job(store, tmp_path / "talk.wav")
    store.save_audio_handle(job.job_id, common_pb2.AudioHandle(audio_id="audio-1"))
    audio = FakeAudio()
    outcomes = recorder(store, audio)
    asyncio.run(outcomes.release_stored_audio(job.job_id))
    assert audio.released == ["audio-1"]
    assert store.audio_handle(job.job_id) is None
    asyncio.run(outcomes.release_stored_audio(job.job_id))  # nothing held any more
    assert audio.released == ["audio-1"]

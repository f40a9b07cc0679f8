"""A job's progress against a real store and event hub: estimates only grow,
the same figures are published once, a per-chunk stage is scaled by how much
of the audio detection has covered, a finished stage is timed."""

from __future__ import annotations

import asyncio

import pytest
from prometheus_client import REGISTRY

from common.transcript import TimeRange
from gateway.jobs.events import EventHub
from gateway.jobs.run.progress import ProgressReporter
from gateway.jobs.run.run_state import RunState, SpeechChunk
from gateway.records import JobRecord, Stage
from gateway.store.async_store import AsyncJobStore
from gateway.store.job_store import JobStore
from subtitler.common.v1 import common_pb2
from tests.unit.gateway.jobs.job_fakes import new_job, published


def reporter(store: JobStore, job: JobRecord, state: RunState | None = None) -> ProgressReporter:
    facade = AsyncJobStore(store)
    return ProgressReporter(job, facade, EventHub(facade), state if state is not None else RunState())


def figures(store: JobStore, job: JobRecord) -> list[tuple[int, float, int, int]]:
    return [
        (progress.stage, round(progress.fraction, 3), progress.done_count, progress.total_count)
        for progress in published(store, job, "stage_progress")
    ]


def test_estimates_only_grow_and_are_published_once(store: JobStore) -> None:
    job = new_job(store)
    progress = reporter(store, job)

    async def run() -> None:
        await progress.report(Stage.TRANSCRIBE, 0.5, 1, 2)
        await progress.report(Stage.TRANSCRIBE, 0.25, 1, 2)  # lower: stays at 0.5, same figures
        await progress.report(Stage.TRANSCRIBE, 0.5, 1, 2)
        await progress.report(Stage.TRANSCRIBE, 2.0, 2, 2)  # at most the whole stage

    asyncio.run(run())
    assert figures(store, job) == [(Stage.TRANSCRIBE, 0.5, 1, 2), (Stage.TRANSCRIBE, 1.0, 2, 2)]
    assert store.get_job(job.job_id).stage_fractions[Stage.TRANSCRIBE] == 1.0


def test_a_finished_stage_is_timed_once(store: JobStore) -> None:
    job = new_job(store)
    progress = reporter(store, job)

    def timed() -> tuple[float, float]:
        labels = {"stage": "align"}
        count = REGISTRY.get_sample_value("subtitler_stage_duration_seconds_count", labels)
        return count or 0.0, REGISTRY.get_sample_value("subtitler_stage_duration_seconds_sum", labels) or 0.0

    count_before, sum_before = timed()

    async def run() -> None:
        await progress.report(Stage.ALIGN, 0.0)
        await asyncio.sleep(0.02)
        await progress.report(Stage.ALIGN, 1.0, 1, 1)
        await progress.report(Stage.ALIGN, 1.0, 2, 2)  # new figures, the stage timed already

    asyncio.run(run())
    count_after, sum_after = timed()
    assert count_after - count_before == 1 and 0.02 <= sum_after - sum_before < 1.0


def test_a_per_chunk_stage_is_scaled_by_what_detection_has_covered(store: JobStore) -> None:
    job = new_job(store)
    state = RunState(chunks=[SpeechChunk(index, TimeRange(index * 10.0, index * 10.0 + 10.0)) for index in range(4)])
    progress = reporter(store, job, state)
    job.stage_fractions[Stage.DETECT_SPEECH] = 0.5
    assert progress.chunk_fraction(2) == pytest.approx(0.25)
    state.detection_done = True
    assert progress.chunk_fraction(2) == pytest.approx(0.5)
    asyncio.run(progress.report_chunks(Stage.ALIGN, 3))
    assert figures(store, job) == [(Stage.ALIGN, 0.75, 3, 4)]
    assert reporter(store, job, RunState()).chunk_fraction(0) == 0.0  # no chunk known yet


def test_entering_a_stage_and_the_decoded_audio(store: JobStore) -> None:
    job = new_job(store)
    progress = reporter(store, job)
    handle = common_pb2.AudioHandle(audio_id="a")
    handle.duration.FromSeconds(90)

    async def run() -> None:
        await progress.enter(Stage.DECODE)
        await progress.decoded(handle)
        await progress.decoded(handle)  # the duration is published once

    asyncio.run(run())
    assert job.stage == Stage.DECODE and job.audio_duration_s == 90.0
    assert [duration.seconds for duration in published(store, job, "audio_duration")] == [90]
    assert figures(store, job) == [(Stage.DECODE, 0.0, 0, 0), (Stage.DECODE, 1.0, 0, 0)]
    assert store.get_job(job.job_id).audio_duration_s == 90.0

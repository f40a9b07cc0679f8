from __future__ import annotations

import asyncio
import inspect
import threading
import time
from pathlib import Path

import pytest

from common.errors import NotFoundError
from common.transcript import Segment, TimeRange
from gateway.records import JobRecord, JobState
from gateway.store.async_store import AsyncJobStore
from gateway.store.errors import LeaseLostError
from gateway.store.job_store import JobStore
from subtitler.common.v1 import common_pb2
from subtitler.diarize.v1 import diarize_pb2
from subtitler.gateway.v1 import gateway_pb2
from tests.postgres import fresh_database
from tests.unit.gateway.store.store_fixtures import new_job


def test_every_operation_is_a_coroutine() -> None:
    """Async code cannot call a blocking method of the facade by mistake."""
    public = {name: member for name, member in vars(AsyncJobStore).items() if not name.startswith("_")}
    assert public
    for name, member in public.items():
        function = member.__func__ if isinstance(member, classmethod) else member
        assert inspect.iscoroutinefunction(function), name


def test_jobs_queue_and_events_through_the_facade(tmp_path: Path) -> None:
    async def main() -> None:
        store = await AsyncJobStore.open(tmp_path / "jobs.sqlite3")
        assert not store.shared and store.owner_id
        first = gateway_pb2.JobEvent(job_id="a", state=gateway_pb2.JOB_STATE_QUEUED)
        job = await store.insert_job(new_job("a", request_id="r1"), first)
        assert first.sequence == 1
        await store.insert_job(new_job("b", priority=5))
        assert (await store.insert_job(new_job("c", request_id="r1"))).job_id == "a"  # the request id names one job
        assert (await store.job_by_request_id("r1")) is not None
        assert await store.queued_count() == 2
        assert [(queued.job_id, place) for queued, place in await store.queued_jobs()] == [("b", 0), ("a", 0)]
        published = await store.publish_queue_position(gateway_pb2.JobEvent(job_id="a"))
        assert published is not None and published.queue_position == 2
        # Claimed in queue order; the lease renewed, released and cleared.
        claimed = await store.claim_next(30.0)
        assert claimed is not None and claimed.job.job_id == "b"
        assert await store.claim("a", 30.0) is not None
        await store.request_cancel("a")
        assert await store.renew_leases(["a", "b"], 30.0) == ({"a", "b"}, {"a"})
        await store.release_leases(["b"])
        assert await store.claim_next(30.0, ["a"]) is not None  # "b" again
        assert await store.clear_leases() == 2
        # State, retries and events.
        job.state = JobState.RUNNING
        saved_at = time.time()
        await store.save(job)
        again = await store.get_job("a")
        assert again.state == JobState.RUNNING and again.updated_s >= saved_at
        await store.add_retry("a", gateway_pb2.RetryAttempt(attempt=1, code="UNAVAILABLE"))
        assert [retry.code for retry in (await store.get_job("a")).retries] == ["UNAVAILABLE"]
        appended = await store.append_event(gateway_pb2.JobEvent(job_id="a", progress=0.5))
        assert appended.sequence == 3  # after the first event and the queue position
        assert [event.progress for event in await store.events_after("a", 2)] == [0.5]
        page = await store.list_jobs(limit=1, before=None, state=JobState.RUNNING)
        assert [listed.job_id for listed in page] == ["a"]
        assert [listed.job_id for listed in await store.list_jobs(limit=5, before=None, state=None, owner="x")] == []
        assert {unfinished.job_id for unfinished in await store.unfinished_jobs()} == {"a", "b"}
        assert await store.listen_for_events(lambda job_id: None) is None  # one gateway's file
        await store.close()

    asyncio.run(main())


def test_stage_outputs_and_results_through_the_facade(tmp_path: Path) -> None:
    async def main() -> None:
        store = await AsyncJobStore.open(tmp_path / "jobs.sqlite3")
        job = await store.insert_job(new_job("a"))
        await store.save_audio_handle("a", common_pb2.AudioHandle(audio_id="pcm-1"))
        assert await store.audio_handle("a") == common_pb2.AudioHandle(audio_id="pcm-1")
        await store.save_speech_chunk("a", 0, TimeRange(0.0, 4.0), (TimeRange(0.5, 3.5),))
        await store.mark_detection_complete("a")
        await store.save_chunk_transcript("a", 0, "en", [Segment("Hello.", 0.5, 1.0)])
        await store.save_chunk_alignment("a", 0, 2, [Segment("Hello.", 0.5, 1.0)])
        turns = diarize_pb2.DiarizeResponse(speaker_count=1)
        await store.save_speaker_turns("a", turns)
        assert await store.speaker_turns("a") == turns
        checkpoint = await store.checkpoint("a")
        assert checkpoint.detection_complete and checkpoint.speech_ranges == {0: (TimeRange(0.5, 3.5),)}
        assert checkpoint.transcripts[0][0] == "en" and checkpoint.alignments[0][0] == 2
        job.state, job.waiting_reason = JobState.SUCCEEDED, "waiting for ASR"
        await store.save_finished(job, [Segment("Hello.", 0.5, 1.0)])
        assert job.finished_s > 0 and job.waiting_reason == ""
        finished = await store.get_job("a")
        assert finished.state == JobState.SUCCEEDED and finished.finished_s == job.finished_s
        assert [segment.text for segment in await store.result("a")] == ["Hello."]
        assert [expired.job_id for expired in await store.expired_jobs(time.time() + 1)] == ["a"]
        await store.delete_job("a")
        with pytest.raises(NotFoundError):
            await store.get_job("a")
        await store.close()

    asyncio.run(main())


def test_operations_run_on_the_stores_thread_and_a_saved_record_is_a_copy(tmp_path: Path) -> None:
    sync = JobStore(tmp_path / "jobs.sqlite3")
    store = AsyncJobStore(sync)
    sync.insert_job(new_job("a"))
    seen: list[tuple[str, JobRecord]] = []
    update_job = sync.jobs.update_job

    def spy(job: JobRecord) -> None:
        seen.append((threading.current_thread().name, job))
        update_job(job)

    sync.jobs.update_job = spy  # type: ignore[method-assign]

    async def main() -> None:
        job = sync.get_job("a")
        await store.save(job)
        ((thread, saved),) = seen
        assert thread.startswith("job-store") and thread != threading.current_thread().name
        assert saved is not job and saved.job_id == "a"  # a snapshot: the loop goes on changing `job`
        await store.close()

    asyncio.run(main())


def test_a_companion_holds_the_same_gateways_leases_on_a_connection_of_its_own(location: str | Path) -> None:
    async def main() -> None:
        store = await AsyncJobStore.open(location)
        await store.insert_job(new_job("a"))
        assert await store.claim("a", 30.0) is not None
        leases = await store.companion()
        assert leases.owner_id == store.owner_id
        assert await leases.renew_leases(["a"], 30.0) == ({"a"}, set())
        other = await AsyncJobStore.open(location)  # another gateway
        with pytest.raises(LeaseLostError):
            await other.append_event(gateway_pb2.JobEvent(job_id="a"))
        for opened in (store, leases, other):
            await opened.close()

    asyncio.run(main())


def test_a_shared_store_tells_the_facade_of_other_gateways_events(postgres: str) -> None:
    url = fresh_database(postgres)

    async def main() -> None:
        writer, reader = await AsyncJobStore.open(url), await AsyncJobStore.open(url)
        assert reader.shared
        heard: asyncio.Queue[str] = asyncio.Queue()
        loop = asyncio.get_running_loop()
        stop = await reader.listen_for_events(lambda job_id: loop.call_soon_threadsafe(heard.put_nowait, job_id))
        assert stop is not None
        try:
            await asyncio.sleep(0.5)  # listening
            await writer.insert_job(new_job("a"), gateway_pb2.JobEvent(job_id="a"))
            assert await asyncio.wait_for(heard.get(), timeout=5) == "a"
        finally:
            await stop()
            await writer.close()
            await reader.close()

    asyncio.run(main())

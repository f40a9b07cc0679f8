"""The units of a job's pipeline on their own, against fake stubs and a real
SQLite store: the stage caller's retry policy, the audio lease, the policy
functions."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import grpc
import pytest

from common.rpc.convert import segment_to_proto, time_range_from_proto
from common.rpc.server import ServerConfig
from common.transcript import Segment, TimeRange
from gateway.asr_capacity import AsrCapacity
from gateway.config import GatewayConfig, RetryPolicy
from gateway.jobs.audio_lease import AudioLease, release_audio
from gateway.jobs.events import EventHub
from gateway.jobs.pipeline import JobPipeline, Peers
from gateway.jobs.policy import (
    choose_align_method,
    consecutive_runs,
    merge_found_segments,
    tail_share,
    uncovered_speech,
)
from gateway.jobs.stage_calls import StageCaller, StageFailedError
from gateway.records import JobRecord, Stage
from gateway.store.async_store import AsyncJobStore
from gateway.store.job_store import JobStore
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.audio.v1 import audio_pb2
from subtitler.common.v1 import common_pb2
from subtitler.gateway.v1 import gateway_pb2
from tests.unit.gateway.jobs.job_fakes import FAST, FakeAudio, new_job, rpc_error


def failing(*errors: grpc.aio.AioRpcError, result: str = "done") -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """An attempt that raises `errors` one by one, then returns `result`; and its call count."""
    calls = [0]

    async def attempt() -> str:
        calls[0] += 1
        if calls[0] <= len(errors):
            raise errors[calls[0] - 1]
        return result

    return attempt, calls


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.sqlite3")


def caller(store: JobStore, job: JobRecord, policy: RetryPolicy = FAST) -> StageCaller:
    facade = AsyncJobStore(store)
    return StageCaller(job, facade, EventHub(facade), policy)


def test_transient_codes_are_retried_and_every_attempt_is_kept(store: JobStore) -> None:
    job = new_job(store)
    attempt, calls = failing(
        rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", retry_after="0.01"),
        rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED),
    )
    assert asyncio.run(caller(store, job).call(Stage.TRANSCRIBE, 3, attempt)) == "done"
    assert calls[0] == 3
    retries = store.get_job(job.job_id).retries
    assert [(retry.code, retry.attempt, retry.chunk_index) for retry in retries] == [
        ("RESOURCE_EXHAUSTED", 1, 3),
        ("DEADLINE_EXCEEDED", 2, 3),
    ]


def test_retries_end_with_the_services_message(store: JobStore) -> None:
    job = new_job(store)
    attempt, calls = failing(*[rpc_error(grpc.StatusCode.ABORTED, "conflict")] * 5)
    with pytest.raises(StageFailedError) as raised:
        asyncio.run(caller(store, job).call(Stage.ALIGN, 0, attempt))
    assert calls[0] == FAST.max_retries + 1
    assert raised.value.code == grpc.StatusCode.ABORTED and "gave up after 3 attempts" in raised.value.message


def test_other_codes_fail_at_once(store: JobStore) -> None:
    job = new_job(store)
    attempt, calls = failing(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "not media"))
    with pytest.raises(StageFailedError) as raised:
        asyncio.run(caller(store, job).call(Stage.DECODE, -1, attempt))
    assert calls[0] == 1 and raised.value.message == "not media"


def test_unavailable_is_waited_out_with_a_reason_then_cleared(store: JobStore) -> None:
    job = new_job(store)
    reasons: list[str] = []
    attempt, _ = failing(rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"))

    async def watched() -> str:
        async def run() -> str:
            return await caller(store, job).call(Stage.TRANSCRIBE, 0, attempt)

        task = asyncio.create_task(run())
        await asyncio.sleep(0.005)
        reasons.append(job.waiting_reason)
        return await task

    assert asyncio.run(watched()) == "done"
    assert "waiting for the asr service (connection refused)" in reasons[0]
    assert job.waiting_reason == ""


def test_unavailable_for_too_long_fails(store: JobStore) -> None:
    job = new_job(store)
    attempt, _ = failing(*[rpc_error(grpc.StatusCode.UNAVAILABLE)] * 100)
    with pytest.raises(StageFailedError) as raised:
        asyncio.run(caller(store, job).call(Stage.DETECT_SPEECH, -1, attempt))
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE and "vad service was unavailable" in raised.value.message


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
        caller(store, job),
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


def test_align_method_policy() -> None:
    english = asr_pb2.TranscriptionOptions(language_code="en-GB")
    french = asr_pb2.TranscriptionOptions(language_code="fr")
    translated = asr_pb2.TranscriptionOptions(language_code="en", task=asr_pb2.TASK_TRANSLATE)
    stored_before_profiles = gateway_pb2.JobConfig()
    assert choose_align_method(stored_before_profiles, english) == align_pb2.ALIGN_METHOD_PHONETIC
    assert choose_align_method(stored_before_profiles, french) == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
    assert choose_align_method(stored_before_profiles, translated) == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
    chosen = gateway_pb2.JobConfig(align_method=align_pb2.ALIGN_METHOD_CROSS_ATTENTION)
    assert choose_align_method(chosen, english) == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
    skipped = gateway_pb2.JobConfig(skip_alignment=True, align_method=align_pb2.ALIGN_METHOD_PHONETIC)
    assert choose_align_method(skipped, english) == align_pb2.ALIGN_METHOD_UNSPECIFIED


def test_consecutive_runs_split_where_indices_jump() -> None:
    assert consecutive_runs([1, 2, 3, 5, 6, 9], key=lambda index: index) == [[1, 2, 3], [5, 6], [9]]
    assert consecutive_runs([], key=lambda index: index) == []


@pytest.mark.parametrize(
    ("size", "queued", "workers", "done", "more", "expected"),
    [
        (4, 20, 2, False, None, 4),
        (4, 20, 2, True, None, 4),
        (4, 6, 2, True, None, 3),
        (4, 3, 2, True, None, 1),
        (4, 1, 2, True, None, 1),
        # While detection runs: what is queued and what is still to come.
        (8, 2, 2, False, None, 8),  # nothing known yet
        (8, 2, 2, False, 7.2, 5),  # 10 chunks in all over 2 replicas: 5 each, not 8 and 2
        (8, 8, 2, False, 0.4, 5),  # the last 9
        (8, 20, 2, False, 20.0, 8),
    ],
)
def test_the_last_chunks_are_shared_over_the_workers(
    size: int, queued: int, workers: int, done: bool, more: float | None, expected: int
) -> None:
    assert tail_share(size, queued, workers, detection_done=done, expected_more=more) == expected


def test_a_limit_is_not_retried_but_a_busy_service_is(store: JobStore) -> None:
    job = new_job(store)
    attempt, calls = failing(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "audio lasts 5 h; at most 4 h"))
    with pytest.raises(StageFailedError):
        asyncio.run(caller(store, job).call(Stage.DECODE, -1, attempt))
    assert calls[0] == 1  # one decode, not four
    attempt, calls = failing(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"))
    assert asyncio.run(caller(store, job).call(Stage.DECODE, -1, attempt)) == "done"
    assert calls[0] == 2


def test_the_coverage_check_finds_speech_no_segment_covers() -> None:
    chunk = TimeRange(10.0, 30.0)
    speech = [TimeRange(10.5, 14.0), TimeRange(15.0, 15.6), TimeRange(17.0, 21.0), TimeRange(25.0, 29.5)]
    segments = [
        Segment("Covered.", 10.4, 14.1),
        Segment("Barely.", 17.0, 17.3),  # 0.3 of 4 s: under a fifth
        Segment("Right after.", 21.2, 24.0),
    ]
    # 15.0-15.6 is too short to look at again; 17-21 is padded but kept clear
    # of the segments on either side; 25-29.5 is padded to the chunk's end.
    assert uncovered_speech(speech, segments, chunk) == [TimeRange(17.3, 21.2), TimeRange(24.7, 29.8)]
    assert uncovered_speech(speech, [*segments, Segment("Late.", 25.0, 29.0)], chunk) == [TimeRange(17.3, 21.2)]
    assert uncovered_speech([], segments, chunk) == []


def test_the_coverage_check_of_a_packed_chunk_looks_again_in_windows_whisper_takes() -> None:
    # 20 speech ranges of 1.5 s, 0.2 s apart: a packed chunk spanning 33.8 s.
    speech = [TimeRange(100.0 + 1.7 * i, 101.5 + 1.7 * i) for i in range(20)]
    chunk = TimeRange(speech[0].start_s, speech[-1].end_s)
    windows = uncovered_speech(speech, [], chunk)
    assert len(windows) == 2
    assert all(window.end_s - window.start_s <= 30.0 for window in windows)
    assert windows[0].start_s == chunk.start_s and windows[-1].end_s == chunk.end_s
    assert windows[0].end_s == windows[1].start_s


def test_what_a_second_look_finds_is_kept_in_order_unless_doubtful() -> None:
    first, last = Segment("One.", 1.0, 2.0), Segment("Three.", 5.0, 6.0)
    found = [
        Segment("Two.", 3.0, 4.0, avg_logprob=-0.3),
        Segment("you", 4.2, 4.5, avg_logprob=-1.4),  # doubtful: left out
        Segment(" ", 4.6, 4.7),
        Segment("one", 4.8, 4.9),  # said already: the first segment's times had drifted
    ]
    assert [segment.text for segment in merge_found_segments([first, last], found)] == ["One.", "Two.", "Three."]


class SkippingAsr:
    """An AsrService stub whose first pass leaves a hole in chunk 0's speech
    and streams chunk 1 only once the second look at that hole has come."""

    def __init__(self, chunks: list[TimeRange]) -> None:
        self.chunks = chunks
        self.looked_at: list[list[TimeRange]] = []
        self.look_came = asyncio.Event()

    def Transcribe(self, request: asr_pb2.TranscribeRequest, **_: Any) -> Any:
        ranges = [time_range_from_proto(item) for item in request.chunks]

        async def first_pass() -> Any:
            for position, chunk in enumerate(ranges):
                index = request.first_chunk_index + position
                if index == 1:
                    await asyncio.wait_for(self.look_came.wait(), timeout=5.0)
                # Chunk 0's words end 4 s before it does: speech Whisper skipped.
                end_s = chunk.end_s - (4.0 if index == 0 else 0.0)
                yield asr_pb2.TranscribeResponse(
                    chunk_index=index,
                    language_code="en",
                    segments=[segment_to_proto(Segment(f"Chunk {index}.", chunk.start_s, end_s, chunk_index=index))],
                )

        async def second_look() -> Any:
            self.looked_at.append(ranges)
            self.look_came.set()
            for position, window in enumerate(ranges):
                yield asr_pb2.TranscribeResponse(
                    chunk_index=position,
                    segments=[
                        segment_to_proto(Segment("Found.", window.start_s + 0.5, window.end_s, avg_logprob=-0.2))
                    ],
                )

        return first_pass() if ranges == self.chunks[request.first_chunk_index :][: len(ranges)] else second_look()


# Two 10 s chunks, each ending in a 4 s speech range of its own.
LOOKED_AT_CHUNKS = [TimeRange(0.0, 10.0), TimeRange(10.0, 20.0)]


def run_detected_job(store: JobStore, asr: SkippingAsr) -> list[Segment]:
    """A job whose speech was detected before (a resumed job: both of
    `LOOKED_AT_CHUNKS` go in one Transcribe call), run against `asr`."""
    job = new_job(
        store,
        config=gateway_pb2.JobConfig(
            transcription=asr_pb2.TranscriptionOptions(language_code="en", batch_size=2), skip_alignment=True
        ),
    )
    for index, chunk in enumerate(LOOKED_AT_CHUNKS):
        speech = [TimeRange(chunk.start_s, chunk.end_s - 4.0), TimeRange(chunk.end_s - 4.0, chunk.end_s)]
        store.save_speech_chunk(job.job_id, index, chunk, speech)
    store.mark_detection_complete(job.job_id)
    peers = Peers(
        audio=FakeAudio(),  # type: ignore[arg-type]
        vad=None,  # type: ignore[arg-type]
        asr=asr,  # type: ignore[arg-type]
        align=None,  # type: ignore[arg-type]
        asr_capacity=AsrCapacity(None, replica_count=1),
    )
    config = GatewayConfig(server=ServerConfig(), retry=FAST)
    facade = AsyncJobStore(store)
    pipeline = JobPipeline(job, peers, facade, EventHub(facade), config, store.checkpoint(job.job_id))
    return asyncio.run(pipeline.run())


def test_a_second_look_goes_out_while_the_rest_of_its_call_streams(store: JobStore) -> None:
    asr = SkippingAsr(LOOKED_AT_CHUNKS)
    segments = run_detected_job(store, asr)
    # The look at chunk 0's last 4 s went out while chunk 1 was still to come
    # in the same Transcribe call (a look sent after the call's end would never be).
    assert asr.looked_at == [[TimeRange(6.0, 10.0)]]
    assert [(segment.text, segment.chunk_index) for segment in segments] == [
        ("Chunk 0.", 0),
        ("Found.", 0),
        ("Chunk 1.", 1),
    ]


class BreakingAsr(SkippingAsr):
    """A SkippingAsr whose first call breaks off (ABORTED) after chunk 0."""

    def __init__(self, chunks: list[TimeRange]) -> None:
        super().__init__(chunks)
        self.first_passes: list[int] = []

    def Transcribe(self, request: asr_pb2.TranscribeRequest, **_: Any) -> Any:
        stream = super().Transcribe(request)
        if len(request.chunks) == 1 and request.first_chunk_index == 0:
            return stream  # the look
        self.first_passes.append(request.first_chunk_index)

        async def breaking() -> Any:
            async for response in stream:
                yield response
                if len(self.first_passes) == 1:
                    raise rpc_error(grpc.StatusCode.ABORTED, "the ASR restarted")

        return breaking()


def test_a_chunk_looked_at_again_is_kept_when_its_call_then_fails(store: JobStore) -> None:
    asr = BreakingAsr(LOOKED_AT_CHUNKS)
    asr.look_came.set()  # chunk 1 need not wait for the look
    segments = run_detected_job(store, asr)
    # The retry asks for chunk 1 only: chunk 0 came, was looked at again once, and is kept.
    assert asr.first_passes == [0, 1]
    assert asr.looked_at == [[TimeRange(6.0, 10.0)]]
    assert [segment.text for segment in segments] == ["Chunk 0.", "Found.", "Chunk 1."]

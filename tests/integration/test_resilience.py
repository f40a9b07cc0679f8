"""The suite under real failures: processes killed with SIGKILL mid-job and
started again, a replica lost for good, a watcher that loses its stream, a
cancelled job, a corrupt stored record.

One suite serves every test (two ASR replicas, ASR batches of 2 chunks and
speech chunks of at most 6 s, so the 100 s recording takes about 11 ASR
calls and a kill lands in the middle); each test starts with every process up and
leaves no job running. Which chunks each job asked the ASR for is read from
the ASR replicas' JSON logs ("transcribing chunks A-B", with the job id and
request id bound, and the canonical "rpc" line with the call's final code).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from common.rpc.convert import duration_to_seconds
from gateway.asr_capacity import CALLS_PER_WORKER
from gateway.store.database import open_database, schema_sql
from gateway.store.job_store import JobStore
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2
from tests.integration.suite_fixtures import RunningSuite, our_segments, start_suite
from tests.postgres import STORES, gateway_store_env
from tests.speech import build_long_recording, speech_available, write_wav
from tools.asr_log import AsrRequest, asr_requests, cut_off_chunks, requested_chunks
from tools.suite import Suite

pytestmark = [
    pytest.mark.integration,
    pytest.mark.slow,
    pytest.mark.skipif(not speech_available(), reason="needs asterisk-core-sounds-en-wav (make test-data)"),
]

ASR_BATCH_SIZE = 2
# Two ASR replicas of one worker each; the gateway keeps CALLS_PER_WORKER
# calls in flight per worker, so a kill cuts off at most this many chunks.
ASR_REPLICAS = 2
IN_FLIGHT_CHUNKS = CALLS_PER_WORKER * ASR_REPLICAS * ASR_BATCH_SIZE
MAX_CHUNK_S = 6
RECORDING_S = 90.0
MEDIA_NAME = "long.wav"
# A job counts as being in the middle of transcription past this fraction.
MID_ASR_FRACTION = 0.3
FINISHED = (gateway_pb2.JOB_STATE_SUCCEEDED, gateway_pb2.JOB_STATE_FAILED, gateway_pb2.JOB_STATE_CANCELLED)
JOB_CONFIG = gateway_pb2.JobConfig(
    speech_detection=vad_pb2.VadOptions(max_chunk_duration=Duration(seconds=MAX_CHUNK_S)),
)
CORRUPT_TRANSCRIPTS = "UPDATE chunk_transcripts SET segments = '{{not json' WHERE job_id = ?"
CORRUPT_CONFIG = "UPDATE jobs SET config = CAST('not a protobuf' AS {blob}) WHERE job_id = ?"


@pytest.fixture(scope="module", params=STORES)
def resilient(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSuite]:
    """The suite on each job store in turn."""
    before = our_segments()
    root: Path = tmp_path_factory.mktemp(f"resilient-{request.param}")
    yield from start_suite(
        root,
        {
            **gateway_store_env(request.param, request),
            "SUBTITLER_GATEWAY_ASR_BATCH_SIZE": str(ASR_BATCH_SIZE),
            "SUBTITLER_GATEWAY_ASR_WORKERS": str(ASR_REPLICAS),
            "SUBTITLER_ASR_NUM_WORKERS": "1",
            "SUBTITLER_GATEWAY_MAX_CONCURRENT_JOBS": "2",
            # Waits for a service that is back come round quickly.
            "SUBTITLER_GATEWAY_INITIAL_BACKOFF_S": "0.2",
            "SUBTITLER_GATEWAY_MAX_BACKOFF_S": "1",
            "SUBTITLER_GATEWAY_MAX_UNAVAILABLE_WAIT_S": "120",
            "SUBTITLER_GATEWAY_CALL_TIMEOUT_S": "120",
        },
        replicas={"asr": ASR_REPLICAS},
    )
    leaked = our_segments() - before
    assert not leaked, f"shared memory left behind after the suite stopped: {sorted(leaked)}"


@pytest.fixture(scope="module")
def recording(resilient: RunningSuite) -> str:
    samples = build_long_recording(min_duration_s=RECORDING_S).samples
    write_wav(resilient.media_dir / MEDIA_NAME, samples)
    return MEDIA_NAME


def start_what_is_down(suite: Suite) -> None:
    for name in suite.names():
        if name in suite.down or suite.processes[name].poll() is not None:
            suite.restart(name)


@pytest.fixture
def suite(resilient: RunningSuite, recording: str) -> Iterator[RunningSuite]:
    """The shared suite with every process up. After the test, processes
    left down are started again, jobs left unfinished are cancelled, and a
    process that died on its own fails the test."""
    start_what_is_down(resilient.suite)
    yield resilient
    crashed = resilient.suite.crashed()
    start_what_is_down(resilient.suite)
    for job in resilient.gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1000), wait_for_ready=True).jobs:
        if job.state not in FINISHED:
            resilient.gateway.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id))
    if crashed:
        pytest.fail(
            f"died during the test, not killed by it: {crashed} (-11: segmentation fault); "
            f"see {resilient.suite.logs_dir}"
        )


@dataclass(frozen=True)
class Undisturbed:
    job_id: str
    text: str
    processing_s: float
    align_calls: int


@pytest.fixture(scope="module")
def undisturbed(resilient: RunningSuite, recording: str) -> Undisturbed:
    """The recording transcribed with nothing going wrong."""
    job = finished(resilient, create(resilient))
    assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
    return Undisturbed(
        job.job_id,
        text_of(resilient, job.job_id),
        duration_to_seconds(job.processing_duration),
        len(rpc_lines(resilient.suite, "align", "AlignWords", job.job_id)),
    )


# Helpers


def create(suite: RunningSuite) -> str:
    request = gateway_pb2.CreateJobRequest(path=MEDIA_NAME, config=JOB_CONFIG)
    return suite.gateway.CreateJob(request, wait_for_ready=True, timeout=30).job_id


def get_job(suite: RunningSuite, job_id: str) -> gateway_pb2.Job:
    return suite.gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job_id), wait_for_ready=True, timeout=30)


def finished(suite: RunningSuite, job_id: str, timeout_s: float = 180.0) -> gateway_pb2.Job:
    deadline = time.monotonic() + timeout_s
    while (job := get_job(suite, job_id)).state not in FINISHED:
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} still {gateway_pb2.JobState.Name(job.state)} after {timeout_s} s")
        time.sleep(0.1)
    return job


def text_of(suite: RunningSuite, job_id: str) -> str:
    request = gateway_pb2.GetResultRequest(job_id=job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
    return suite.gateway.GetResult(request, wait_for_ready=True, timeout=30).content


def events_until(
    suite: RunningSuite,
    job_id: str,
    done: Callable[[gateway_pb2.JobEvent], bool],
    after_sequence: int = 0,
    timeout_s: float = 120.0,
) -> list[gateway_pb2.JobEvent]:
    """A job's events after `after_sequence` up to the first for which
    `done` is true; the watch is then cancelled."""
    request = gateway_pb2.WatchJobRequest(job_id=job_id, after_sequence=after_sequence)
    call = suite.gateway.WatchJob(request, timeout=timeout_s, wait_for_ready=True)
    events = []
    try:
        for event in call:
            events.append(event)
            if done(event):
                return events
    finally:
        call.cancel()
    raise AssertionError(f"the events of job {job_id} ended before the awaited one: {events[-3:]}")


def mid_asr(event: gateway_pb2.JobEvent) -> bool:
    progress = event.stage_progress
    return (
        event.HasField("stage_progress")
        and progress.stage == gateway_pb2.STAGE_TRANSCRIBE
        and progress.fraction > MID_ASR_FRACTION
    )


def all_events(suite: RunningSuite, job_id: str) -> list[gateway_pb2.JobEvent]:
    """Every event of a finished job (replayed)."""
    request = gateway_pb2.WatchJobRequest(job_id=job_id)
    return list(suite.gateway.WatchJob(request, timeout=30, wait_for_ready=True))


def chunk_count(suite: RunningSuite, job_id: str) -> int:
    totals = [
        event.stage_progress.total_count
        for event in all_events(suite, job_id)
        if event.HasField("stage_progress") and event.stage_progress.stage == gateway_pb2.STAGE_TRANSCRIBE
    ]
    return totals[-1]


def rpc_lines(suite: Suite, service: str, method: str, job_id: str) -> list[dict[str, object]]:
    """The canonical lines of a job's calls of `method`, over every replica of `service`."""
    return [
        record
        for name in suite.instances(service)
        for record in suite.log_records(name)
        if record.get("event") == "rpc" and record.get("method") == method and record.get("job_id") == job_id
    ]


def wait_for(condition: Callable[[], bool], timeout_s: float, what: str) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout_s} s: {what}")
        time.sleep(0.05)


def assert_each_chunk_asked_for_once(suite: RunningSuite, job_id: str, lost: set[int]) -> list[AsrRequest]:
    """Every chunk of the job was asked of the ASR, once, but chunks in
    `lost` (whose answers a failure lost): those once more than the calls
    for them that failed (a call retried while a service was down fails
    each time until it is back)."""
    requests = asr_requests(suite.suite, job_id)
    counts = requested_chunks(requests)
    assert sorted(counts) == list(range(chunk_count(suite, job_id)))
    again = {index for index, count in counts.items() if count > 1}
    assert again <= lost, (again, lost, requests)
    failed = requested_chunks(request for request in requests if request.code not in (None, "OK"))
    assert max(count - failed.get(index, 0) for index, count in counts.items()) <= 2, requests
    return requests


def stored_transcripts(suite: RunningSuite, job_id: str) -> set[int]:
    """Chunks whose transcripts the (stopped) gateway has stored for a job."""
    store = JobStore(suite.store)
    try:
        return set(store.checkpoint(job_id).transcripts)
    finally:
        store.close()


# Tests


def test_gateway_killed_mid_transcription_resumes_from_its_checkpoint(
    suite: RunningSuite, undisturbed: Undisturbed
) -> None:
    job_id = create(suite)
    seen = events_until(suite, job_id, mid_asr)
    done_at_kill = seen[-1].stage_progress.done_count
    suite.suite.kill("gateway")
    stored = stored_transcripts(suite, job_id)
    restarted_at = datetime.now().astimezone()
    suite.suite.restart("gateway")

    job = finished(suite, job_id)
    assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
    assert text_of(suite, job_id) == undisturbed.text
    (resumed,) = [event.resumed for event in all_events(suite, job_id) if event.HasField("resumed")]
    assert resumed.audio_reused and resumed.detection_reused, resumed
    assert resumed.transcribed_chunk_count == len(stored) >= done_at_kill
    # Nothing stored was done again: one detection, each transcript asked for
    # once (but the calls the kill cut off), each alignment done once (but
    # the one whose answer the kill may have lost).
    assert len(rpc_lines(suite.suite, "vad", "DetectSpeech", job_id)) == 1
    assert len(rpc_lines(suite.suite, "audio", "DecodeFile", job_id)) == 1
    # Lost: asked for before the kill, answer not stored (the calls in flight).
    requests = asr_requests(suite.suite, job_id)
    lost = set(requested_chunks(request for request in requests if request.start_time < restarted_at)) - stored
    assert len(lost) <= IN_FLIGHT_CHUNKS, (lost, stored)
    assert_each_chunk_asked_for_once(suite, job_id, lost)
    align_calls = rpc_lines(suite.suite, "align", "AlignWords", job_id)
    assert len([call for call in align_calls if call["code"] == "OK"]) <= undisturbed.align_calls + 1


def test_asr_killed_mid_job_is_waited_for_until_it_is_back(suite: RunningSuite, undisturbed: Undisturbed) -> None:
    job_id = create(suite)
    seen = events_until(suite, job_id, mid_asr)
    suite.suite.kill(*suite.suite.instances("asr"))
    waiting = events_until(suite, job_id, lambda event: bool(event.waiting_reason), seen[-1].sequence)
    assert "asr" in waiting[-1].waiting_reason
    assert "asr" in get_job(suite, job_id).waiting_reason
    time.sleep(1.0)  # down for a while: the job keeps waiting, it does not fail
    assert get_job(suite, job_id).state == gateway_pb2.JOB_STATE_RUNNING
    for replica in suite.suite.instances("asr"):
        suite.suite.restart(replica)

    job = finished(suite, job_id)
    assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
    assert not job.waiting_reason
    assert job.retries, "the failed calls are recorded on the job"
    assert {retry.stage for retry in job.retries} == {gateway_pb2.STAGE_TRANSCRIBE}
    assert {retry.code for retry in job.retries} == {"UNAVAILABLE"}
    assert text_of(suite, job_id) == undisturbed.text
    requests = asr_requests(suite.suite, job_id)
    assert len(cut_off_chunks(requests)) <= IN_FLIGHT_CHUNKS, requests
    assert_each_chunk_asked_for_once(suite, job_id, cut_off_chunks(requests))


def test_losing_one_of_two_asr_replicas_costs_no_waiting(suite: RunningSuite, undisturbed: Undisturbed) -> None:
    job_id = create(suite)
    events_until(suite, job_id, mid_asr)
    # The replica with the job's call in flight, if one has it.
    in_flight = [request.replica for request in asr_requests(suite.suite, job_id) if request.code is None]
    victim = in_flight[-1] if in_flight else "asr-2"
    survivor = next(name for name in suite.suite.instances("asr") if name != victim)
    killed_at = datetime.now().astimezone()
    suite.suite.kill(victim)

    job = finished(suite, job_id)
    assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
    assert victim in suite.suite.down, "the killed replica was not started again"
    assert text_of(suite, job_id) == undisturbed.text
    requests = asr_requests(suite.suite, job_id)
    assert len(cut_off_chunks(requests)) <= IN_FLIGHT_CHUNKS, requests
    assert_each_chunk_asked_for_once(suite, job_id, cut_off_chunks(requests))
    assert any(request.replica == survivor for request in requests if request.start_time > killed_at)
    # The survivor took over at once: no waiting for the lost one.
    processing_s = duration_to_seconds(job.processing_duration)
    assert processing_s <= undisturbed.processing_s * 1.3 + 5.0, (processing_s, undisturbed.processing_s)
    # Each call the lost replica had in flight waits once, the first backoff,
    # and goes to the survivor; none waits a second time for the lost one.
    cut_off_calls = [request for request in requests if request.code != "OK"]
    waited = [event for event in all_events(suite, job_id) if event.waiting_reason]
    assert len(waited) <= max(1, len(cut_off_calls)), (waited, cut_off_calls)


def test_audio_service_killed_mid_job_decodes_again(suite: RunningSuite, undisturbed: Undisturbed) -> None:
    before = our_segments()
    job_id = create(suite)
    events_until(suite, job_id, mid_asr)
    suite.suite.kill("audio")
    time.sleep(1.0)
    suite.suite.restart("audio")

    job = finished(suite, job_id)
    assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
    assert text_of(suite, job_id) == undisturbed.text
    # The log holds the killed process's lines too: the first decode, then the second.
    decodes = rpc_lines(suite.suite, "audio", "DecodeFile", job_id)
    assert [call["code"] for call in decodes] == ["OK", "OK"], decodes
    assert job.retries, "the calls that found the audio gone are recorded"
    durations = [event.audio_duration for event in all_events(suite, job_id) if event.HasField("audio_duration")]
    assert len(durations) == 1, "the audio duration is announced once"
    requests = asr_requests(suite.suite, job_id)
    assert_each_chunk_asked_for_once(suite, job_id, cut_off_chunks(requests))
    # The killed service's segment went with it; the new one is released with the job.
    wait_for(lambda: not our_segments() - before, 5.0, f"no shared memory left: {our_segments() - before}")


def test_watcher_reconnecting_after_the_last_sequence_misses_nothing(suite: RunningSuite) -> None:
    job_id = create(suite)
    first = events_until(suite, job_id, lambda event: event.sequence >= 8)
    time.sleep(0.5)  # events go on while nobody watches
    second = events_until(suite, job_id, mid_asr, after_sequence=first[-1].sequence)
    request = gateway_pb2.WatchJobRequest(job_id=job_id, after_sequence=second[-1].sequence)
    third = list(suite.gateway.WatchJob(request, timeout=120))

    sequences = [event.sequence for event in first + second + third]
    assert sequences == list(range(1, sequences[-1] + 1))
    assert third[-1].state == gateway_pb2.JOB_STATE_SUCCEEDED
    assert [event.sequence for event in all_events(suite, job_id)] == sequences


def test_cancel_mid_transcription_stops_the_asr_and_frees_the_audio(suite: RunningSuite) -> None:
    before = our_segments()
    job_id = create(suite)
    events_until(suite, job_id, mid_asr)
    # Cancel as soon as the ASR starts another call for the job (a call lasts about a second).
    earlier = {request.request_id for request in asr_requests(suite.suite, job_id)}
    wait_for(
        lambda: any(
            request.code is None and request.request_id not in earlier for request in asr_requests(suite.suite, job_id)
        ),
        30,
        "a new Transcribe call of the job in flight",
    )
    cancelled = suite.gateway.CancelJob(gateway_pb2.CancelJobRequest(job_id=job_id), timeout=30)
    returned_at = time.monotonic()
    cancelled_at = datetime.now().astimezone()
    assert cancelled.state == gateway_pb2.JOB_STATE_CANCELLED
    wait_for(lambda: get_job(suite, job_id).state == gateway_pb2.JOB_STATE_CANCELLED, 2.0, "job CANCELLED")
    assert time.monotonic() - returned_at < 2.0

    # The ASR stops the call and is asked for nothing more.
    wait_for(
        lambda: all(request.code is not None for request in asr_requests(suite.suite, job_id)),
        10,
        "every Transcribe call of the job ended",
    )
    time.sleep(1.0)
    requests = asr_requests(suite.suite, job_id)
    assert requests[-1].code == "CANCELLED", requests[-1]
    assert all(request.start_time < cancelled_at for request in requests)
    assert all(request.code in ("OK", "CANCELLED") for request in requests)
    wait_for(lambda: not our_segments() - before, 5.0, f"no new shared memory left: {our_segments() - before}")
    events = all_events(suite, job_id)
    assert events[-1].state == gateway_pb2.JOB_STATE_CANCELLED


def corrupt_after_kill(suite: RunningSuite, statement: str, job_id: str) -> None:
    """Runs an UPDATE on the stored records of a job while the gateway is down."""
    db = open_database(suite.store)
    try:
        db.begin()
        db.execute(schema_sql(statement, db.dialect), (job_id,))
        db.commit()
    finally:
        db.close()


def test_corrupt_stored_records_fail_their_job_only(suite: RunningSuite, undisturbed: Undisturbed) -> None:
    corrupt_transcripts, healthy = create(suite), create(suite)
    corrupt_config = create(suite)  # queued behind the two running ones
    for job_id in (corrupt_transcripts, healthy):
        events_until(suite, job_id, lambda event: event.HasField("segment"))
    assert get_job(suite, corrupt_config).state == gateway_pb2.JOB_STATE_QUEUED
    suite.suite.kill("gateway")
    corrupt_after_kill(suite, CORRUPT_TRANSCRIPTS, corrupt_transcripts)
    corrupt_after_kill(suite, CORRUPT_CONFIG, corrupt_config)
    suite.suite.restart("gateway")

    for job_id in (corrupt_transcripts, corrupt_config):
        job = finished(suite, job_id)
        assert job.state == gateway_pb2.JOB_STATE_FAILED
        assert job.error.code == "DATA_LOSS"
        assert "cannot be read" in job.error.message, job.error.message
    job = finished(suite, healthy)
    assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
    assert text_of(suite, healthy) == undisturbed.text


def test_job_failed_on_recovery_gives_its_audio_back(suite: RunningSuite) -> None:
    before = our_segments()
    job_id = create(suite)
    events_until(suite, job_id, lambda event: event.HasField("segment"))
    suite.suite.kill("gateway")
    corrupt_after_kill(suite, CORRUPT_TRANSCRIPTS, job_id)
    suite.suite.restart("gateway")
    assert finished(suite, job_id).error.code == "DATA_LOSS"
    wait_for(lambda: not our_segments() - before, 5.0, f"the audio is released: {our_segments() - before} left")

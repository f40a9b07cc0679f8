"""Two gateways on one real PostgreSQL store, both running jobs: each job is
leased to one of them; any gateway answers for any job (its events, its
result, its cancellation); kill -9 one mid-run and the other takes its jobs
over once their leases lapse and finishes them from their checkpoints."""

from __future__ import annotations

import contextlib
import re
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import grpc
import psycopg
import pytest

from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.integration.suite_fixtures import RunningSuite, start_suite
from tests.postgres import fresh_database
from tests.speech import build_long_recording, clear_prompts, write_wav
from tests.wer import word_error_rate
from tools.suite import Suite

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
JOBS = 20
LEASE_S = 3.0


def runners(log: Path) -> set[str]:
    """The jobs a gateway's log says it ran."""
    return set(re.findall(r"job (\w+) runs on this gateway", log.read_text(errors="replace")))


@pytest.fixture(scope="module")
def cluster(postgres: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSuite]:
    """The suite with its gateway on a PostgreSQL store."""
    root = tmp_path_factory.mktemp("two-gateways")
    env = {
        "SUBTITLER_GATEWAY_STORE": fresh_database(postgres),
        "SUBTITLER_GATEWAY_MAX_CONCURRENT_JOBS": "2",
        "SUBTITLER_GATEWAY_LEASE_S": str(LEASE_S),
        "SUBTITLER_GATEWAY_POLL_S": "0.2",
        "SUBTITLER_GATEWAY_INITIAL_BACKOFF_S": "0.2",
        "SUBTITLER_GATEWAY_MAX_BACKOFF_S": "1",
    }
    yield from start_suite(root, env)


def text_of(gateway: gateway_pb2_grpc.GatewayServiceStub, job_id: str) -> str:
    list(gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=600))
    request = gateway_pb2.GetResultRequest(job_id=job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
    return gateway.GetResult(request).content


def test_a_job_goes_on_when_the_database_drops_the_gateways_connection(cluster: RunningSuite) -> None:
    write_wav(cluster.media_dir / "dropped.wav", build_long_recording(min_duration_s=40.0, gap_s=0.8).samples)
    config = gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(language_code="en"))
    job_id = cluster.gateway.CreateJob(gateway_pb2.CreateJobRequest(path="dropped.wav", config=config)).job_id
    for event in cluster.gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=300):
        if event.HasField("segment"):
            break
    # The server ends the gateway's session (a restart or a failover would).
    with psycopg.connect(cluster.store, autocommit=True) as admin:
        admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
            " WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
    events = list(cluster.gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=300))
    assert events[-1].state == gateway_pb2.JOB_STATE_SUCCEEDED, events[-1]
    again = cluster.gateway.CreateJob(gateway_pb2.CreateJobRequest(path="dropped.wav", config=config)).job_id
    assert text_of(cluster.gateway, job_id) == text_of(cluster.gateway, again)


def write_talks(media_dir: Path) -> list[str]:
    """talk-0.wav ... talk-19.wav (8 s or more each) and long.wav (90 s) in
    `media_dir`; the talks' reference texts."""
    prompts = clear_prompts()
    references = []
    for number in range(JOBS):
        recording = build_long_recording(min_duration_s=8.0, gap_s=0.8, prompts=prompts[number * 3 :])
        write_wav(media_dir / f"talk-{number}.wav", recording.samples)
        references.append(recording.reference_text)
    long_talk = build_long_recording(min_duration_s=90.0, gap_s=0.8, prompts=prompts)
    write_wav(media_dir / "long.wav", long_talk.samples)
    return references


@contextlib.contextmanager
def second_gateway(suite: Suite, log: Path) -> Iterator[str]:
    """A second gateway process for the block, logging to `log`; its address.
    It must stop cleanly (exit 0) when terminated at the end."""
    # The second gateway: the same store, data directory (the kept uploads) and stages.
    port_file = suite.run_dir / "second.port"
    second_env = {
        **suite.environment("gateway"),
        "SUBTITLER_GATEWAY_PORT": "0",
        "SUBTITLER_GATEWAY_PORT_FILE": str(port_file),
        "SUBTITLER_GATEWAY_METRICS_PORT_FILE": str(suite.run_dir / "second.metrics-port"),
    }
    with log.open("wb") as output:
        second = subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=ROOT, env=second_env, stdout=output, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert second.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the second gateway did not start"
            time.sleep(0.1)
        yield f"127.0.0.1:{port_file.read_text().strip()}"
    finally:
        second.terminate()
        assert second.wait(timeout=60) == 0, log.read_text()[-3000:]


def wait_for(condition: Callable[[], bool], timeout_s: float, failure: str) -> None:
    """Polls `condition` every 0.1 s; fails with `failure` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, failure
        time.sleep(0.1)


def create_talk_jobs(
    gateways: list[gateway_pb2_grpc.GatewayServiceStub],
    config: gateway_pb2.JobConfig,
    first_log: Path,
    second_log: Path,
) -> list[str]:
    """A job for each talk, created on each gateway in turn; returns their ids
    once both gateways (by their logs) run some of them."""
    job_ids = [
        gateways[number % 2].CreateJob(gateway_pb2.CreateJobRequest(path=f"talk-{number}.wav", config=config)).job_id
        for number in range(JOBS)
    ]
    wait_for(
        lambda: bool(set(job_ids) & runners(first_log) and set(job_ids) & runners(second_log)),
        120,
        "the gateways did not both take jobs",
    )
    return job_ids


def test_two_gateways_share_the_jobs_and_one_takes_over_when_the_other_is_killed(cluster: RunningSuite) -> None:
    running = cluster
    suite = running.suite
    references = write_talks(running.media_dir)
    first_log, second_log = suite.logs_dir / "gateway.log", suite.logs_dir / "second-gateway.log"
    with second_gateway(suite, second_log) as address, grpc.insecure_channel(address) as channel:
        other = gateway_pb2_grpc.GatewayServiceStub(channel)
        gateways = [running.gateway, other]
        config = gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(language_code="en"))

        # A job runs on one gateway and is cancelled through the other.
        long_id = running.gateway.CreateJob(gateway_pb2.CreateJobRequest(path="long.wav", config=config)).job_id
        wait_for(lambda: long_id in runners(first_log) | runners(second_log), 60, "no gateway took the job")
        runner = 0 if long_id in runners(first_log) else 1
        cancelled = gateways[1 - runner].CancelJob(gateway_pb2.CancelJobRequest(job_id=long_id))
        assert cancelled.state == gateway_pb2.JOB_STATE_CANCELLED, cancelled
        states = [
            event.state
            for event in gateways[runner].WatchJob(gateway_pb2.WatchJobRequest(job_id=long_id), timeout=60)
            if event.state_changed
        ]
        assert states[-1] == gateway_pb2.JOB_STATE_CANCELLED

        # 20 jobs, created on both; kill -9 the first gateway once both run jobs.
        job_ids = create_talk_jobs(gateways, config, first_log, second_log)
        states = [other.GetJob(gateway_pb2.GetJobRequest(job_id=job_id)).state for job_id in job_ids]
        suite.kill("gateway")
        assert states.count(gateway_pb2.JOB_STATE_SUCCEEDED) <= JOBS - 4, "killed mid-run"
        orphans = set(job_ids) & runners(first_log)
        texts = {}
        for job_id in job_ids:
            events = list(other.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=600))
            assert events[-1].state == gateway_pb2.JOB_STATE_SUCCEEDED, events[-1]
            assert [event.sequence for event in events] == list(range(1, len(events) + 1)), "each event once"
            texts[job_id] = other.GetResult(
                gateway_pb2.GetResultRequest(job_id=job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
            ).content
        heard = " ".join(texts[job_id] for job_id in job_ids)
        assert word_error_rate(" ".join(references), heard) <= 0.15, heard
        # The first gateway's unfinished jobs were taken over by the second, with the undisturbed text.
        taken_over = orphans & runners(second_log)
        assert taken_over, "no job of the killed gateway was taken over"
        for job_id in taken_over:
            number = job_ids.index(job_id)
            again = other.CreateJob(gateway_pb2.CreateJobRequest(path=f"talk-{number}.wav", config=config))
            undisturbed = text_of(other, again.job_id)
            assert texts[job_id] == undisturbed, (job_id, texts[job_id], undisturbed)
        listed = {job.job_id for job in other.ListJobs(gateway_pb2.ListJobsRequest(page_size=100)).jobs}
        assert set(job_ids) <= listed

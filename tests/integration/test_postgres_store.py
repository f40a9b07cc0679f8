"""Two gateways on one real PostgreSQL store: the first runs the jobs, the
second stands by; kill -9 the first mid-run and the second takes the store
over and finishes every job from its checkpoint, with the right text."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.integration.suite_fixtures import start_suite
from tests.postgres import fresh_database, postgres_server
from tests.speech import build_long_recording, clear_prompts, write_wav
from tests.wer import word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
JOBS = 6


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    with postgres_server() as url:
        yield url


def test_a_standby_gateway_takes_over_a_killed_gateways_jobs(
    postgres: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    root = tmp_path_factory.mktemp("two-gateways")
    env = {
        "SUBTITLER_GATEWAY_STORE": fresh_database(postgres),
        "SUBTITLER_GATEWAY_MAX_CONCURRENT_JOBS": "2",
        "SUBTITLER_GATEWAY_STANDBY_POLL_S": "0.2",
        "SUBTITLER_GATEWAY_INITIAL_BACKOFF_S": "0.2",
        "SUBTITLER_GATEWAY_MAX_BACKOFF_S": "1",
    }
    prompts = clear_prompts()
    for running in start_suite(root, env):
        suite = running.suite
        references = []
        for number in range(JOBS):
            recording = build_long_recording(min_duration_s=15.0, gap_s=0.8, prompts=prompts[number * 5 :])
            write_wav(running.media_dir / f"talk-{number}.wav", recording.samples)
            references.append(recording.reference_text)
        # The standby: a second gateway on the same store and data directory (the kept uploads).
        port_file = suite.run_dir / "standby.port"
        standby_env = {
            **suite.environment("gateway"),
            "SUBTITLER_GATEWAY_PORT": "0",
            "SUBTITLER_GATEWAY_PORT_FILE": str(port_file),
            "SUBTITLER_GATEWAY_METRICS_PORT_FILE": str(suite.run_dir / "standby.metrics-port"),
        }
        log = root / "standby.log"
        with log.open("wb") as output:
            standby = subprocess.Popen(
                [sys.executable, "-m", "gateway"], cwd=ROOT, env=standby_env, stdout=output, stderr=subprocess.STDOUT
            )
        try:
            deadline = time.monotonic() + 30
            while "standing by" not in log.read_text(errors="replace"):
                assert standby.poll() is None, log.read_text()
                assert time.monotonic() < deadline, "the second gateway did not stand by"
                time.sleep(0.1)
            assert not port_file.exists(), "a standby serves nothing"
            config = gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(language_code="en"))
            job_ids = [
                running.gateway.CreateJob(gateway_pb2.CreateJobRequest(path=f"talk-{number}.wav", config=config)).job_id
                for number in range(JOBS)
            ]
            # Kill the first gateway once the first job has stored a transcript.
            request = gateway_pb2.WatchJobRequest(job_id=job_ids[0])
            for event in running.gateway.WatchJob(request, timeout=300):
                progress = event.stage_progress
                if (
                    event.HasField("stage_progress")
                    and progress.stage == gateway_pb2.STAGE_TRANSCRIBE
                    and progress.done_count
                ):
                    break
            states = [running.gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job_id)).state for job_id in job_ids]
            suite.kill("gateway")
            assert states.count(gateway_pb2.JOB_STATE_SUCCEEDED) <= JOBS - 3, "killed mid-run"
            deadline = time.monotonic() + 60
            while not port_file.exists():
                assert standby.poll() is None, log.read_text()[-3000:]
                assert time.monotonic() < deadline, "the standby did not take over"
                time.sleep(0.1)
            with grpc.insecure_channel(f"127.0.0.1:{port_file.read_text().strip()}") as channel:
                gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
                for job_id, reference in zip(job_ids, references, strict=True):
                    events = list(
                        gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=600, wait_for_ready=True)
                    )
                    assert events[-1].state == gateway_pb2.JOB_STATE_SUCCEEDED, events[-1]
                    assert [event.sequence for event in events] == list(range(1, len(events) + 1)), "each event once"
                    result = gateway.GetResult(
                        gateway_pb2.GetResultRequest(job_id=job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
                    )
                    assert word_error_rate(reference, result.content) <= 0.2, (reference, result.content)
                listed = {job.job_id for job in gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=100)).jobs}
                assert set(job_ids) <= listed
        finally:
            standby.terminate()
            assert standby.wait(timeout=60) == 0, log.read_text()[-3000:]
        break

"""One job over two ASR replicas: the gateway keeps calls in flight on both,
and the transcript is the one a single replica gives. Also the status RPC of
every service, through the gateway and `subtitler system`."""

from __future__ import annotations

import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from google.protobuf.duration_pb2 import Duration

from subtitler.gateway.v1 import gateway_pb2
from subtitler.status.v1 import status_pb2, status_pb2_grpc
from subtitler.vad.v1 import vad_pb2
from tests.integration.suite_fixtures import RunningSuite, start_suite
from tests.speech import build_long_recording, write_wav
from tools.asr_log import asr_requests, requested_chunks

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MEDIA_NAME = "minute.wav"
JOB_CONFIG = gateway_pb2.JobConfig(
    speech_detection=vad_pb2.VadOptions(max_chunk_duration=Duration(seconds=6)),
)


@pytest.fixture(scope="module")
def two_replicas(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSuite]:
    yield from start_suite(
        tmp_path_factory.mktemp("parallel"),
        {
            "SUBTITLER_ASR_NUM_WORKERS": "1",
            "SUBTITLER_ASR_CPU_THREADS": "1",
            "SUBTITLER_GATEWAY_ASR_BATCH_SIZE": "2",
        },
        replicas={"asr": 2},
    )


def transcribe(suite: RunningSuite) -> tuple[str, str]:
    job = suite.gateway.CreateJob(gateway_pb2.CreateJobRequest(path=MEDIA_NAME, config=JOB_CONFIG))
    finished = suite.wait_finished(job.job_id)
    assert finished.state == gateway_pb2.JOB_STATE_SUCCEEDED, finished.error
    text = suite.gateway.GetResult(
        gateway_pb2.GetResultRequest(job_id=job.job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
    ).content
    return job.job_id, text


def test_every_service_reports_its_status(two_replicas: RunningSuite) -> None:
    stub = status_pb2_grpc.StatusServiceStub(two_replicas.channel)
    reply = stub.GetStatus(status_pb2.GetStatusRequest(include_peers=True), timeout=30)
    assert reply.service_name == "gateway" and not reply.unreachable_peers
    assert sorted(peer.service_name for peer in reply.peers) == ["align", "asr", "audio", "diarize", "vad"]
    (asr,) = [peer for peer in reply.peers if peer.service_name == "asr"]
    assert asr.capacity == 1 and asr.cpu_affinity_message
    settings = {setting.name: setting for setting in asr.settings}
    assert settings["SUBTITLER_ASR_NUM_WORKERS"].value == "1"
    assert settings["SUBTITLER_ASR_NUM_WORKERS"].source == "environment"
    assert settings["SUBTITLER_ASR_BATCH_SIZE"].source.startswith("auto: ")


def test_the_cli_prints_what_every_service_chose(two_replicas: RunningSuite) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "gateway.cli", "--gateway", two_replicas.suite.target("gateway"), "system"],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert result.returncode == 0, result.stderr
    assert "SUBTITLER_ASR_NUM_WORKERS=1  [environment]" in result.stdout
    for service in ("gateway", "audio", "vad", "asr", "align", "diarize"):
        assert f"\n{service} (version" in "\n" + result.stdout


def test_one_job_uses_both_replicas_and_reads_as_with_one(two_replicas: RunningSuite) -> None:
    write_wav(two_replicas.media_dir / MEDIA_NAME, build_long_recording(min_duration_s=60.0).samples)
    both_job, both_text = transcribe(two_replicas)
    calls = asr_requests(two_replicas.suite, both_job)
    per_replica = Counter(call.replica for call in calls)
    assert set(per_replica) == {"asr", "asr-2"}, per_replica
    assert all(count == 1 for count in requested_chunks(calls).values())  # no chunk asked for twice
    # A file job's calls let the ASR time words late; only the one with the last chunk says nothing follows.
    assert {call.scheduling for call in calls} == {"SCHEDULING_THROUGHPUT"}
    last_chunk = max(index for call in calls for index in call.chunks)
    assert [call.last_of_job for call in calls] == [last_chunk in call.chunks for call in calls]

    two_replicas.suite.kill("asr-2", sig=signal.SIGTERM)
    try:
        one_job, one_text = transcribe(two_replicas)
        assert {call.replica for call in asr_requests(two_replicas.suite, one_job)} == {"asr"}
        assert one_text == both_text
    finally:
        two_replicas.suite.restart("asr-2")

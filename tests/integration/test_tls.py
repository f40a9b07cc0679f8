"""The whole suite over TLS: every listener and channel encrypted, mutual TLS
between the gateway and the stage services, bearer tokens on the gateway."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from gateway.cli.connection import upload_requests
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.integration.suite_fixtures import RunningSuite, start_suite
from tests.speech import build_long_recording, write_wav
from tests.tls_certificates import Certificates, make_certificates
from tests.wer import word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

TOKEN = "tls-test-token-0123456789abcdef"
STAGES = ("AUDIO", "VAD", "ASR", "ALIGN", "DIARIZE")


@pytest.fixture(scope="module")
def certificates(tmp_path_factory: pytest.TempPathFactory) -> Certificates:
    return make_certificates(tmp_path_factory.mktemp("certificates"))


@pytest.fixture(scope="module")
def secure_suite(tmp_path_factory: pytest.TempPathFactory, certificates: Certificates) -> Iterator[RunningSuite]:
    root = tmp_path_factory.mktemp("tls")
    tokens = root / "tokens"
    tokens.write_text(f"tester:{TOKEN}\n")
    env = {
        "SUBTITLER_TLS_CA_FILE": str(certificates.ca),
        "SUBTITLER_TLS_CLIENT_CERT_FILE": str(certificates.client_cert),
        "SUBTITLER_TLS_CLIENT_KEY_FILE": str(certificates.client_key),
        "SUBTITLER_GATEWAY_TOKENS_FILE": str(tokens),
    }
    for service in (*STAGES, "GATEWAY"):
        env[f"SUBTITLER_{service}_TLS_CERT_FILE"] = str(certificates.server_cert)
        env[f"SUBTITLER_{service}_TLS_KEY_FILE"] = str(certificates.server_key)
    for service in STAGES:  # stage services take only callers with a client certificate
        env[f"SUBTITLER_{service}_TLS_CLIENT_CA_FILE"] = str(certificates.ca)
    yield from start_suite(root, env)


def channel_to(address: str, certificates: Certificates, *, client_certificate: bool) -> grpc.Channel:
    return grpc.secure_channel(
        address,
        grpc.ssl_channel_credentials(
            root_certificates=certificates.ca.read_bytes(),
            private_key=certificates.client_key.read_bytes() if client_certificate else None,
            certificate_chain=certificates.client_cert.read_bytes() if client_certificate else None,
        ),
    )


def test_a_job_runs_encrypted_end_to_end(secure_suite: RunningSuite, certificates: Certificates) -> None:
    recording = build_long_recording(min_duration_s=15.0)
    path = write_wav(secure_suite.media_dir / "secure.wav", recording.samples)
    config = gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(language_code="en"))
    metadata = (("authorization", f"Bearer {TOKEN}"),)
    with channel_to(secure_suite.suite.target("gateway"), certificates, client_certificate=False) as channel:
        gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
        job = gateway.UploadMedia(upload_requests(Path(path), config), metadata=metadata, timeout=120)
        for _ in gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), metadata=metadata, timeout=300):
            pass
        result = gateway.GetResult(
            gateway_pb2.GetResultRequest(job_id=job.job_id, format=gateway_pb2.RESULT_FORMAT_TEXT),
            metadata=metadata,
            timeout=30,
        )
    assert word_error_rate(recording.reference_text, result.content) <= 0.2, result.content


def test_plaintext_callers_get_nothing(secure_suite: RunningSuite) -> None:
    with (
        grpc.insecure_channel(secure_suite.suite.target("gateway")) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        gateway_pb2_grpc.GatewayServiceStub(channel).ListJobs(gateway_pb2.ListJobsRequest(), timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


@pytest.mark.parametrize("service", ["audio", "vad", "asr", "align", "diarize"])
def test_stage_services_refuse_callers_without_a_client_certificate(
    secure_suite: RunningSuite, certificates: Certificates, service: str
) -> None:
    request = health_pb2.HealthCheckRequest()
    address = secure_suite.suite.target(service)
    with (
        channel_to(address, certificates, client_certificate=False) as channel,
        pytest.raises(grpc.RpcError) as refused,
    ):
        health_pb2_grpc.HealthStub(channel).Check(request, timeout=5)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    with channel_to(address, certificates, client_certificate=True) as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(request, timeout=5).status
    assert status == health_pb2.HealthCheckResponse.SERVING

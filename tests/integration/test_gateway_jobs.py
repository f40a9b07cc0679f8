"""Jobs as a user expects them, against a real gateway process whose stage
services are down: idempotent creation, the bounded priority queue, waiting
for services, cancellation, retention and the free-disk check."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from gateway.jobs.admission import PRIOR_JOB_AUDIO_S
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from subtitler.status.v1 import status_pb2, status_pb2_grpc
from tests.postgres import STORES, gateway_store_env

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
# Nothing listens here: every stage service is down.
DEAD_TARGET = "127.0.0.1:9"


class Gateway:
    """A gateway process on a free port."""

    def __init__(self, root: Path, extra_env: dict[str, str] | None = None, **settings: str) -> None:
        self.data_dir = root / "data"
        port_file = root / "gateway.port"
        env = {
            **os.environ,
            "SUBTITLER_GATEWAY_PORT": "0",
            "SUBTITLER_GATEWAY_PORT_FILE": str(port_file),
            "SUBTITLER_GATEWAY_DATA_DIR": str(self.data_dir),
            "SUBTITLER_GATEWAY_MAX_CONCURRENT_JOBS": "1",
            "SUBTITLER_GATEWAY_INITIAL_BACKOFF_S": "0.2",
            "SUBTITLER_GATEWAY_MAX_BACKOFF_S": "1",
            "SUBTITLER_GATEWAY_GRACE_PERIOD_S": "1",
            **{f"SUBTITLER_{peer}_TARGET": DEAD_TARGET for peer in ("AUDIO", "VAD", "ASR", "ALIGN")},
            **{f"SUBTITLER_GATEWAY_{name.upper()}": value for name, value in settings.items()},
            **(extra_env or {}),
        }
        self.log = root / "gateway.log"
        with open(self.log, "wb") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "gateway"], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 30
        while not port_file.exists():
            assert self.process.poll() is None, self.log.read_text()
            assert time.monotonic() < deadline, "the gateway did not start"
            time.sleep(0.05)
        self.address = f"127.0.0.1:{port_file.read_text()}"
        self.channel = grpc.insecure_channel(self.address)
        health = health_pb2_grpc.HealthStub(self.channel)
        while health.Check(health_pb2.HealthCheckRequest(), timeout=5).status != health_pb2.HealthCheckResponse.SERVING:
            time.sleep(0.05)
        self.stub = gateway_pb2_grpc.GatewayServiceStub(self.channel)

    def create(self, path: str = "talk.wav", **request: object) -> gateway_pb2.Job:
        return self.stub.CreateJob(gateway_pb2.CreateJobRequest(path=path, **request))  # type: ignore[arg-type]

    def get(self, job_id: str) -> gateway_pb2.Job:
        return self.stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id))

    def stop(self) -> int:
        self.channel.close()
        self.process.terminate()
        return self.process.wait(timeout=30)


@pytest.fixture(params=STORES)
def gateway(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Gateway]:
    """A gateway on each job store in turn."""
    running = Gateway(tmp_path, gateway_store_env(request.param, request), max_queued_jobs="3")
    yield running
    assert running.stop() == 0


def wait_until(condition: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.05)


def test_the_same_request_id_creates_one_job(gateway: Gateway) -> None:
    first = gateway.create(request_id="order-42")
    again = gateway.create(request_id="order-42")
    other = gateway.create(request_id="order-43")
    assert again.job_id == first.job_id and again.request_id == "order-42"
    assert other.job_id != first.job_id
    jobs = gateway.stub.ListJobs(gateway_pb2.ListJobsRequest()).jobs
    assert sorted(job.job_id for job in jobs) == sorted({first.job_id, other.job_id})


def test_a_request_id_with_a_control_character_is_refused_on_every_store(gateway: Gateway) -> None:
    """PostgreSQL's text takes no NUL: refused before the store sees it (it was INTERNAL)."""
    upload = [
        gateway_pb2.UploadMediaRequest(metadata=gateway_pb2.UploadMetadata(file_name="a.wav", request_id="key\x00")),
        gateway_pb2.UploadMediaRequest(chunk=b"RIFF"),
    ]
    for call in (
        lambda: gateway.create(request_id="order\x00-42"),
        lambda: gateway.create(request_id="order\n42"),
        lambda: gateway.stub.UploadMedia(iter(upload), timeout=30),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            call()
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        assert "request_id has a control character" in (refused.value.details() or "")
    assert not gateway.stub.ListJobs(gateway_pb2.ListJobsRequest()).jobs


def test_a_forged_page_token_is_refused_on_every_store(gateway: Gateway) -> None:
    for forged in ("1.0/job\x00id", "1.0/" + "f" * 200, "not a token"):
        token = base64.urlsafe_b64encode(forged.encode()).decode()
        with pytest.raises(grpc.RpcError) as refused:
            gateway.stub.ListJobs(gateway_pb2.ListJobsRequest(page_token=token))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
        assert refused.value.details() == "page_token is not one this service returned"


def test_a_job_waits_for_a_service_that_is_down_and_says_why(gateway: Gateway) -> None:
    job = gateway.create()
    wait_until(lambda: gateway.get(job.job_id).waiting_reason)
    running = gateway.get(job.job_id)
    assert running.state == gateway_pb2.JOB_STATE_RUNNING
    assert "audio service" in running.waiting_reason
    assert running.retries and all(retry.code == "UNAVAILABLE" for retry in running.retries)
    assert running.retries[0].stage == gateway_pb2.STAGE_DECODE
    events = gateway.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), timeout=2)
    seen = []
    with pytest.raises(grpc.RpcError):  # the job goes on: the stream outlives the deadline
        for event in events:
            seen.append(event)
    assert any(event.HasField("retry") for event in seen)
    assert any(event.waiting_reason for event in seen)


def test_the_queue_orders_by_priority_and_refuses_when_full(gateway: Gateway) -> None:
    running = gateway.create()  # takes the only slot (and waits for the audio service)
    low = gateway.create()
    normal = gateway.create()
    assert (gateway.get(low.job_id).queue_position, gateway.get(normal.job_id).queue_position) == (1, 2)
    urgent = gateway.create(priority=10)
    assert gateway.get(urgent.job_id).queue_position == 1
    assert gateway.get(low.job_id).queue_position == 2
    assert gateway.get(normal.job_id).queue_position == 3
    assert gateway.get(running.job_id).queue_position == 0
    with pytest.raises(grpc.RpcError) as full:
        gateway.create()
    assert full.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "queue is full" in full.value.details()
    assert dict(full.value.trailing_metadata())["retry-after-s"] == "30"
    # Watchers hear of queue positions.
    events = gateway.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=normal.job_id), timeout=1)
    positions = []
    with pytest.raises(grpc.RpcError):
        for event in events:
            if event.HasField("queue_position"):
                positions.append(event.queue_position)
    assert positions[-1] == 3
    # Cancelling a queued job frees its place; cancelling twice is harmless.
    cancelled = gateway.stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=urgent.job_id))
    assert cancelled.state == gateway_pb2.JOB_STATE_CANCELLED
    assert gateway.stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=urgent.job_id)).state == cancelled.state
    assert gateway.get(low.job_id).queue_position == 1
    # And cancelling the running one starts the next.
    assert gateway.stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=running.job_id)).state == (
        gateway_pb2.JOB_STATE_CANCELLED
    )
    wait_until(lambda: gateway.get(low.job_id).state == gateway_pb2.JOB_STATE_RUNNING)


def upload(name: str, data: bytes, **metadata: object) -> Iterator[gateway_pb2.UploadMediaRequest]:
    yield gateway_pb2.UploadMediaRequest(
        metadata=gateway_pb2.UploadMetadata(file_name=name, size_bytes=len(data), **metadata)  # type: ignore[arg-type]
    )
    yield gateway_pb2.UploadMediaRequest(chunk=data)


class MeasuredAsr(status_pb2_grpc.StatusServiceServicer):
    """An ASR that only says it serves and what it measured: one worker
    transcribing `audio_seconds_per_second` of a file's audio a second."""

    def __init__(self, audio_seconds_per_second: float) -> None:
        self.reply = status_pb2.GetStatusResponse(
            service_name="asr",
            capacity=1,
            preferred_batch_size=8,
            measured_capacity=status_pb2.MeasuredCapacity(
                audio_seconds_per_second=audio_seconds_per_second, live_decode_s=0.2, source="warm-up"
            ),
        )
        self.server = grpc.server(ThreadPoolExecutor(max_workers=2))
        status_pb2_grpc.add_StatusServiceServicer_to_server(self, self.server)
        serving = health.HealthServicer()
        serving.set(asr_pb2.DESCRIPTOR.services_by_name["AsrService"].full_name, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(serving, self.server)
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def GetStatus(
        self, request: status_pb2.GetStatusRequest, context: grpc.ServicerContext
    ) -> status_pb2.GetStatusResponse:
        return self.reply


def test_the_queue_takes_the_work_the_measured_asr_clears_within_the_wait_bound(tmp_path: Path) -> None:
    asr = MeasuredAsr(audio_seconds_per_second=1.0)
    # A job's audio is not known until decoded (the audio service is down):
    # each counts as PRIOR_JOB_AUDIO_S (300 s), 300 s of work at 1 s a second.
    gateway = Gateway(tmp_path, extra_env={"SUBTITLER_ASR_TARGET": f"127.0.0.1:{asr.port}"}, max_queue_wait_s="700")
    try:
        status = status_pb2_grpc.StatusServiceStub(gateway.channel)
        wait_until(
            lambda: status.GetStatus(status_pb2.GetStatusRequest()).measured_capacity.audio_seconds_per_second == 1.0
        )
        jobs = [gateway.create() for _ in range(3)]  # one runs; the third waits 600 s
        assert [job.state for job in jobs[1:]] == [gateway_pb2.JOB_STATE_QUEUED] * 2
        with pytest.raises(grpc.RpcError) as refused:
            gateway.create()  # 900 s: over the 700 s bound
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "would wait about 15 min" in refused.value.details(), refused.value.details()
        assert "SUBTITLER_GATEWAY_MAX_QUEUE_WAIT_S" in refused.value.details()
        # Room is expected once 200 s of the work ahead is done.
        assert dict(refused.value.trailing_metadata())["retry-after-s"] == "200"
        # An urgent job waits only for the running one.
        assert gateway.create(priority=10).state == gateway_pb2.JOB_STATE_QUEUED
        # The status says what a job submitted now would wait.
        wait_until(lambda: status.GetStatus(status_pb2.GetStatusRequest()).queue_wait_s == 4 * PRIOR_JOB_AUDIO_S)
    finally:
        assert gateway.stop() == 0
        asr.server.stop(None)


def test_uploads_are_refused_when_the_disk_is_nearly_full(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, min_free_disk_bytes=str(10**18))
    try:
        with pytest.raises(grpc.RpcError) as refused:
            gateway.stub.UploadMedia(upload("talk.wav", b"RIFF" * 100))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "disk space" in refused.value.details()
        assert not list((gateway.data_dir / "uploads").iterdir())
        # Server-side paths need no space and are still taken.
        assert gateway.create().state == gateway_pb2.JOB_STATE_QUEUED
    finally:
        assert gateway.stop() == 0


def test_finished_jobs_and_their_files_go_after_the_retention(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, retention_s="1", retention_sweep_interval_s="0.2")
    try:
        kept = gateway.create()
        uploaded = gateway.stub.UploadMedia(upload("talk.wav", b"RIFF" * 100, request_id="u1"))
        assert len(list((gateway.data_dir / "uploads").iterdir())) == 1
        # A repeated upload with the same request id stores nothing more.
        assert gateway.stub.UploadMedia(upload("talk.wav", b"RIFF" * 100, request_id="u1")).job_id == uploaded.job_id
        assert len(list((gateway.data_dir / "uploads").iterdir())) == 1
        gateway.stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=uploaded.job_id))
        assert not list((gateway.data_dir / "uploads").iterdir())

        def gone() -> bool:
            try:
                gateway.get(uploaded.job_id)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.NOT_FOUND
                return True
            return False

        wait_until(gone, timeout_s=10)
        # An unfinished job is never deleted.
        assert gateway.get(kept.job_id).state in (gateway_pb2.JOB_STATE_QUEUED, gateway_pb2.JOB_STATE_RUNNING)
    finally:
        assert gateway.stop() == 0


def test_bad_requests_are_refused(gateway: Gateway) -> None:
    for request, text in (
        ({"request_id": "x" * 129}, "request_id"),
        ({"priority": 101}, "priority"),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            gateway.create(**request)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert text in refused.value.details()
    with pytest.raises(grpc.RpcError) as negative:
        list(gateway.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=gateway.create().job_id, after_sequence=-1)))
    assert negative.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_open_watchers_never_starve_unary_calls(tmp_path: Path) -> None:
    gateway = Gateway(tmp_path, max_concurrent_rpcs="8", max_watchers="70")
    try:
        job = gateway.create()
        watches = [gateway.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id)) for _ in range(70)]
        for watch in watches:
            next(watch)  # each stream is open and has its first event
        # Far more watchers than MAX_CONCURRENT_RPCS: GetJob and CreateJob still answer.
        assert gateway.get(job.job_id).job_id == job.job_id
        gateway.create(path="other.wav")
        with pytest.raises(grpc.RpcError) as refused:
            next(gateway.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), timeout=10))
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "watch streams are open" in (refused.value.details() or "")
        for watch in watches:
            watch.cancel()
    finally:
        assert gateway.stop() == 0


def test_a_watch_past_the_last_event_ends_with_the_job(gateway: Gateway) -> None:
    job = gateway.create()
    watch = gateway.stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id, after_sequence=10**9), timeout=30)
    gateway.stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id))
    assert list(watch) == []  # the stream closed when the job ended, with nothing after the asked sequence


ALICE = "alice-0123456789abcdef0123456789"
BOB = "bob-0123456789abcdef0123456789ab"


def as_client(token: str) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),)


def test_with_tokens_a_client_sees_only_its_own_jobs(tmp_path: Path) -> None:
    tokens = tmp_path / "tokens"
    tokens.write_text(f"# clients\nalice:{ALICE}\nbob:{BOB}\n")
    gateway = Gateway(tmp_path, tokens_file=str(tokens))
    stub = gateway.stub
    try:
        for token in (None, "not-a-token-of-anyone-at-all"):
            metadata = as_client(token) if token else ()
            for call in (
                lambda metadata=metadata: stub.CreateJob(gateway_pb2.CreateJobRequest(path="a.wav"), metadata=metadata),
                lambda metadata=metadata: stub.ListJobs(gateway_pb2.ListJobsRequest(), metadata=metadata),
                lambda metadata=metadata: stub.GetJob(gateway_pb2.GetJobRequest(job_id="x"), metadata=metadata),
            ):
                with pytest.raises(grpc.RpcError) as refused:
                    call()
                assert refused.value.code() == grpc.StatusCode.UNAUTHENTICATED
        alices = stub.CreateJob(
            gateway_pb2.CreateJobRequest(path="a.wav", request_id="same"), metadata=as_client(ALICE)
        )
        # Every RPC of another client on it: as if it did not exist.
        for call in (
            lambda: stub.GetJob(gateway_pb2.GetJobRequest(job_id=alices.job_id), metadata=as_client(BOB)),
            lambda: list(stub.WatchJob(gateway_pb2.WatchJobRequest(job_id=alices.job_id), metadata=as_client(BOB))),
            lambda: stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=alices.job_id), metadata=as_client(BOB)),
            lambda: stub.GetResult(gateway_pb2.GetResultRequest(job_id=alices.job_id), metadata=as_client(BOB)),
        ):
            with pytest.raises(grpc.RpcError) as hidden:
                call()
            assert hidden.value.code() == grpc.StatusCode.NOT_FOUND
        assert not stub.ListJobs(gateway_pb2.ListJobsRequest(), metadata=as_client(BOB)).jobs
        # A request id is one client's own: Bob's "same" is a new job.
        bobs = stub.CreateJob(gateway_pb2.CreateJobRequest(path="b.wav", request_id="same"), metadata=as_client(BOB))
        assert bobs.job_id != alices.job_id
        assert [job.job_id for job in stub.ListJobs(gateway_pb2.ListJobsRequest(), metadata=as_client(ALICE)).jobs] == [
            alices.job_id
        ]
        assert stub.GetJob(gateway_pb2.GetJobRequest(job_id=alices.job_id), metadata=as_client(ALICE)).job_id
        listed = subprocess.run(
            [sys.executable, "-m", "gateway.cli", "--gateway", gateway.address, "--token", BOB, "jobs"],
            capture_output=True,
            text=True,
            timeout=60,
            cwd=ROOT,
        )
        assert listed.returncode == 0, listed.stderr
        assert bobs.job_id in listed.stdout and alices.job_id not in listed.stdout
    finally:
        assert gateway.stop() == 0


def test_text_that_is_not_utf8_is_invalid_argument(gateway: Gateway) -> None:
    # GetJobRequest with field 1 (job_id) holding two bytes that are not UTF-8.
    raw_get_job = gateway.channel.unary_unary(
        "/subtitler.gateway.v1.GatewayService/GetJob",
        request_serializer=lambda data: data,
        response_deserializer=gateway_pb2.Job.FromString,
    )
    with pytest.raises(grpc.RpcError) as refused:
        raw_get_job(b"\x0a\x02\xff\xfe", timeout=10)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "UTF-8" in (refused.value.details() or "")
    assert gateway.create().job_id  # the gateway goes on

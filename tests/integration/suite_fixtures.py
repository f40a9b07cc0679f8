"""The whole suite as real processes on free ports, for end-to-end tests."""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import grpc

from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tools.suite import Suite

SHM_DIR = Path("/dev/shm")
SEGMENT_PREFIX = "subtitler-"


def our_segments() -> set[str]:
    return {path.name for path in SHM_DIR.glob(f"{SEGMENT_PREFIX}*")}


@dataclass
class RunningSuite:
    suite: Suite
    media_dir: Path
    data_dir: Path
    channel: grpc.Channel
    gateway: gateway_pb2_grpc.GatewayServiceStub

    @property
    def store(self) -> str:
        """Where the gateway keeps its jobs: a PostgreSQL URL, or its SQLite file."""
        return self.suite.extra_env.get("SUBTITLER_GATEWAY_STORE") or str(self.data_dir / "jobs.sqlite3")

    def wait_finished(self, job_id: str, timeout_s: float = 300.0) -> gateway_pb2.Job:
        deadline = time.monotonic() + timeout_s
        while True:
            job = self.gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job_id))
            if job.state in (
                gateway_pb2.JOB_STATE_SUCCEEDED,
                gateway_pb2.JOB_STATE_FAILED,
                gateway_pb2.JOB_STATE_CANCELLED,
            ):
                return job
            if time.monotonic() > deadline:
                raise TimeoutError(f"job {job_id} still {gateway_pb2.JobState.Name(job.state)}")
            time.sleep(0.2)

    def restart_gateway(self) -> None:
        """Stops the gateway process (SIGTERM) and starts a new one on the same port."""
        self.suite.restart("gateway")


def start_suite(
    root: Path, extra_env: dict[str, str], replicas: Mapping[str, int] | None = None
) -> Iterator[RunningSuite]:
    """The suite started under `root` (media/, data/, logs/, run/), with
    `replicas` of stage services; stopped with SIGTERM afterwards, when every
    process still running must exit 0."""
    media_dir = root / "media"
    data_dir = root / "data"
    media_dir.mkdir(parents=True, exist_ok=True)
    env = {
        "SUBTITLER_AUDIO_MEDIA_ROOT": str(media_dir),
        "SUBTITLER_GATEWAY_DATA_DIR": str(data_dir),
        "SUBTITLER_LOG_LEVEL": "INFO",
        # A service that crashes (a segfault in a C extension) leaves its Python stack in its log.
        "PYTHONFAULTHANDLER": "1",
        **extra_env,
    }
    suite = Suite(
        logs_dir=root / "logs",
        run_dir=root / "run",
        ports={},
        extra_env=env,
        replicas=replicas or {},
    )
    try:
        suite.start(timeout_s=300)
    except BaseException:
        suite.stop()
        for log in sorted((root / "logs").glob("*.log")):
            print(f"--- {log.name}\n{log.read_text()[-3000:]}")
        raise
    channel = suite.channel("gateway")
    try:
        yield RunningSuite(suite, media_dir, data_dir, channel, gateway_pb2_grpc.GatewayServiceStub(channel))
    finally:
        channel.close()
        codes = suite.stop()
        bad = {name: code for name, code in codes.items() if code != 0}
        assert not bad, f"services did not exit cleanly on SIGTERM: {bad}; logs in {root / 'logs'}"

"""Starts and stops the whole suite as separate processes: the five stage
services, then the gateway pointed at them. Used by `make run` (fixed ports),
the benchmarks and the integration tests (free ports, read back from port
files).

A stage service can run as several replicas (`replicas={"asr": 2}`): the
processes are named "asr", "asr-2"..., each on its own port with its own log
(`logs/asr-2.log`), and the gateway gets the comma-separated list of their
addresses as its target. The resilience tests and benchmarks `kill` single
processes (SIGKILL by default) and `restart` them on the same port (the
gateway with the same data directory, as its environment is kept), and read
the JSON lines a process logged with `log_records`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.rpc.tls import TlsConfig

ROOT = Path(__file__).resolve().parent.parent

# name, module, default port
SERVICES: tuple[tuple[str, str, int], ...] = (
    ("audio", "services.audio", 50052),
    ("vad", "services.vad", 50053),
    ("asr", "services.asr", 50054),
    ("align", "services.align", 50055),
    ("diarize", "services.diarize", 50056),
    ("gateway", "gateway", 50051),
)
MODULES: dict[str, str] = {name: module for name, module, _ in SERVICES}
STAGE_SERVICES: tuple[str, ...] = tuple(name for name, _, _ in SERVICES if name != "gateway")
# Where a replica's number is written in its process name ("asr-2").
REPLICA_SEPARATOR = "-"


def service_of(process_name: str) -> str:
    """The service a process runs: "asr" for "asr" and "asr-2"."""
    return process_name.split(REPLICA_SEPARATOR, 1)[0]


def replica_names(service: str, count: int) -> list[str]:
    """Process names of `count` replicas of `service`: "asr", "asr-2", ..."""
    return [service] + [f"{service}{REPLICA_SEPARATOR}{number}" for number in range(2, count + 1)]


@dataclass
class Suite:
    """The processes of a running suite, by process name ("gateway", "asr", "asr-2"...)."""

    logs_dir: Path
    run_dir: Path
    host: str = "127.0.0.1"
    # Port per process name; 0 (or absent, for extra replicas) picks a free one.
    ports: dict[str, int] = field(default_factory=lambda: {name: port for name, _, port in SERVICES})
    extra_env: Mapping[str, str] = field(default_factory=dict)
    # Replicas per stage service (default 1); the gateway runs once.
    replicas: Mapping[str, int] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    bound_ports: dict[str, int] = field(default_factory=dict)
    # Processes stopped on purpose with `kill` and not restarted since.
    down: set[str] = field(default_factory=set)

    def __post_init__(self) -> None:
        unknown = set(self.replicas) - set(STAGE_SERVICES)
        if unknown:
            raise ValueError(f"replicas of unknown stage services: {sorted(unknown)} (known: {STAGE_SERVICES})")
        if any(count < 1 for count in self.replicas.values()):
            raise ValueError(f"a stage service needs at least one replica: {dict(self.replicas)}")

    def instances(self, service: str) -> list[str]:
        """Process names of `service`'s replicas."""
        if service == "gateway":
            return ["gateway"]
        return replica_names(service, self.replicas.get(service, 1))

    def names(self) -> list[str]:
        """Every process name, stage services first (in start order), the gateway last."""
        return [name for service in (*STAGE_SERVICES, "gateway") for name in self.instances(service)]

    def target(self, name: str) -> str:
        """The address of one process."""
        return f"{self.host}:{self.bound_ports[name]}"

    def targets(self, service: str) -> str:
        """Addresses of every started replica of `service`, comma-separated."""
        return ",".join(self.target(name) for name in self.instances(service) if name in self.bound_ports)

    def channel(self, name: str) -> grpc.Channel:
        """A channel to one process: TLS when the suite runs with TLS
        (SUBTITLER_TLS_CA_FILE among its environment), else plaintext."""
        credentials = TlsConfig.from_env({**os.environ, **self.extra_env}, "SUBTITLER_SUITE_").channel_credentials()
        if credentials is None:
            return grpc.insecure_channel(self.target(name))
        return grpc.secure_channel(self.target(name), credentials)

    def metrics_url(self, name: str) -> str:
        """Where one process serves its Prometheus metrics."""
        port = (self.run_dir / f"{name}.metrics-port").read_text().strip()
        return f"http://{self.host}:{port}/metrics"

    def log_path(self, name: str) -> Path:
        return self.logs_dir / f"{name}.log"

    def log_records(self, name: str) -> list[dict[str, Any]]:
        """The JSON log lines a process wrote (over all its restarts), in
        order; lines that are not JSON objects (a crash's traceback) are skipped."""
        path = self.log_path(name)
        if not path.exists():
            return []
        records = []
        for line in path.read_text(errors="replace").splitlines():
            if not line.startswith("{"):
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue  # cut short by a kill
            if isinstance(record, dict):
                records.append(record)
        return records

    def environment(self, name: str) -> dict[str, str]:
        """The environment a process runs with (another gateway on the same store starts with it too)."""
        upper = service_of(name).upper()
        env = {**os.environ, **self.extra_env}
        env[f"SUBTITLER_{upper}_HOST"] = self.host
        env[f"SUBTITLER_{upper}_PORT"] = str(self.ports.get(name, 0))
        env[f"SUBTITLER_{upper}_PORT_FILE"] = str(self.run_dir / f"{name}.port")
        # Prometheus metrics on a free port unless the caller's environment chose one.
        env.setdefault(f"SUBTITLER_{upper}_METRICS_PORT", "0")
        env[f"SUBTITLER_{upper}_METRICS_PORT_FILE"] = str(self.run_dir / f"{name}.metrics-port")
        env["PYTHONUNBUFFERED"] = "1"
        for peer in STAGE_SERVICES:
            if targets := self.targets(peer):
                env[f"SUBTITLER_{peer.upper()}_TARGET"] = targets
        return env

    def _spawn(self, name: str, module: str | None = None) -> None:
        (self.run_dir / f"{name}.port").unlink(missing_ok=True)
        log = open(self.log_path(name), "ab")  # noqa: SIM115 - owned by the child for its life
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", module or MODULES[service_of(name)]],
            cwd=ROOT,
            env=self.environment(name),
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()

    def _await_port(self, name: str, deadline: float) -> None:
        port_file = self.run_dir / f"{name}.port"
        while time.monotonic() < deadline:
            if port_file.exists():
                self.bound_ports[name] = int(port_file.read_text())
                return
            code = self.processes[name].poll()
            if code is not None:
                raise RuntimeError(f"{name} exited with {code} on start; see {self.log_path(name)}")
            time.sleep(0.05)
        raise TimeoutError(f"{name} did not start listening in time; see {self.log_path(name)}")

    def start(self, timeout_s: float = 300.0) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        # The audio service first: the other stages read from the address it
        # bound (they honour no audio-service address a handle names).
        audio_processes = self.instances("audio")
        stage_processes = [name for name in self.names() if name not in ("gateway", *audio_processes)]
        for group in (audio_processes, stage_processes):
            for name in group:
                self._spawn(name)
            for name in group:
                self._await_port(name, deadline)
        self._spawn("gateway")
        self._await_port("gateway", deadline)
        self.wait_ready(deadline)

    def wait_ready(self, deadline: float, names: Iterable[str] | None = None) -> None:
        """Waits until the health of every started process (or of `names`)
        says SERVING (models loaded, jobs recovered)."""
        for name in list(self.bound_ports) if names is None else names:
            if name in self.down:
                continue
            with self.channel(name) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while True:
                    if self.processes[name].poll() is not None:
                        raise RuntimeError(f"{name} exited; see {self.log_path(name)}")
                    try:
                        status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                        if status == health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.RpcError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} is not SERVING in time; see {self.log_path(name)}")
                    time.sleep(0.2)

    def kill(self, *names: str, sig: int = signal.SIGKILL, timeout_s: float = 30.0) -> dict[str, int]:
        """Sends `sig` (SIGKILL: no clean-up at all) to each named process,
        all at once, and waits for them to end; returns their exit statuses.
        They stay down until `restart`, and `stop` leaves them out of the
        codes it returns."""
        processes = {name: self.processes[name] for name in names}
        for process in processes.values():
            if process.poll() is None:
                process.send_signal(sig)
        deadline = time.monotonic() + timeout_s
        codes = {}
        for name, process in processes.items():
            try:
                codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
            self.down.add(name)
        return codes

    def crashed(self) -> dict[str, int]:
        """Processes that ended without being stopped (`kill`, `stop`), with their exit status."""
        return {
            name: code
            for name, process in self.processes.items()
            if name not in self.down and (code := process.poll()) is not None
        }

    def restart(self, name: str, timeout_s: float = 120.0) -> None:
        """Starts a process again on the port it had (stopping it with SIGTERM
        first if it still runs) and waits until it is SERVING. Its environment
        is the same: the gateway keeps its data directory and peers."""
        deadline = time.monotonic() + timeout_s
        process = self.processes[name]
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        if name in self.bound_ports:
            self.ports[name] = self.bound_ports[name]
        self.down.discard(name)
        self._spawn(name)
        self._await_port(name, deadline)
        self.wait_ready(deadline, [name])

    def stop(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """SIGTERM to every process (gateway first), then SIGKILL what is
        left. Returns each process's exit status, except those stopped on
        purpose with `kill` and not restarted."""
        order = [name for name in reversed(self.names()) if name in self.processes]
        for name in order:
            process = self.processes[name]
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int | None] = {}
        for name in order:
            process = self.processes[name]
            try:
                code: int | None = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                code = process.wait()
            if name not in self.down:
                codes[name] = code
        return codes

"""Starts and stops the whole suite as separate processes: the four stage
services, then the gateway pointed at them. Used by `make run` (fixed ports)
and by the integration tests (free ports, read back from port files)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

ROOT = Path(__file__).resolve().parent.parent

# name, module, default port
SERVICES: tuple[tuple[str, str, int], ...] = (
    ("audio", "services.audio", 50052),
    ("vad", "services.vad", 50053),
    ("asr", "services.asr", 50054),
    ("align", "services.align", 50055),
    ("gateway", "gateway", 50051),
)


@dataclass
class Suite:
    """The processes of a running suite."""

    logs_dir: Path
    run_dir: Path
    host: str = "127.0.0.1"
    # Port per service name; 0 picks a free one.
    ports: dict[str, int] = field(default_factory=lambda: {name: port for name, _, port in SERVICES})
    extra_env: Mapping[str, str] = field(default_factory=dict)
    processes: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    bound_ports: dict[str, int] = field(default_factory=dict)

    def target(self, name: str) -> str:
        return f"{self.host}:{self.bound_ports[name]}"

    def _env(self, name: str) -> dict[str, str]:
        upper = name.upper()
        env = {**os.environ, **self.extra_env}
        env[f"SUBTITLER_{upper}_HOST"] = self.host
        env[f"SUBTITLER_{upper}_PORT"] = str(self.ports[name])
        env[f"SUBTITLER_{upper}_PORT_FILE"] = str(self.run_dir / f"{name}.port")
        env["PYTHONUNBUFFERED"] = "1"
        for peer in ("audio", "vad", "asr", "align"):
            if peer in self.bound_ports:
                env[f"SUBTITLER_{peer.upper()}_TARGET"] = self.target(peer)
        return env

    def _spawn(self, name: str, module: str) -> None:
        (self.run_dir / f"{name}.port").unlink(missing_ok=True)
        log = open(self.logs_dir / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child for its life
        self.processes[name] = subprocess.Popen(
            [sys.executable, "-m", module], cwd=ROOT, env=self._env(name), stdout=log, stderr=subprocess.STDOUT
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
                raise RuntimeError(f"{name} exited with {code} on start; see {self.logs_dir / (name + '.log')}")
            time.sleep(0.05)
        raise TimeoutError(f"{name} did not start listening in time; see {self.logs_dir / (name + '.log')}")

    def start(self, timeout_s: float = 300.0) -> None:
        self.logs_dir.mkdir(parents=True, exist_ok=True)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        deadline = time.monotonic() + timeout_s
        stage_services = [entry for entry in SERVICES if entry[0] != "gateway"]
        for name, module, _ in stage_services:
            self._spawn(name, module)
        for name, _, _ in stage_services:
            self._await_port(name, deadline)
        self._spawn("gateway", "gateway")
        self._await_port("gateway", deadline)
        self.wait_ready(deadline)

    def wait_ready(self, deadline: float) -> None:
        """Waits until every service's health says SERVING (models loaded)."""
        for name in self.bound_ports:
            with grpc.insecure_channel(self.target(name)) as channel:
                stub = health_pb2_grpc.HealthStub(channel)
                while True:
                    if self.processes[name].poll() is not None:
                        raise RuntimeError(f"{name} exited; see {self.logs_dir / (name + '.log')}")
                    try:
                        status = stub.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                        if status == health_pb2.HealthCheckResponse.SERVING:
                            break
                    except grpc.RpcError:
                        pass
                    if time.monotonic() > deadline:
                        raise TimeoutError(f"{name} is not SERVING in time; see {self.logs_dir / (name + '.log')}")
                    time.sleep(0.2)

    def stop(self, timeout_s: float = 30.0) -> dict[str, int | None]:
        """SIGTERM to every process (gateway first), then SIGKILL what is left."""
        order = ["gateway", "align", "asr", "vad", "audio"]
        for name in order:
            process = self.processes.get(name)
            if process is not None and process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout_s
        codes: dict[str, int | None] = {}
        for name in order:
            process = self.processes.get(name)
            if process is None:
                continue
            try:
                codes[name] = process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                codes[name] = process.wait()
        return codes

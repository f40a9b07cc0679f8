"""`make run`: the whole suite on this machine with the embedded default
model, and the HTTP front. Ports come from SUBTITLER_<SERVICE>_PORT (gateway
50051, audio 50052, vad 50053, asr 50054, align 50055, diarize 50056, http
8080); logs go to
logs/. Ctrl-C stops it all."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from tools.suite import ROOT, SERVICES, Suite


def start_http(suite: Suite) -> subprocess.Popen[bytes]:
    """The HTTP front, on SUBTITLER_HTTP_PORT (8080), talking to the suite's gateway."""
    log = open(ROOT / "logs" / "http.log", "ab")  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(
        [sys.executable, "-m", "services.http"],
        cwd=ROOT,
        env={**os.environ, "SUBTITLER_GATEWAY_TARGET": suite.target("gateway")},
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    log.close()
    return process


# Prometheus metrics ports of `make run` (SUBTITLER_<SERVICE>_METRICS_PORT overrides).
METRICS_PORTS = {"gateway": 9101, "audio": 9102, "vad": 9103, "asr": 9104, "align": 9105, "diarize": 9106}


def main() -> int:
    ports = {name: int(os.environ.get(f"SUBTITLER_{name.upper()}_PORT", port)) for name, _, port in SERVICES}
    for name, port in METRICS_PORTS.items():
        os.environ.setdefault(f"SUBTITLER_{name.upper()}_METRICS_PORT", str(port))
    suite = Suite(logs_dir=ROOT / "logs", run_dir=ROOT / "logs" / "run", ports=ports)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print("starting audio, vad, asr, align, diarize and the gateway (first start loads models)...", flush=True)
    try:
        suite.start()
    except (RuntimeError, TimeoutError) as error:
        print(f"could not start the suite: {error}", file=sys.stderr)
        suite.stop()
        return 1
    http = start_http(suite)
    print("ready:", ", ".join(f"{name} {suite.target(name)}" for name in suite.bound_ports), flush=True)
    http_port = os.environ.get("SUBTITLER_HTTP_PORT", "8080")
    print(f"web page: http://127.0.0.1:{http_port}/ (OpenAI's transcription API under /v1)")
    print(
        "metrics: "
        + ", ".join(f"{name} :{os.environ[f'SUBTITLER_{name.upper()}_METRICS_PORT']}" for name in METRICS_PORTS)
    )
    print(f"logs in {Path('logs').resolve()}")
    print("transcribe with: .venv/bin/subtitler transcribe FILE -o FILE.srt")
    print("Ctrl-C stops everything.", flush=True)
    failed = ""
    while not stopping:
        for name, process in [*suite.processes.items(), ("http", http)]:
            if process.poll() is not None:
                failed = f"{name} exited with {process.returncode}; see logs/{name}.log"
                stopping = True
        time.sleep(0.5)
    print("\nstopping...", flush=True)
    http.terminate()
    http.wait(timeout=30)
    codes = suite.stop()
    print("stopped:", ", ".join(f"{name} exit {code}" for name, code in codes.items()))
    if failed:
        print(failed, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

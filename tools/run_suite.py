"""`make run`: the whole suite on this machine with the embedded default
model. Ports come from SUBTITLER_<SERVICE>_PORT (gateway 50051, audio 50052,
vad 50053, asr 50054, align 50055); logs go to logs/. Ctrl-C stops it all."""

from __future__ import annotations

import os
import signal
import sys
import time
from pathlib import Path

from tools.suite import ROOT, SERVICES, Suite


def main() -> int:
    ports = {name: int(os.environ.get(f"SUBTITLER_{name.upper()}_PORT", port)) for name, _, port in SERVICES}
    suite = Suite(logs_dir=ROOT / "logs", run_dir=ROOT / "logs" / "run", ports=ports)
    stopping = False

    def request_stop(signum: int, frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGINT, request_stop)
    signal.signal(signal.SIGTERM, request_stop)
    print("starting audio, vad, asr, align and the gateway (first start loads models)...", flush=True)
    try:
        suite.start()
    except (RuntimeError, TimeoutError) as error:
        print(f"could not start the suite: {error}", file=sys.stderr)
        suite.stop()
        return 1
    print("ready:", ", ".join(f"{name} {suite.target(name)}" for name in suite.bound_ports), flush=True)
    print(f"logs in {Path('logs').resolve()}")
    print("transcribe with: .venv/bin/python -m gateway.cli transcribe FILE -o FILE.srt")
    print("Ctrl-C stops everything.", flush=True)
    failed = ""
    while not stopping:
        for name, process in suite.processes.items():
            if process.poll() is not None:
                failed = f"{name} exited with {process.returncode}; see logs/{name}.log"
                stopping = True
        time.sleep(0.5)
    print("\nstopping...", flush=True)
    codes = suite.stop()
    print("stopped:", ", ".join(f"{name} exit {code}" for name, code in codes.items()))
    if failed:
        print(failed, file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

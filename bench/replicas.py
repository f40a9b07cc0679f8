"""One long job over one and over two ASR replicas (part of `make bench`).

Each replica runs one single-threaded model worker (one core each); the
gateway learns their capacity from their status and keeps calls in flight
on both, so one job should use both cores. Prints the job's time with one
and with two replicas, and the chunks each replica decoded.

    python -m bench.replicas --minutes 5 --rounds 2
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import grpc

from bench.end_to_end import run_job, start_suite
from bench.machine import print_machine_line
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.speech import SAMPLE_RATE_HERTZ, build_long_recording, write_wav
from tests.wer import word_error_rate
from tools.asr_log import asr_requests

ONE_CORE_REPLICA = {"SUBTITLER_ASR_NUM_WORKERS": "1", "SUBTITLER_ASR_CPU_THREADS": "1"}


def measure(workdir: Path, audio_path: Path, replicas: int, rounds: int) -> tuple[float, str, Counter[str]]:
    """The fastest of `rounds` jobs, its text and the chunks per replica."""
    suite = start_suite(
        workdir / f"replicas-{replicas}", audio_path.parent, ONE_CORE_REPLICA, replicas={"asr": replicas}
    )
    try:
        with grpc.insecure_channel(suite.target("gateway")) as channel:
            gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
            config = gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(beam_size=5, language_code="en"))
            best = None
            for _ in range(rounds):
                run = run_job(suite, gateway, f"{replicas} replicas", audio_path.name, config)
                job_id = gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1)).jobs[0].job_id
                per_replica = Counter(
                    request.replica for request in asr_requests(suite, job_id) for _ in request.chunks
                )
                if best is None or run.elapsed_s < best[0]:
                    best = (run.elapsed_s, run.text, per_replica)
            assert best is not None
            return best
    finally:
        suite.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--rounds", type=int, default=2)
    options = parser.parse_args()
    print_machine_line()
    with tempfile.TemporaryDirectory(prefix="subtitler-replicas-") as tmp:
        workdir = Path(tmp)
        media = workdir / "media"
        media.mkdir()
        recording = build_long_recording(min_duration_s=options.minutes * 60, gap_s=1.0, shuffle_seed=7)
        audio_path = write_wav(media / "long.wav", recording.samples)
        audio_s = recording.samples.size / SAMPLE_RATE_HERTZ
        print(f"audio: {audio_s:.1f} s; tiny.en int8; each ASR replica one worker of one thread")
        results = {count: measure(workdir, audio_path, count, options.rounds) for count in (1, 2)}
        one_s = results[1][0]
        print(f"{'ASR replicas':<14} {'seconds':>8} {'RTF':>7} {'WER':>6} {'speed-up':>9}  chunks per replica")
        for count, (seconds, text, per_replica) in results.items():
            wer = word_error_rate(recording.reference_text, text)
            spread = ", ".join(f"{name} {chunks}" for name, chunks in sorted(per_replica.items()))
            print(f"{count:<14} {seconds:8.1f} {seconds / audio_s:7.3f} {wer:6.1%} {one_s / seconds:8.2f}x  {spread}")
        same = results[1][1] == results[2][1]
        print(f"same text with one and two replicas: {'yes' if same else 'NO'}")


if __name__ == "__main__":
    main()

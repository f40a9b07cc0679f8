"""What word timing and the coverage check cost a job, in CPU seconds.

Runs the realistic recording of `bench.media` through the suite as four
jobs: the default, without the coverage check, without alignment (no word
times), and without both. Prints, per job, the wall time, the CPU seconds
each service process spent (utime + stime from /proc, which a machine shared
with other work distorts far less than wall time), the Transcribe calls the
ASR logged, the coverage check's second looks the gateway logged and the
word error rate.

`--windows` then prints what the coverage check would look at again in the
job without it: each window, the VAD's speech probability over it, where the
recording's passages (music, noise) lie, and the chunk's segments either side.

`--gateway-from DIR` compares two gateways on the same stage services: the
gateway of another checkout (the code before a change) runs beside this
one's, and each round runs every job on both, one after the other, so that
the two meet the same load on a shared machine.

    python -m bench.job_costs                       # one round of the four jobs
    python -m bench.job_costs --rounds 2 --windows
    python -m bench.job_costs --rounds 4 --gateway-from /tmp/before   # A/B against another checkout
    CT2_FORCE_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python -m bench.job_costs
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.machine import print_machine_line
from bench.media import BenchMedia, MediaOptions, realistic_media
from common.transcript import Segment
from gateway.jobs.run.policy import uncovered_speech
from gateway.store.job_store import JobStore
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.speech import SAMPLE_RATE_HERTZ
from tests.wer import word_error_rate
from tools.asr_log import asr_requests
from tools.suite import SERVICES, Suite

# name -> (skip_alignment, skip_coverage_check)
JOB_MODES: dict[str, tuple[bool, bool]] = {
    "default": (False, False),
    "no coverage check": (False, True),
    "no align": (True, False),
    "neither": (True, True),
}
# The process name (and log) of the other checkout's gateway.
OTHER_GATEWAY = "gateway-other"
_SECOND_LOOK = re.compile(r"job (\S+) chunk (\d+): (\d+) s of speech had no segment; a second look found (\d+)")
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S


def run_queue_seconds(pid: int) -> float:
    """Time the threads of a process have spent ready to run but waiting for
    a CPU (/proc/<pid>/task/*/schedstat): how much other work held them back."""
    total_ns = 0
    for stat in Path(f"/proc/{pid}/task").glob("*/schedstat"):
        try:
            total_ns += int(stat.read_text().split()[1])
        except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
            continue  # a thread that ended meanwhile
    return total_ns / 1e9


@dataclass(frozen=True)
class Gateway:
    """A gateway the jobs go through: its stub, its log and its data directory."""

    label: str
    stub: gateway_pb2_grpc.GatewayServiceStub
    log_name: str
    data_dir: Path
    pid: int


@dataclass(frozen=True)
class JobCost:
    gateway: str
    mode: str
    job_id: str
    wall_s: float
    cpu_s: dict[str, float]
    # Time the ASR's threads waited for a CPU: high when other work shared the machine.
    asr_waited_s: float
    transcribe_calls: int
    chunks_sent: int
    second_looks: int
    second_look_speech_s: int
    second_look_found: int
    word_error_rate: float


def run_job(suite: Suite, through: Gateway, mode: str, path: str, reference: str) -> JobCost:
    skip_alignment, skip_coverage_check = JOB_MODES[mode]
    config = gateway_pb2.JobConfig(
        transcription=asr_pb2.TranscriptionOptions(beam_size=5, batch_size=8, language_code="en"),
        skip_alignment=skip_alignment,
        skip_coverage_check=skip_coverage_check,
    )
    gateway = through.stub
    # The stage services and the gateway the job goes through (as "gateway").
    pids = {name: process.pid for name, process in suite.processes.items()} | {"gateway": through.pid}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    waited_before_s = run_queue_seconds(pids["asr"])
    started = time.perf_counter()
    job = gateway.CreateJob(gateway_pb2.CreateJobRequest(path=path, config=config))
    for _ in gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id)):
        pass
    wall_s = time.perf_counter() - started
    cpu_s = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
    asr_waited_s = run_queue_seconds(pids["asr"]) - waited_before_s
    finished = gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id))
    if finished.state != gateway_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"{mode}: job failed: {finished.error}")
    text = gateway.GetResult(
        gateway_pb2.GetResultRequest(job_id=job.job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
    ).content
    time.sleep(0.5)  # the last log lines
    requests = asr_requests(suite, job.job_id)
    looks = [
        match
        for record in suite.log_records(through.log_name)
        if (match := _SECOND_LOOK.fullmatch(str(record.get("event")))) and match[1] == job.job_id
    ]
    return JobCost(
        through.label,
        mode,
        job.job_id,
        wall_s,
        cpu_s,
        asr_waited_s,
        len(requests),
        sum(len(request.chunks) for request in requests),
        len(looks),
        sum(int(match[3]) for match in looks),
        sum(int(match[4]) for match in looks),
        word_error_rate(reference, text),
    )


def print_costs(costs: Sequence[JobCost]) -> None:
    names = [name for name, _, _ in SERVICES if name != "diarize"]
    header = f"{'gateway':<9}{'job':<20}{'wall s':>8}" + "".join(f"{name + ' cpu':>12}" for name in names)
    print(header + f"{'asr waited':>11}{'calls':>7}{'chunks':>8}{'looks':>7}{'look s':>8}{'found':>7}{'WER':>8}")
    for cost in costs:
        print(
            f"{cost.gateway:<9}{cost.mode:<20}{cost.wall_s:>8.1f}"
            + "".join(f"{cost.cpu_s.get(name, 0.0):>12.1f}" for name in names)
            + f"{cost.asr_waited_s:>11.1f}{cost.transcribe_calls:>7}{cost.chunks_sent:>8}{cost.second_looks:>7}"
            f"{cost.second_look_speech_s:>8}{cost.second_look_found:>7}{cost.word_error_rate:>8.2%}"
        )


def print_windows(store_path: Path, job_id: str, media: BenchMedia) -> None:
    """The coverage check's windows over the chunks of a job that ran without
    it, with the VAD's speech probability there and the segments around."""
    from services.vad.engine import SpeechDetector, bundled_model_path

    store = JobStore(store_path)
    try:
        checkpoint = store.checkpoint(job_id)
    finally:
        store.close()
    samples = media.samples()
    probabilities = SpeechDetector(bundled_model_path()).speech_probabilities(samples)
    frame_s = samples.size / SAMPLE_RATE_HERTZ / max(1, probabilities.size)
    total_s = 0.0
    for index in sorted(checkpoint.speech_chunks):
        chunk = checkpoint.speech_chunks[index]
        segments: list[Segment] = checkpoint.transcripts[index][1]
        windows = uncovered_speech(checkpoint.speech_ranges.get(index, ()), segments, chunk)
        for window in windows:
            total_s += window.duration_s
            frames = probabilities[int(window.start_s / frame_s) : max(int(window.end_s / frame_s), 1)]
            passages = {
                passage.kind
                for passage in media.passages
                if passage.start_s < window.end_s and window.start_s < passage.end_s
            }
            print(
                f"chunk {index} ({chunk.start_s:.1f}-{chunk.end_s:.1f} s): window {window.start_s:.2f}-"
                f"{window.end_s:.2f} s ({window.duration_s:.1f} s), VAD mean {float(np.mean(frames)):.2f}, "
                f"over 0.5 {float(np.mean(frames > 0.5)):.0%}; passages {sorted(passages)}"
            )
            before = [segment for segment in segments if segment.end_s <= window.end_s][-2:]
            after = [segment for segment in segments if segment.start_s >= window.start_s][:1]
            for segment in dict.fromkeys([*before, *after]):
                first_word_s = segment.words[0].start_s if segment.words else float("nan")
                last_word_s = segment.words[-1].end_s if segment.words else float("nan")
                print(
                    f"    segment {segment.start_s:.2f}-{segment.end_s:.2f} s "
                    f"(words {first_word_s:.2f}-{last_word_s:.2f}): {segment.text[:90]!r}"
                )
            spoken = [
                utterance
                for utterance in media.utterances
                if utterance.start_s < window.end_s and window.start_s < utterance.end_s
            ]
            for utterance in spoken:
                print(f"    said {utterance.start_s:.2f}-{utterance.end_s:.2f} s: {utterance.text[:90]!r}")
    print(f"{total_s:.1f} s of windows in all")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=1, help="runs of each job (interleaved)")
    parser.add_argument("--modes", nargs="+", choices=list(JOB_MODES), default=list(JOB_MODES))
    parser.add_argument("--windows", action="store_true", help="print the coverage check's windows")
    parser.add_argument("--keep", type=Path, help="keep the suite's logs and store in this folder")
    parser.add_argument("--windows-of", metavar="JOB_ID", help="only print the windows of a job kept in --keep")
    parser.add_argument(
        "--settle-load", type=float, metavar="LOAD", help="before each job, wait (up to 3 min) for a lower load average"
    )
    parser.add_argument(
        "--gateway-from", type=Path, metavar="DIR", help="a checkout whose gateway runs beside this one's (A/B)"
    )
    options = parser.parse_args()
    media = realistic_media(MediaOptions())
    if options.windows_of:
        print_windows(options.keep / "data" / "jobs.sqlite3", options.windows_of, media)
        return
    print_machine_line()
    print(media.describe())
    workdir = options.keep or Path(tempfile.mkdtemp(prefix="job-costs-"))
    media_dir = workdir / "media"
    media_dir.mkdir(parents=True, exist_ok=True)
    audio_path = Path(shutil.copyfile(media.wav_path, media_dir / "realistic.wav"))
    suite = Suite(
        logs_dir=workdir / "logs",
        run_dir=workdir / "run",
        ports={name: 0 for name, _, _ in SERVICES},
        extra_env={
            "SUBTITLER_AUDIO_MEDIA_ROOT": str(media_dir),
            "SUBTITLER_GATEWAY_DATA_DIR": str(workdir / "data"),
            "SUBTITLER_LOG_LEVEL": "INFO",
        },
    )
    suite.start()
    other: subprocess.Popen[bytes] | None = None
    costs: list[JobCost] = []
    try:
        gateways = [
            Gateway("this", _stub(suite.target("gateway")), "gateway", workdir / "data", suite.processes["gateway"].pid)
        ]
        if options.gateway_from is not None:
            other, target = start_other_gateway(suite, options.gateway_from.resolve(), workdir)
            gateways.append(Gateway("other", _stub(target), OTHER_GATEWAY, workdir / "data-other", other.pid))
        for through in gateways:
            # A first job warms every service (models, caches, malloc's kept buffers).
            run_job(suite, through, "neither", audio_path.name, media.reference_text)
        for _ in range(options.rounds):
            for mode in options.modes:
                for through in gateways:
                    settle(options.settle_load)
                    costs.append(run_job(suite, through, mode, audio_path.name, media.reference_text))
                    print_costs(costs[-1:])
        print()
        print_costs(costs)
        print()
        print_fastest(costs)
        unchecked = [cost for cost in costs if cost.mode == "no coverage check" and cost.gateway == "this"]
        if options.windows and unchecked:
            print()
            print_windows(gateways[0].data_dir / "jobs.sqlite3", unchecked[-1].job_id, media)
    finally:
        if other is not None:
            other.terminate()
            other.wait(timeout=30)
        suite.stop()
        if options.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


def settle(load: float | None, longest_s: float = 180.0) -> None:
    """Waits (at most `longest_s`) until the machine's 1-minute load average is under `load`."""
    deadline = time.monotonic() + longest_s
    while load is not None and os.getloadavg()[0] >= load and time.monotonic() < deadline:
        time.sleep(5.0)


def _stub(target: str) -> gateway_pb2_grpc.GatewayServiceStub:
    return gateway_pb2_grpc.GatewayServiceStub(grpc.insecure_channel(target))


def print_fastest(costs: Sequence[JobCost]) -> None:
    """Per gateway and job, the fastest wall time and the least ASR CPU of its
    rounds, and the wall time of the round whose ASR waited least for a CPU."""
    print(f"{'gateway':<9}{'job':<20}{'fastest wall s':>16}{'least asr cpu s':>17}{'least waited: wall s':>22}")
    for key in dict.fromkeys((cost.gateway, cost.mode) for cost in costs):
        runs = [cost for cost in costs if (cost.gateway, cost.mode) == key]
        wall_s = min(cost.wall_s for cost in runs)
        asr_s = min(cost.cpu_s.get("asr", 0.0) for cost in runs)
        calm = min(runs, key=lambda cost: cost.asr_waited_s)
        print(
            f"{key[0]:<9}{key[1]:<20}{wall_s:>16.1f}{asr_s:>17.1f}"
            f"{calm.wall_s:>12.1f} ({calm.asr_waited_s:.1f} s waited)"
        )


def start_other_gateway(suite: Suite, checkout: Path, workdir: Path) -> tuple[subprocess.Popen[bytes], str]:
    """The gateway of another checkout on the suite's stage services, with
    a data directory and log of its own; returns it and its address."""
    run_dir = workdir / "run"
    port_file = run_dir / f"{OTHER_GATEWAY}.port"
    port_file.unlink(missing_ok=True)
    env = suite.environment("gateway") | {
        "SUBTITLER_GATEWAY_PORT": "0",
        "SUBTITLER_GATEWAY_PORT_FILE": str(port_file),
        "SUBTITLER_GATEWAY_METRICS_PORT_FILE": str(run_dir / f"{OTHER_GATEWAY}.metrics-port"),
        "SUBTITLER_GATEWAY_DATA_DIR": str(workdir / "data-other"),
    }
    with open(suite.log_path(OTHER_GATEWAY), "ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "gateway"], cwd=checkout, env=env, stdout=log, stderr=subprocess.STDOUT
        )
    deadline = time.monotonic() + 120.0
    while not port_file.exists():
        if process.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError(f"the other gateway did not start; see {suite.log_path(OTHER_GATEWAY)}")
        time.sleep(0.1)
    target = f"{suite.host}:{int(port_file.read_text())}"
    with grpc.insecure_channel(target) as channel:
        health = health_pb2_grpc.HealthStub(channel)
        while True:
            try:
                if (
                    health.Check(health_pb2.HealthCheckRequest(), timeout=2).status
                    == health_pb2.HealthCheckResponse.SERVING
                ):
                    break
            except grpc.RpcError:
                pass
            if time.monotonic() > deadline:
                raise TimeoutError("the other gateway is not SERVING in time")
            time.sleep(0.2)
    return process, target


if __name__ == "__main__":
    main()

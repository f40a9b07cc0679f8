"""The suite's memory on a long file: each service's and all services' PSS
and RSS while a job runs, on realistic recordings of several lengths.

The target: all services together at most 1.8 GB (1717 MiB) on a
60-minute file, the shared audio counted once, and apart from the audio
itself flat in the file's length. PSS (`bench.process_memory`) counts each
page once, divided among the processes that map it, so its sum over the
services counts the decoded audio in /dev/shm once; a sum of RSS counts it
in every process that has touched it (an upper bound).

For each length (`--minutes`, default 10 and 60) a fresh suite is started
(`--env` adds settings), left idle as long as the services take to hand
back what their warm-ups freed, and each mode (`--modes`: the default job, word times and coverage check
included; no alignment; with speakers) runs `--rounds` times, one job at a
time, the realistic recording of `bench.media` as a WAV on the audio
service's host. Printed per job: each service's PSS when idle before the
jobs, its highest PSS and RSS during the job, its PSS when the sum peaked
(and how much of that was the audio) and once the job has ended and the
services have handed back what malloc kept; then the sum's peak against the
target, and what is not the audio. A summary compares the lengths.

    python -m bench.memory                         # 10 and 60 minutes, default job and no alignment
    python -m bench.memory --minutes 60 --rounds 3 --modes default
    python -m bench.memory --minutes 10 --timeline 5   # each service's PSS every 5 s of the job
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc

from bench.end_to_end import SuiteRun, realistic_input, run_job, start_suite
from bench.machine import print_machine_line
from bench.process_memory import (
    MIB,
    TARGET_BYTES,
    MemoryPeaks,
    ProportionalMemory,
    other_suites,
    process_tree,
    proportional_memory,
)
from common.machine.memory import IDLE_RELEASE_AFTER_S
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.speech import SAMPLE_RATE_HERTZ
from tools.suite import Suite

# The jobs `--modes` chooses from: what a user submits with no options, and with one.
MODES: dict[str, gateway_pb2.JobConfig] = {
    "default": gateway_pb2.JobConfig(),
    "no-align": gateway_pb2.JobConfig(skip_alignment=True),
    "diarize": gateway_pb2.JobConfig(diarization=gateway_pb2.DiarizationOptions(enabled=True)),
}
# After a job: the services hand back what malloc kept after this long without work (common.machine.memory).
SETTLE_S = IDLE_RELEASE_AFTER_S + 5.0


@dataclass
class JobMemory:
    """One job's memory figures."""

    minutes: float
    mode: str
    round_number: int
    duration_s: float
    audio_bytes: int
    idle: dict[str, ProportionalMemory]
    peaks: MemoryPeaks
    after: dict[str, ProportionalMemory]
    elapsed_s: float
    # Processes of another suite seen before or after the job (see `other_suites`).
    others: int = 0

    @property
    def pss_sum_bytes(self) -> int:
        return self.peaks.pss_sum_bytes

    @property
    def judged_bytes(self) -> int:
        """What meets the target or not: all services at once, the audio counted once (the larger measure)."""
        return self.peaks.judged_bytes

    @property
    def beside_audio_bytes(self) -> int:
        """The sum's peak less the audio's share of it (shared memory)."""
        return self.pss_sum_bytes - sum(memory.pss_shmem_bytes for memory in self.peaks.pss_at_peak.values())


def snapshot(suite: Suite) -> dict[str, ProportionalMemory]:
    """Each process's PSS now, its children included."""
    return {
        name: sum((proportional_memory(pid) for pid in process_tree(process.pid)), ProportionalMemory())
        for name, process in suite.processes.items()
    }


def mib(value: float) -> str:
    return f"{value / MIB:.0f}"


def print_job(job: JobMemory) -> None:
    """Each service's figures in one job, and the sum's."""
    peaks = job.peaks
    print()
    print(
        f"--- {job.minutes:g} min, {job.mode}, round {job.round_number}: the audio itself "
        f"{mib(job.audio_bytes)} MiB ({job.duration_s:.0f} s of 16 kHz float32); job took {job.elapsed_s:.0f} s"
    )
    print(
        f"{'service':<10} {'idle PSS':>9} {'peak PSS':>9} {'at sum peak':>12} {'of it audio':>12} "
        f"{'peak RSS':>9} {'after PSS':>10}"
    )
    for name in peaks.pss_bytes:
        at_peak = peaks.pss_at_peak.get(name, ProportionalMemory())
        print(
            f"{name:<10} {mib(job.idle[name].pss_bytes):>9} {mib(peaks.pss_bytes[name]):>9} "
            f"{mib(at_peak.pss_bytes):>12} {mib(at_peak.pss_shmem_bytes):>12} "
            f"{mib(peaks.rss_bytes.get(name, 0)):>9} {mib(job.after[name].pss_bytes):>10}"
        )
    print(
        f"{'sum':<10} {mib(sum(m.pss_bytes for m in job.idle.values())):>9} "
        f"{mib(sum(peaks.pss_bytes.values())):>9} {mib(peaks.pss_sum_bytes):>12} "
        f"{mib(job.pss_sum_bytes - job.beside_audio_bytes):>12} {mib(peaks.rss_sum_bytes):>9} "
        f"{mib(sum(m.pss_bytes for m in job.after.values())):>10}"
    )
    verdict = "meets" if job.judged_bytes <= TARGET_BYTES else "misses"
    print(
        f"all services at once: {mib(peaks.pss_sum_bytes)} MiB PSS, {mib(job.beside_audio_bytes)} MiB of it not "
        f"the audio; {mib(peaks.audio_once_sum_bytes)} MiB with the audio's segments counted whole; the larger "
        f"{verdict} the target (<= {mib(TARGET_BYTES)} MiB); {mib(peaks.rss_sum_bytes)} MiB RSS (every "
        f"mapper's audio counted); the audio segments mapped: {mib(peaks.shm_bytes)} MiB"
    )
    if job.others:
        print(
            f"note: {job.others} processes of another suite ran beside this one: the library pages they share "
            "with it are divided with them, so PSS reads a little low (by 5-15 MiB a service)"
        )
    print(
        f"(peak PSS/RSS: each service's own highest, at different times; sum peak PSS sampled every "
        f"{peaks.pss_interval_s:.2f} s, {peaks.pss_round_cpu_s * 1e3:.1f} ms of CPU a sample; "
        f"RSS every 0.05 s; after: {SETTLE_S:.0f} s after the job)"
    )


def print_timeline(peaks: MemoryPeaks, every_s: float) -> None:
    """Each service's PSS (and the audio's part of the sum) every `every_s` seconds of the job."""
    if not peaks.timeline:
        return
    names = list(peaks.timeline[0][1])
    print(f"{'s':>6} " + " ".join(f"{name:>8}" for name in names) + f" {'sum':>8} {'audio':>8}")
    next_s = 0.0
    for elapsed_s, figures in peaks.timeline:
        if elapsed_s < next_s:
            continue
        next_s = elapsed_s + every_s
        total = sum(memory.pss_bytes for memory in figures.values())
        shared = sum(memory.pss_shmem_bytes for memory in figures.values())
        print(
            f"{elapsed_s:6.1f} "
            + " ".join(f"{mib(figures[name].pss_bytes):>8}" for name in names)
            + f" {mib(total):>8} {mib(shared):>8}"
        )


def measure_length(
    minutes: float, modes: Sequence[str], rounds: int, timeline_s: float, extra_env: Mapping[str, str]
) -> list[JobMemory]:
    """A fresh suite (`extra_env` added to its environment), left to settle as
    a server does before its first job (the services hand back what their
    warm-ups freed), then each mode `rounds` times on the realistic recording
    of `minutes`."""
    jobs: list[JobMemory] = []
    with tempfile.TemporaryDirectory(prefix="subtitler-bench-memory-") as tmp:
        workdir = Path(tmp)
        media_dir = workdir / "media"
        media_dir.mkdir()
        bench_input = realistic_input(media_dir, minutes, "wav")
        print()
        print(f"=== {minutes:g} min: {bench_input.description}")
        audio_bytes = round(bench_input.duration_s * SAMPLE_RATE_HERTZ) * 4
        suite = start_suite(workdir, media_dir, dict(extra_env))
        try:
            time.sleep(SETTLE_S)
            with grpc.insecure_channel(suite.target("gateway")) as channel:
                gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
                for round_number in range(1, rounds + 1):
                    for mode in modes:
                        own = {pid for process in suite.processes.values() for pid in process_tree(process.pid)}
                        others = len(other_suites(own))
                        idle = snapshot(suite)
                        run: SuiteRun = run_job(
                            suite, gateway, mode, bench_input.audio_path.name, MODES[mode], keep_timeline=True
                        )
                        time.sleep(SETTLE_S)
                        assert run.memory is not None
                        job = JobMemory(
                            minutes,
                            mode,
                            round_number,
                            bench_input.duration_s,
                            audio_bytes,
                            idle,
                            run.memory,
                            snapshot(suite),
                            run.elapsed_s,
                            max(others, len(other_suites(own))),
                        )
                        print_job(job)
                        if timeline_s:
                            print_timeline(run.memory, timeline_s)
                        jobs.append(job)
        finally:
            suite.stop()
    return jobs


def print_summary(jobs: Sequence[JobMemory]) -> None:
    """Per length and mode, the highest over rounds: each service's peak PSS, the sum's peak, the audio."""
    print()
    print("=== summary (MiB; the highest over rounds; the target: the sum's PSS <= 1717 on 60 minutes)")
    groups: dict[tuple[float, str], list[JobMemory]] = {}
    for job in jobs:
        groups.setdefault((job.minutes, job.mode), []).append(job)
    names = list(jobs[0].peaks.pss_bytes)
    print(
        f"{'length, mode':<18} "
        + " ".join(f"{name:>8}" for name in names)
        + f" {'sum PSS':>8} {'range':>10} {'audio':>6} {'not audio':>10} {'+ audio':>8} {'sum RSS':>8}"
    )
    for (minutes, mode), group in groups.items():
        per_service: Mapping[str, int] = {
            name: max(job.peaks.pss_bytes.get(name, 0) for job in group) for name in names
        }
        sums = [job.pss_sum_bytes for job in group]
        print(
            f"{f'{minutes:g} min, {mode}':<18} "
            + " ".join(f"{mib(per_service[name]):>8}" for name in names)
            + f" {mib(max(sums)):>8} {f'{mib(min(sums))}-{mib(max(sums))}':>10} {mib(group[0].audio_bytes):>6} "
            f"{mib(max(job.beside_audio_bytes for job in group)):>10} "
            f"{mib(max(job.peaks.audio_once_sum_bytes for job in group)):>8} "
            f"{mib(max(job.peaks.rss_sum_bytes for job in group)):>8}"
        )
    print(
        "each service: its highest PSS in the job; sum PSS: all services at once (the audio counted once), "
        "range over rounds; not audio: the sum less the shared audio's part of it; + audio: all services' PSS "
        "outside shared memory and the audio segments whole, at once (the audio counted once, also what no "
        "process has touched); sum RSS: all services' RSS at once (the audio counted in every process that maps it)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, nargs="+", default=[10.0, 60.0], help="lengths of the recordings")
    parser.add_argument("--modes", nargs="+", choices=list(MODES), default=["default", "no-align"])
    parser.add_argument("--rounds", type=int, default=1, help="jobs of each mode (the ASR's memory varies)")
    parser.add_argument("--timeline", type=float, default=0.0, help="print each service's PSS every this many s")
    parser.add_argument(
        "--env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="a setting for the suite's services (SUBTITLER_ASR_BATCH_SIZE=4); repeatable",
    )
    options = parser.parse_args()
    extra_env = dict(item.split("=", 1) for item in options.env)
    print_machine_line()
    if extra_env:
        print("settings: " + ", ".join(f"{name}={value}" for name, value in extra_env.items()))
    jobs: list[JobMemory] = []
    for minutes in options.minutes:
        jobs += measure_length(minutes, options.modes, options.rounds, options.timeline, extra_env)
    print_summary(jobs)


if __name__ == "__main__":
    main()

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

    python -m bench.job_costs                       # one round of the four jobs
    python -m bench.job_costs --rounds 2 --windows
    CT2_FORCE_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2 python -m bench.job_costs
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np

from bench.machine import print_machine_line
from bench.media import BenchMedia, MediaOptions, realistic_media
from common.transcript import Segment
from gateway.policy import uncovered_speech
from gateway.store import JobStore
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
_SECOND_LOOK = re.compile(r"job (\S+) chunk (\d+): (\d+) s of speech had no segment; a second look found (\d+)")
_CLOCK_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User and system CPU time a process has used so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (1-based).
    return (int(fields[11]) + int(fields[12])) / _CLOCK_TICKS_PER_S


@dataclass(frozen=True)
class JobCost:
    mode: str
    job_id: str
    wall_s: float
    cpu_s: dict[str, float]
    transcribe_calls: int
    chunks_sent: int
    second_looks: int
    second_look_speech_s: int
    second_look_found: int
    word_error_rate: float


def run_job(
    suite: Suite, gateway: gateway_pb2_grpc.GatewayServiceStub, mode: str, path: str, reference: str
) -> JobCost:
    skip_alignment, skip_coverage_check = JOB_MODES[mode]
    config = gateway_pb2.JobConfig(
        transcription=asr_pb2.TranscriptionOptions(beam_size=5, batch_size=8, language_code="en"),
        skip_alignment=skip_alignment,
        skip_coverage_check=skip_coverage_check,
    )
    pids = {name: process.pid for name, process in suite.processes.items()}
    before = {name: cpu_seconds(pid) for name, pid in pids.items()}
    started = time.perf_counter()
    job = gateway.CreateJob(gateway_pb2.CreateJobRequest(path=path, config=config))
    for _ in gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id)):
        pass
    wall_s = time.perf_counter() - started
    cpu_s = {name: cpu_seconds(pid) - before[name] for name, pid in pids.items()}
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
        for record in suite.log_records("gateway")
        if (match := _SECOND_LOOK.fullmatch(str(record.get("event")))) and match[1] == job.job_id
    ]
    return JobCost(
        mode,
        job.job_id,
        wall_s,
        cpu_s,
        len(requests),
        sum(len(request.chunks) for request in requests),
        len(looks),
        sum(int(match[3]) for match in looks),
        sum(int(match[4]) for match in looks),
        word_error_rate(reference, text),
    )


def print_costs(costs: Sequence[JobCost]) -> None:
    names = [name for name, _, _ in SERVICES if name != "diarize"]
    header = f"{'job':<20}{'wall s':>8}" + "".join(f"{name + ' cpu':>12}" for name in names)
    print(header + f"{'calls':>7}{'chunks':>8}{'looks':>7}{'look s':>8}{'found':>7}{'WER':>8}")
    for cost in costs:
        print(
            f"{cost.mode:<20}{cost.wall_s:>8.1f}"
            + "".join(f"{cost.cpu_s.get(name, 0.0):>12.1f}" for name in names)
            + f"{cost.transcribe_calls:>7}{cost.chunks_sent:>8}{cost.second_looks:>7}"
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
    costs: list[JobCost] = []
    try:
        with grpc.insecure_channel(suite.target("gateway")) as channel:
            gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
            # A first job warms every service (models, caches, malloc's kept buffers).
            run_job(suite, gateway, "neither", audio_path.name, media.reference_text)
            for _ in range(options.rounds):
                for mode in options.modes:
                    costs.append(run_job(suite, gateway, mode, audio_path.name, media.reference_text))
                    print_costs(costs[-1:])
        print()
        print_costs(costs)
        unchecked = [cost for cost in costs if cost.mode == "no coverage check"]
        if options.windows and unchecked:
            print()
            print_windows(workdir / "data" / "jobs.sqlite3", unchecked[-1].job_id, media)
    finally:
        suite.stop()
        if options.keep is None:
            shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()

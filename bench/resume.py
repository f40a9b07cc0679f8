"""Resume benchmark (`python -m bench.resume`).

Transcribes a recording of real speech (default 10 minutes, Debian's
Asterisk prompts strung together) through the suite, kills the gateway with
SIGKILL when transcription is at a given fraction (default 80 %), starts it
again on the same port and data directory, and times the resumed job to
SUCCEEDED. Prints:

- how long the resume took, from the new gateway's start and from its
  readiness, next to how long the same stretch took a job nobody disturbed
  (from the same fraction of transcription to SUCCEEDED);
- what the checkpoint gave the resumed job (audio reused, detection reused,
  chunks transcribed and aligned);
- how many chunks were asked of the ASR again (read from the ASR's logs),
  split into those whose call was in flight at the kill (their answers lost,
  expected) and any others (expected 0);
- whether the transcript equals the undisturbed job's.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import grpc
from google.protobuf.duration_pb2 import Duration

from bench.machine import print_machine_line
from gateway.records import JobState
from gateway.store.job_store import JobStore
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from subtitler.vad.v1 import vad_pb2
from tests.speech import SAMPLE_RATE_HERTZ, build_long_recording, write_wav
from tools.asr_log import asr_requests, requested_chunks
from tools.suite import Suite


def transcribe_fraction(event: gateway_pb2.JobEvent) -> float:
    if event.HasField("stage_progress") and event.stage_progress.stage == gateway_pb2.STAGE_TRANSCRIBE:
        return event.stage_progress.fraction
    return 0.0


def wait_finished(gateway: gateway_pb2_grpc.GatewayServiceStub, job_id: str, timeout_s: float) -> gateway_pb2.Job:
    deadline = time.monotonic() + timeout_s
    while True:
        job = gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job_id), wait_for_ready=True, timeout=30)
        if JobState(job.state).finished:
            if job.state != gateway_pb2.JOB_STATE_SUCCEEDED:
                raise RuntimeError(f"job {job_id} ended {gateway_pb2.JobState.Name(job.state)}: {job.error}")
            return job
        if time.monotonic() > deadline:
            raise TimeoutError(f"job {job_id} not finished in {timeout_s} s")
        time.sleep(0.05)


def text_of(gateway: gateway_pb2_grpc.GatewayServiceStub, job_id: str) -> str:
    request = gateway_pb2.GetResultRequest(job_id=job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
    return gateway.GetResult(request, wait_for_ready=True, timeout=60).content


@dataclass
class Undisturbed:
    total_s: float
    # From the first event at or past the kill fraction to SUCCEEDED.
    tail_s: float
    text: str


def run_undisturbed(
    gateway: gateway_pb2_grpc.GatewayServiceStub, request: gateway_pb2.CreateJobRequest, kill_at: float
) -> Undisturbed:
    started = time.monotonic()
    job_id = gateway.CreateJob(request).job_id
    reached = float("nan")
    for event in gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id)):
        if reached != reached and transcribe_fraction(event) >= kill_at:
            reached = time.monotonic()
    wait_finished(gateway, job_id, 60)
    ended = time.monotonic()
    return Undisturbed(ended - started, ended - reached, text_of(gateway, job_id))


@dataclass
class Resumed:
    killed_at_fraction: float
    restart_to_serving_s: float
    restart_to_done_s: float
    serving_to_done_s: float
    summary: gateway_pb2.ResumeSummary
    chunk_count: int
    stored_at_kill: int
    in_flight_at_kill: set[int]
    asked_again: set[int]
    text: str


def run_killed(
    suite: Suite,
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    request: gateway_pb2.CreateJobRequest,
    kill_at: float,
    data_dir: Path,
) -> Resumed:
    job_id = gateway.CreateJob(request).job_id
    call = gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id))
    fraction = 0.0
    for event in call:
        fraction = transcribe_fraction(event)
        if fraction >= kill_at:
            break
    suite.kill("gateway")
    call.cancel()
    store = JobStore(data_dir / "jobs.sqlite3")
    try:
        stored = set(store.checkpoint(job_id).transcripts)
    finally:
        store.close()
    asked_before = set(requested_chunks(asr_requests(suite, job_id)))

    restarted = time.monotonic()
    suite.restart("gateway")
    serving = time.monotonic()
    wait_finished(gateway, job_id, 3600)
    done = time.monotonic()

    events = list(gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), wait_for_ready=True, timeout=60))
    (summary,) = [event.resumed for event in events if event.HasField("resumed")]
    chunk_count = max(event.stage_progress.total_count for event in events if event.HasField("stage_progress"))
    counts = requested_chunks(asr_requests(suite, job_id))
    return Resumed(
        killed_at_fraction=fraction,
        restart_to_serving_s=serving - restarted,
        restart_to_done_s=done - restarted,
        serving_to_done_s=done - serving,
        summary=summary,
        chunk_count=chunk_count,
        stored_at_kill=len(stored),
        in_flight_at_kill=asked_before - stored,
        asked_again={index for index, count in counts.items() if count > 1},
        text=text_of(gateway, job_id),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="length of the recording")
    parser.add_argument("--kill-at", type=float, default=0.8, help="fraction of transcription at which to kill")
    parser.add_argument("--batch-size", type=int, default=8, help="chunks per ASR call (the gateway's default)")
    parser.add_argument("--max-chunk-s", type=int, default=30, help="longest speech chunk (the VAD's default)")
    parser.add_argument("--no-baseline", action="store_true", help="skip the undisturbed job")
    options = parser.parse_args()
    print_machine_line()

    with tempfile.TemporaryDirectory(prefix="subtitler-bench-resume-") as tmp:
        workdir = Path(tmp)
        data_dir = workdir / "data"
        media = workdir / "media"
        media.mkdir()
        recording = build_long_recording(min_duration_s=options.minutes * 60, gap_s=1.0, shuffle_seed=7)
        audio_path = write_wav(media / "long.wav", recording.samples)
        audio_s = recording.samples.size / SAMPLE_RATE_HERTZ
        suite = Suite(
            logs_dir=workdir / "logs",
            run_dir=workdir / "run",
            ports={},
            extra_env={
                "SUBTITLER_AUDIO_MEDIA_ROOT": str(media),
                "SUBTITLER_GATEWAY_DATA_DIR": str(data_dir),
                "SUBTITLER_GATEWAY_ASR_BATCH_SIZE": str(options.batch_size),
                "SUBTITLER_LOG_LEVEL": "INFO",  # the ASR's "transcribing chunks" lines
            },
        )
        request = gateway_pb2.CreateJobRequest(
            path=audio_path.name,
            config=gateway_pb2.JobConfig(
                transcription=asr_pb2.TranscriptionOptions(language_code="en"),
                speech_detection=vad_pb2.VadOptions(max_chunk_duration=Duration(seconds=options.max_chunk_s)),
            ),
        )
        print(
            f"audio: {audio_s:.1f} s of speech prompts; model tiny.en; ASR batches of {options.batch_size} chunks"
            f" of at most {options.max_chunk_s} s; gateway killed (SIGKILL) at {options.kill_at:.0%} of transcription"
        )
        suite.start()
        try:
            with grpc.insecure_channel(suite.target("gateway")) as channel:
                gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
                baseline = None if options.no_baseline else run_undisturbed(gateway, request, options.kill_at)
                resumed = run_killed(suite, gateway, request, options.kill_at, data_dir)
        finally:
            suite.stop()

    print()
    if baseline is not None:
        print(f"undisturbed job: {baseline.total_s:.1f} s in all; {baseline.tail_s:.1f} s from the kill point on")
    print(f"killed at {resumed.killed_at_fraction:.0%} of transcription")
    print(f"gateway restart to SERVING:   {resumed.restart_to_serving_s:6.2f} s")
    print(f"gateway restart to SUCCEEDED: {resumed.restart_to_done_s:6.2f} s")
    print(f"SERVING to SUCCEEDED:         {resumed.serving_to_done_s:6.2f} s")
    if baseline is not None:
        print(f"resume overhead over the undisturbed tail: {resumed.restart_to_done_s - baseline.tail_s:+.2f} s")
    summary = resumed.summary
    print(
        f"checkpoint: audio reused {summary.audio_reused}, detection reused {summary.detection_reused}, "
        f"{summary.transcribed_chunk_count}/{resumed.chunk_count} chunks transcribed, "
        f"{summary.aligned_chunk_count} aligned"
    )
    unexpected = resumed.asked_again - resumed.in_flight_at_kill
    print(
        f"chunks asked of the ASR again: {len(resumed.asked_again)} "
        f"(in flight at the kill: {len(resumed.in_flight_at_kill)} {sorted(resumed.in_flight_at_kill)}; "
        f"others: {len(unexpected)} {sorted(unexpected)})"
    )
    if baseline is not None:
        print(f"transcript equals the undisturbed one: {resumed.text == baseline.text}")


if __name__ == "__main__":
    main()

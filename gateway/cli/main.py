"""Command-line client of the gateway.

    python -m gateway.cli transcribe talk.mp4 -o talk.srt [--format vtt] [--language fr] [--model ...]
    python -m gateway.cli transcribe a.mp4 b.mp4 clips/ 'more/*.wav' --output-dir subs/ [options as above]
    python -m gateway.cli jobs | status JOB | watch JOB | result JOB -o out.vtt | cancel JOB | system

`transcribe` uploads the file (or, with --server-path, names a file on the
audio service's host), shows a progress bar fed by the job's event stream,
writes the result, and exits non-zero with the server's message on error.
Several files, a folder or a pattern go to gateway.cli.batch, which sends them
all at once and writes each output into --output-dir as it is done.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, TextIO

import grpc

from common.config import ConfigError
from common.limits import UPLOAD_CHUNK_BYTES
from common.rpc.convert import duration_to_seconds, seconds_to_duration
from common.rpc.tls import TlsConfig
from gateway.cli import live as live_cli
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.diarize.v1 import diarize_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from subtitler.status.v1 import status_pb2, status_pb2_grpc
from subtitler.vad.v1 import vad_pb2

# "srt", "vtt", "json", "text", "ass", "rttm": the proto's enum without its prefix.
FORMATS = {
    name.removeprefix("RESULT_FORMAT_").lower(): value
    for name, value in gateway_pb2.ResultFormat.items()
    if value != gateway_pb2.RESULT_FORMAT_UNSPECIFIED
}
# Times a broken watch stream is picked up again before giving up.
MAX_WATCH_RECONNECTS = 8
# The --profile choices (the gateway's profiles: gateway/api/profiles.py).
PROFILE_NAMES: dict[str, gateway_pb2.Profile.ValueType] = {
    "fast": gateway_pb2.PROFILE_FAST,
    "balanced": gateway_pb2.PROFILE_BALANCED,
    "accurate": gateway_pb2.PROFILE_ACCURATE,
}
MAX_FIRST_CONNECT_TRIES = 2
EXTENSIONS = {"srt": ".srt", "vtt": ".vtt", "json": ".json", "text": ".txt", "ass": ".ass", "rttm": ".rttm"}
ALIGN_METHODS = {
    "auto": align_pb2.ALIGN_METHOD_UNSPECIFIED,
    "cross-attention": align_pb2.ALIGN_METHOD_CROSS_ATTENTION,
    "phonetic": align_pb2.ALIGN_METHOD_PHONETIC,
}
CHUNKING_METHODS = {
    "pack": vad_pb2.CHUNKING_METHOD_PACK,
    "merge": vad_pb2.CHUNKING_METHOD_MERGE,
}
STAGE_NAMES = {
    gateway_pb2.STAGE_UNSPECIFIED: "",
    gateway_pb2.STAGE_DECODE: "decode",
    gateway_pb2.STAGE_DETECT_SPEECH: "detect speech",
    gateway_pb2.STAGE_TRANSCRIBE: "transcribe",
    gateway_pb2.STAGE_ALIGN: "align",
    gateway_pb2.STAGE_DIARIZE: "speakers",
}


class BearerToken(
    grpc.UnaryUnaryClientInterceptor,
    grpc.UnaryStreamClientInterceptor,
    grpc.StreamUnaryClientInterceptor,
    grpc.StreamStreamClientInterceptor,
):
    """Adds `authorization: Bearer <token>` to every call."""

    def __init__(self, token: str) -> None:
        self._metadata = ("authorization", f"Bearer {token}")

    def _with_token(self, details: grpc.ClientCallDetails) -> grpc.ClientCallDetails:
        metadata = [*(details.metadata or ()), self._metadata]
        return details._replace(metadata=metadata)

    def intercept_unary_unary(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_unary_stream(self, continuation: Any, details: grpc.ClientCallDetails, request: Any) -> Any:
        return continuation(self._with_token(details), request)

    def intercept_stream_unary(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)

    def intercept_stream_stream(self, continuation: Any, details: grpc.ClientCallDetails, requests: Any) -> Any:
        return continuation(self._with_token(details), requests)


class CliError(Exception):
    """An error to print and exit 1 with."""


def build_config(options: argparse.Namespace) -> gateway_pb2.JobConfig:
    transcription = asr_pb2.TranscriptionOptions(
        model=options.model or "",
        language_code=options.language or "",
        task=asr_pb2.TASK_TRANSLATE if options.translate else asr_pb2.TASK_TRANSCRIBE,
        beam_size=options.beam_size or 0,
        batch_size=options.batch_size or 0,
        initial_prompt=options.initial_prompt or "",
        hotwords=options.hotwords or "",
    )
    speech_detection = vad_pb2.VadOptions(
        threshold=options.vad_threshold or 0.0, chunking=CHUNKING_METHODS[options.chunking]
    )
    if options.max_chunk_s:
        speech_detection.max_chunk_duration.CopyFrom(seconds_to_duration(options.max_chunk_s))
    return gateway_pb2.JobConfig(
        transcription=transcription,
        speech_detection=speech_detection,
        align_method=ALIGN_METHODS[options.align_method],
        skip_alignment=options.no_align,
        skip_coverage_check=options.no_coverage_check,
        profile=PROFILE_NAMES[options.profile],
        subtitles=subtitle_rules(options),
        diarization=gateway_pb2.DiarizationOptions(
            enabled=options.diarize or bool(options.num_speakers or options.min_speakers or options.max_speakers),
            speakers=diarize_pb2.SpeakerCount(
                exactly=options.num_speakers or 0, min=options.min_speakers or 0, max=options.max_speakers or 0
            ),
        ),
    )


SUBTITLE_PRESETS = {
    "netflix": gateway_pb2.SUBTITLE_PRESET_NETFLIX,
    "bbc": gateway_pb2.SUBTITLE_PRESET_BBC,
    "short-video": gateway_pb2.SUBTITLE_PRESET_SHORT_VIDEO,
}


def add_subtitle_arguments(command: argparse.ArgumentParser) -> None:
    rules = command.add_argument_group("subtitle rules (default: the netflix preset)")
    rules.add_argument("--preset", choices=sorted(SUBTITLE_PRESETS), help="netflix, bbc or short-video")
    rules.add_argument("--max-line-chars", type=int, help="line width (a CJK character counts as two)")
    rules.add_argument("--max-lines", type=int, help="lines a cue")
    rules.add_argument("--min-duration-s", type=float, help="shortest cue")
    rules.add_argument("--max-duration-s", type=float, help="longest cue")
    rules.add_argument("--min-gap-s", type=float, help="least time between cues (default: 2 frames)")
    rules.add_argument("--max-cps", type=float, help="reading speed, characters a second")
    rules.add_argument("--max-words", type=int, help="words a cue (1: one word a cue)")
    rules.add_argument("--highlight-words", action="store_true", help="VTT: per-word timestamp tags; ASS: karaoke")
    rules.add_argument(
        "--omit-doubtful", action="store_true", help="leave doubtful segments (see the JSON's flags) out of subtitles"
    )


def subtitle_rules(options: argparse.Namespace) -> gateway_pb2.SubtitleOptions:
    rules = gateway_pb2.SubtitleOptions(
        preset=SUBTITLE_PRESETS.get(options.preset or "", gateway_pb2.SUBTITLE_PRESET_UNSPECIFIED),
        max_line_chars=options.max_line_chars or 0,
        max_lines=options.max_lines or 0,
        max_chars_per_second=options.max_cps or 0.0,
        max_words=options.max_words or 0,
        highlight_words=options.highlight_words,
        omit_doubtful=options.omit_doubtful,
    )
    for value, field in (
        (options.min_duration_s, rules.min_cue_duration),
        (options.max_duration_s, rules.max_cue_duration),
        (options.min_gap_s, rules.min_gap),
    ):
        if value is not None:
            field.CopyFrom(seconds_to_duration(value))
    return rules


def subtitle_rules_given(options: argparse.Namespace) -> bool:
    return subtitle_rules(options) != gateway_pb2.SubtitleOptions()


def upload_requests(
    path: Path, config: gateway_pb2.JobConfig, request_id: str = "", priority: int = 0
) -> Iterator[gateway_pb2.UploadMediaRequest]:
    yield gateway_pb2.UploadMediaRequest(
        metadata=gateway_pb2.UploadMetadata(
            file_name=path.name,
            size_bytes=path.stat().st_size,
            config=config,
            request_id=request_id,
            priority=priority,
        )
    )
    with open(path, "rb") as media:
        while block := media.read(UPLOAD_CHUNK_BYTES):
            yield gateway_pb2.UploadMediaRequest(chunk=block)


class ProgressBar:
    """One line redrawn in place on a terminal, never wider than it: the
    bar, the percentage, the stage (or the queue position), the time so far
    and an estimate of the time left, and the end of the latest text, cut
    at a word; a line per stage otherwise."""

    def __init__(self, stream: TextIO, enabled: bool = True) -> None:
        self._stream = stream
        self._enabled = enabled
        self._tty = stream.isatty()
        self._last_stage = ""
        self._last_text = ""
        self._started = time.monotonic()
        self._queue_position = 0

    def update(self, event: gateway_pb2.JobEvent, stage: str) -> None:
        if not self._enabled:
            return
        if event.HasField("segment"):
            self._last_text = event.segment.text.strip()
        if event.WhichOneof("detail") == "queue_position":
            self._queue_position = event.queue_position
        if event.state != gateway_pb2.JOB_STATE_QUEUED:
            self._queue_position = 0
        if self._tty:
            self._stream.write("\r\x1b[K" + self.line(event.progress, stage))
            self._stream.flush()
        elif stage and stage != self._last_stage:
            self._stream.write(f"{event.progress:4.0%} {stage}\n")
            self._stream.flush()
        if stage:
            self._last_stage = stage

    def line(self, progress: float, stage: str, columns: int | None = None) -> str:
        width = (columns or shutil.get_terminal_size((80, 24)).columns) - 1
        elapsed_s = time.monotonic() - self._started
        doing = f"queued, #{self._queue_position}" if self._queue_position else stage
        timing = clock(elapsed_s)
        if 0.05 < progress < 1.0:
            timing += f", ~{clock(elapsed_s * (1 - progress) / progress)} left"
        bar_width = max(10, min(30, width // 4))
        head = f"{bar_text(progress, bar_width)} {doing:<13} {timing}"
        room = width - len(head) - 1
        text = self._last_text
        if room < 8 or not text:
            return head[:width]
        if len(text) > room:
            # The end of the text, from a word's start.
            text = "…" + text[len(text) - room + 1 :].split(" ", 1)[-1]
        return f"{head} {text}"[:width]

    def close(self) -> None:
        if self._enabled and self._tty:
            self._stream.write("\n")
            self._stream.flush()


def bar_text(progress: float, bar_width: int) -> str:
    """[#####-----]  50%: `progress` (0 to 1) as a bar of `bar_width` cells and a percentage."""
    filled = int(progress * bar_width)
    return f"[{'#' * filled}{'-' * (bar_width - filled)}] {progress:4.0%}"


def clock(seconds: float) -> str:
    """m:ss (minutes past 59 go on counting: 75:00)."""
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}:{secs:02d}"


def watch(stub: gateway_pb2_grpc.GatewayServiceStub, job_id: str, bar: ProgressBar) -> gateway_pb2.Job:
    """Follows the job's events to its end. A stream that breaks (the gateway
    restarts) is picked up again after the last event seen."""
    stage = ""
    last_sequence = 0
    reconnects = 0
    while True:
        try:
            request = gateway_pb2.WatchJobRequest(job_id=job_id, after_sequence=last_sequence)
            # Not wait_for_ready: a gateway that is down is retried a few
            # times (it may be restarting), then reported, never waited on for ever.
            for event in stub.WatchJob(request):
                last_sequence = event.sequence
                reconnects = 0
                if event.HasField("stage_progress"):
                    stage = STAGE_NAMES.get(event.stage_progress.stage, "")
                elif event.waiting_reason:
                    stage = "waiting"
                bar.update(event, stage)
            break
        except grpc.RpcError as error:
            # A gateway never reached is reported after a few seconds; one
            # that went away mid-job gets longer to come back.
            limit = MAX_WATCH_RECONNECTS if last_sequence else MAX_FIRST_CONNECT_TRIES
            if error.code() != grpc.StatusCode.UNAVAILABLE or reconnects >= limit:
                raise
            reconnects += 1
            time.sleep(min(5.0, 0.5 * 2**reconnects))
    bar.close()
    return stub.GetJob(gateway_pb2.GetJobRequest(job_id=job_id), wait_for_ready=True, timeout=60)


def write_output(content: str, output: str) -> None:
    if output == "-":
        sys.stdout.write(content)
        return
    target = Path(output)
    tmp = target.with_name(f".{target.name}.tmp")
    tmp.write_text(content, encoding="utf-8")
    tmp.replace(target)


def finish(
    stub: gateway_pb2_grpc.GatewayServiceStub,
    job: gateway_pb2.Job,
    fmt: str,
    output: str,
    rules: gateway_pb2.SubtitleOptions | None = None,
) -> int:
    if job.state != gateway_pb2.JOB_STATE_SUCCEEDED:
        state = gateway_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
        if job.HasField("error"):
            raise CliError(f"job {job.job_id} {state}: {job.error.code}: {job.error.message}")
        raise CliError(f"job {job.job_id} {state}")
    request = gateway_pb2.GetResultRequest(job_id=job.job_id, format=FORMATS[fmt])
    if rules is not None:
        request.subtitles.CopyFrom(rules)
    result = stub.GetResult(request)
    write_output(result.content, output)
    if output != "-":
        audio_s = duration_to_seconds(job.audio_duration)
        took_s = duration_to_seconds(job.processing_duration)
        print(
            f"wrote {output}: {len(result.segments)} segments, {audio_s:.1f} s of audio"
            f" ({result.language_code or 'unknown language'}) in {took_s:.1f} s",
            file=sys.stderr,
        )
    return 0


class UsageError(CliError):
    """A mistake in the command line, found before any work (exit code 2)."""


def check_output(output: str) -> None:
    """Refuses, before anything is uploaded, an output the result could not be written to."""
    if output == "-":
        return
    target = Path(output)
    if target.is_dir():
        raise UsageError(f"-o {output}: is a directory; name a file")
    parent = target.parent
    if not parent.is_dir():
        raise UsageError(f"-o {output}: the directory {parent} does not exist")
    if not os.access(parent, os.W_OK) or (target.exists() and not os.access(target, os.W_OK)):
        raise UsageError(f"-o {output}: cannot write there (permission denied or a read-only file system)")


def transcribe(stub: gateway_pb2_grpc.GatewayServiceStub, options: argparse.Namespace) -> int:
    config = build_config(options)
    [source] = options.files
    output = options.output or str(Path(Path(source).name).with_suffix(EXTENSIONS[options.format]))
    check_output(output)
    if options.server_path:
        job = stub.CreateJob(
            gateway_pb2.CreateJobRequest(
                path=source, config=config, request_id=options.request_id or "", priority=options.priority
            )
        )
    else:
        path = Path(source)
        if not path.is_file():
            raise CliError(f"no such file: {path}")
        job = stub.UploadMedia(upload_requests(path, config, options.request_id or "", options.priority))
    print(f"job {job.job_id}", file=sys.stderr)
    bar = ProgressBar(sys.stderr, enabled=not options.quiet)
    job = watch(stub, job.job_id, bar)
    return finish(stub, job, options.format, output)


def describe(job: gateway_pb2.Job) -> str:
    state = gateway_pb2.JobState.Name(job.state).removeprefix("JOB_STATE_").lower()
    line = (
        f"{job.job_id}  {state:<9} {job.progress:4.0%}  {duration_to_seconds(job.audio_duration):7.1f} s  {job.source}"
    )
    if job.HasField("error"):
        line += f"  [{job.error.code}: {job.error.message}]"
    return line


def describe_status(status: status_pb2.GetStatusResponse) -> list[str]:
    """A service's status as lines for a terminal."""
    lines = [
        f"{status.service_name} (version {status.version}, up {status.uptime_s:.0f} s): "
        f"capacity {status.capacity}, running {status.running}, queued {status.queued}"
        + (f", preferred batch {status.preferred_batch_size}" if status.preferred_batch_size else "")
    ]
    lines += [f"  {key}: {value}" for key, value in sorted(status.hardware.items())]
    lines += [f"  warning: {warning}" for warning in status.hardware_warnings]
    lines.append(f"  CPU affinity: {status.cpu_affinity or 'not pinned'} ({status.cpu_affinity_message})")
    lines += [f"  {setting.name}={setting.value}  [{setting.source}]" for setting in status.settings]
    if status.loaded_models:
        lines.append(f"  models loaded: {', '.join(status.loaded_models)}")
    if status.HasField("measured_capacity"):
        lines.append(f"  measured: {describe_measured(status.measured_capacity)}")
    if status.queue_wait_s:
        lines.append(f"  a job submitted now waits about {status.queue_wait_s:.0f} s for its turn")
    return lines


def describe_measured(measured: status_pb2.MeasuredCapacity) -> str:
    """What a service measured it gets through, as one line."""
    parts = []
    if measured.audio_seconds_per_second:
        parts.append(f"{measured.audio_seconds_per_second:.1f} s of a file's audio a second")
    if measured.live_decode_s:
        parts.append(f"{measured.live_decode_s:.3f} s a live decode")
    if measured.live_streams:
        parts.append(f"{measured.live_streams} live streams held")
    return f"{', '.join(parts) or 'nothing yet'} ({measured.source or 'not measured yet'})"


def system(channel: grpc.Channel) -> int:
    """Prints what every service detected and chose."""
    reply = status_pb2_grpc.StatusServiceStub(channel).GetStatus(
        status_pb2.GetStatusRequest(include_peers=True), timeout=10
    )
    for status in (reply, *reply.peers):
        print("\n".join(describe_status(status)))
    for unreachable in reply.unreachable_peers:
        print(f"unreachable: {unreachable}")
    return 0 if not reply.unreachable_peers else 1


def gateway_credentials(ca_file: str) -> grpc.ChannelCredentials | None:
    """TLS credentials verified against `ca_file` (with SUBTITLER_TLS_CLIENT_CERT_FILE
    / _KEY_FILE presented if set); None without one: plaintext."""
    if not ca_file:
        return None
    try:
        credentials = TlsConfig.from_env(
            {**os.environ, "SUBTITLER_TLS_CA_FILE": ca_file}, "SUBTITLER_CLI_"
        ).channel_credentials()
    except ConfigError as error:
        raise SystemExit(f"error: {error}") from None
    assert credentials is not None
    return credentials


def open_gateway_channel(address: str, ca_file: str) -> grpc.Channel:
    """A channel to the gateway: TLS when `ca_file` is given (see gateway_credentials), else plaintext."""
    credentials = gateway_credentials(ca_file)
    return grpc.insecure_channel(address) if credentials is None else grpc.secure_channel(address, credentials)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m gateway.cli", description=__doc__.split("\n\n")[0])
    _add_gateway_arguments(root)
    commands = root.add_subparsers(dest="command", required=True)
    run = commands.add_parser("transcribe", help="transcribe media files and write subtitles")
    _add_file_arguments(run)
    _add_transcription_arguments(run)
    _add_speaker_arguments(run)
    _add_request_arguments(run)
    add_subtitle_arguments(run)
    _add_job_commands(commands)
    return root


def _add_gateway_arguments(root: argparse.ArgumentParser) -> None:
    """Where the gateway is and how to reach it: address, TLS CA, token."""
    root.add_argument(
        "--gateway",
        default=os.environ.get("SUBTITLER_GATEWAY", "localhost:50051"),
        help="gateway address, host:port (default: $SUBTITLER_GATEWAY or %(default)s)",
    )
    root.add_argument(
        "--tls-ca",
        default=os.environ.get("SUBTITLER_TLS_CA_FILE", ""),
        help="CA certificate (PEM) to reach a gateway over TLS (default: $SUBTITLER_TLS_CA_FILE; unset: plaintext)",
    )
    root.add_argument(
        "--token",
        default=os.environ.get("SUBTITLER_TOKEN", ""),
        help="bearer token, when the gateway has SUBTITLER_GATEWAY_TOKENS_FILE (default: $SUBTITLER_TOKEN)",
    )


def _add_file_arguments(run: argparse.ArgumentParser) -> None:
    """transcribe: the files, where the output goes and in what format."""
    run.add_argument(
        "files",
        nargs="+",
        metavar="FILE",
        help="local file to upload (or, with --server-path, a path on the audio service's host); several files,"
        " a folder (its media files) or a quoted glob pattern ('clips/*.wav') need --output-dir",
    )
    run.add_argument(
        "-o", "--output", help="output file; '-' for stdout; default: the file name with the format's extension"
    )
    run.add_argument(
        "--output-dir",
        metavar="DIR",
        help="write each file's output here, named after it (talk.mp4 -> DIR/talk.srt); all files are sent at once",
    )
    run.add_argument("-f", "--format", choices=sorted(FORMATS), default="srt")
    run.add_argument("--server-path", action="store_true", help="FILE is a path on the server; do not upload it")


def _add_transcription_arguments(run: argparse.ArgumentParser) -> None:
    """transcribe: language, model, decoding, chunking, profile and alignment."""
    run.add_argument("--language", help="BCP-47 language code (default: detect)")
    run.add_argument("--model", help="Whisper model: embedded:tiny.en (default), embedded:base, a name or a path")
    run.add_argument("--translate", action="store_true", help="translate to English")
    run.add_argument("--beam-size", type=int)
    run.add_argument("--batch-size", type=int)
    run.add_argument("--initial-prompt")
    run.add_argument("--hotwords")
    run.add_argument("--vad-threshold", type=float)
    run.add_argument("--max-chunk-s", type=float, help="longest speech chunk, at most 30 s")
    run.add_argument(
        "--chunking",
        choices=list(CHUNKING_METHODS),
        default="pack",
        help="pack: up to 30 s of speech a chunk, the silences cut out (faster-whisper's);"
        " merge: chunks spanning at most 30 s of the audio (WhisperX's) (default: %(default)s)",
    )
    run.add_argument(
        "--profile",
        choices=list(PROFILE_NAMES),
        default="balanced",
        help="speed/quality preset: fast (beam 1), balanced (beam 5), accurate (base model, phonetic English words);"
        " options given explicitly override it (default: %(default)s)",
    )
    run.add_argument("--align-method", choices=sorted(ALIGN_METHODS), default="auto")
    run.add_argument("--no-align", action="store_true", help="skip word alignment")
    run.add_argument(
        "--no-coverage-check",
        action="store_true",
        help="leave detected speech that got no words as it is (by default it is transcribed once more on its own)",
    )


def _add_speaker_arguments(run: argparse.ArgumentParser) -> None:
    """transcribe: diarization (who spoke when)."""
    speakers = run.add_argument_group("speakers (diarization: who spoke when)")
    speakers.add_argument("--diarize", action="store_true", help="name each segment's speaker (SPEAKER_00, ...)")
    speakers.add_argument("--num-speakers", type=int, help="exactly this many speakers (implies --diarize)")
    speakers.add_argument("--min-speakers", type=int, help="at least this many (implies --diarize)")
    speakers.add_argument("--max-speakers", type=int, help="at most this many (implies --diarize)")


def _add_request_arguments(run: argparse.ArgumentParser) -> None:
    """transcribe: priority, idempotency and progress display."""
    run.add_argument("--priority", type=int, default=0, help="higher runs first (-100 to 100)")
    run.add_argument(
        "--request-id",
        help="makes the request idempotent: a repeat returns the first job (in a batch, each file's id is"
        " REQUEST_ID/ and a hash of its path)",
    )
    run.add_argument("-q", "--quiet", action="store_true", help="no progress bar (a batch still lists its failures)")


def _add_job_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """The other commands: live, jobs, system, status, watch, cancel and result."""
    live_cli.add_parser(commands)
    commands.add_parser("jobs", help="list jobs, newest first")
    commands.add_parser("system", help="what every service detected about its machine and the settings it chose")
    for name, text in (("status", "show a job"), ("watch", "follow a job's progress"), ("cancel", "cancel a job")):
        commands.add_parser(name, help=text).add_argument("job_id")
    result = commands.add_parser("result", help="write a succeeded job's result")
    result.add_argument("job_id")
    result.add_argument("-o", "--output", default="-")
    result.add_argument("-f", "--format", choices=sorted(FORMATS), default="srt")
    add_subtitle_arguments(result)


def main(argv: list[str] | None = None) -> int:
    options = parser().parse_args(argv)
    if options.command == "transcribe":
        # Imported here: the batch builds on this module.
        from gateway.cli.batch import command as batch_command

        if batch_command.is_batch(options):
            return batch_command.run(options)
    with open_gateway_channel(options.gateway, options.tls_ca) as plain:
        channel = grpc.intercept_channel(plain, BearerToken(options.token)) if options.token else plain
        stub = gateway_pb2_grpc.GatewayServiceStub(channel)
        try:
            if options.command == "transcribe":
                return transcribe(stub, options)
            if options.command == "live":
                return live_cli.run_live(stub, options)
            if options.command == "system":
                return system(channel)
            if options.command == "jobs":
                for job in stub.ListJobs(gateway_pb2.ListJobsRequest()).jobs:
                    print(describe(job))
                return 0
            if options.command == "status":
                print(describe(stub.GetJob(gateway_pb2.GetJobRequest(job_id=options.job_id))))
                return 0
            if options.command == "watch":
                job = watch(stub, options.job_id, ProgressBar(sys.stderr))
                print(describe(job))
                return 0 if job.state == gateway_pb2.JOB_STATE_SUCCEEDED else 1
            if options.command == "cancel":
                print(describe(stub.CancelJob(gateway_pb2.CancelJobRequest(job_id=options.job_id))))
                return 0
            job = stub.GetJob(gateway_pb2.GetJobRequest(job_id=options.job_id))
            # Other rules than the job's: laid out again, no model runs.
            rules = subtitle_rules(options) if subtitle_rules_given(options) else None
            return finish(stub, job, options.format, options.output, rules)
        except grpc.RpcError as error:
            code = error.code().name if hasattr(error, "code") else "UNKNOWN"
            details = error.details() if hasattr(error, "details") else str(error)
            if code == "UNAVAILABLE":
                details = f"cannot reach the gateway at {options.gateway} ({details}); is `make run` running?"
            print(f"error: {code}: {details}", file=sys.stderr)
            return 1
        except UsageError as error:
            print(f"error: {error}", file=sys.stderr)
            return 2
        except (CliError, live_cli.LiveError) as error:
            print(f"error: {error}", file=sys.stderr)
            return 1
        except KeyboardInterrupt:
            if options.command == "live":
                print("\ninterrupted; the stream is closed", file=sys.stderr)
                return 130
            print("\ninterrupted; the job goes on in the gateway (cancel it with `cancel JOB`)", file=sys.stderr)
            return 130


if __name__ == "__main__":
    sys.exit(main())

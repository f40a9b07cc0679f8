"""The command line: its arguments, the choices they take, and the job config
and subtitle rules they make."""
from __future__ import annotations

import argparse
import os

from common.rpc.convert import seconds_to_duration
from gateway.cli import live as live_cli
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.diarize.v1 import diarize_pb2
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2

# "srt", "vtt", "json", "text", "ass", "rttm": the proto's enum without its prefix.
FORMATS = {
    name.removeprefix("RESULT_FORMAT_").lower(): value
    for name, value in gateway_pb2.ResultFormat.items()
    if value != gateway_pb2.RESULT_FORMAT_UNSPECIFIED
}


# The --profile choices (the gateway's profiles: gateway/api/profiles.py).
PROFILE_NAMES: dict[str, gateway_pb2.Profile.ValueType] = {
    "fast": gateway_pb2.PROFILE_FAST,
    "balanced": gateway_pb2.PROFILE_BALANCED,
    "accurate": gateway_pb2.PROFILE_ACCURATE,
}


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


class UsageError(CliError):
    """A mistake in the command line, found before any work (exit code 2)."""


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="python -m gateway.cli", description="Command-line client of the gateway.")
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

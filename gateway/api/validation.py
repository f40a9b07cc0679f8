"""Checks of a job's configuration that the gateway can make at once, so a
bad request is refused when it is made rather than failing the job later.
The stage services check everything again."""

from __future__ import annotations

import math
import re
import unicodedata

from common.errors import InvalidInputError, NotFoundError
from common.limits import (
    DEFAULT_BEAM_SIZE,
    DEFAULT_MAX_BATCH_SIZE,
    LIVE_MAX_MIN_SILENCE_S,
    MAX_BEAM_SIZE,
    MAX_CHUNK_DURATION_S,
    MAX_SPEAKERS,
    MAX_TEMPERATURE,
    VAD_FRAME_S,
)
from common.rpc.convert import duration_to_seconds
from common.speech.languages import WHISPER_LANGUAGES, to_whisper_language
from gateway.output.subtitle_config import subtitle_options
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2

# Speech chunks: at most Whisper's window, at least long enough to hold a word.
MIN_CHUNK_S = 1.0
# Silence and speech lengths of the VAD options, and the padding around speech.
MAX_VAD_DURATION_S = 30.0
MAX_SPEECH_PAD_S = 5.0
DEFAULT_SPEECH_PAD_S = 0.4


def validate_job_config(config: gateway_pb2.JobConfig) -> None:
    """Raises InvalidInputError or NotFoundError for a config no service would accept."""
    validate_transcription(config.transcription)
    _validate_vad(config.speech_detection)
    _validate_job_choices(config)
    _validate_speakers(config.diarization)


def _validate_speakers(diarization: gateway_pb2.DiarizationOptions) -> None:
    speakers = diarization.speakers
    for name, value in (("exactly", speakers.exactly), ("min", speakers.min), ("max", speakers.max)):
        if not 0 <= value <= MAX_SPEAKERS:
            raise InvalidInputError(f"diarization speakers.{name} {value} must be between 0 and {MAX_SPEAKERS}")
    if speakers.min and speakers.max and speakers.min > speakers.max:
        raise InvalidInputError(f"diarization speakers.min {speakers.min} is over speakers.max {speakers.max}")
    if speakers.exactly and (speakers.min or speakers.max):
        raise InvalidInputError("diarization: give speakers.exactly, or speakers.min / speakers.max, not both")


def validate_transcription(transcription: asr_pb2.TranscriptionOptions) -> None:
    """Raises InvalidInputError or NotFoundError for transcription options no ASR service would accept."""
    if transcription.language_code:
        try:
            to_whisper_language(transcription.language_code, WHISPER_LANGUAGES)
        except NotFoundError:
            raise NotFoundError(
                f"unknown language code {transcription.language_code!r}: use a BCP-47 code of a language Whisper"
                " knows (e.g. en, fr, de, pt-BR), or leave it empty to detect the language"
            ) from None
    if transcription.task not in asr_pb2.Task.values():
        raise InvalidInputError(f"unknown task {transcription.task}")
    if transcription.beam_size < 0 or transcription.beam_size > MAX_BEAM_SIZE:
        raise InvalidInputError(
            f"beam_size {transcription.beam_size} must be between 1 and {MAX_BEAM_SIZE}"
            f" (0: the default, {DEFAULT_BEAM_SIZE})"
        )
    if transcription.batch_size < 0 or transcription.batch_size > DEFAULT_MAX_BATCH_SIZE:
        raise InvalidInputError(
            f"batch_size {transcription.batch_size} must be between 1 and {DEFAULT_MAX_BATCH_SIZE} (0: the default)"
        )
    if not (math.isfinite(transcription.temperature) and 0 <= transcription.temperature <= MAX_TEMPERATURE):
        raise InvalidInputError(f"temperature {transcription.temperature} must be between 0 and {MAX_TEMPERATURE:g}")


def _validate_threshold(threshold: float) -> None:
    if threshold and not 0 < threshold < 1:
        raise InvalidInputError(f"speech detection threshold {threshold} must be between 0 and 1 (exclusive)")
    if threshold != threshold:
        raise InvalidInputError("speech detection threshold is not a number")


def validate_live_vad(vad: vad_pb2.LiveVadOptions) -> None:
    """The live VAD options of a stream, as the VAD service checks them."""
    _validate_threshold(vad.threshold)
    silence_s = duration_to_seconds(vad.min_silence_duration)
    if not 0 <= silence_s <= LIVE_MAX_MIN_SILENCE_S:
        raise InvalidInputError(
            f"min_silence_duration {silence_s:g} s must be between 0 and {LIVE_MAX_MIN_SILENCE_S:g} s"
        )


def _validate_vad(vad: vad_pb2.VadOptions) -> None:
    _validate_threshold(vad.threshold)
    if vad.chunking not in vad_pb2.ChunkingMethod.values():
        raise InvalidInputError(f"unknown chunking method {vad.chunking}: use PACK or MERGE")
    max_chunk_s = duration_to_seconds(vad.max_chunk_duration)
    # As the VAD service reads them: a zero duration takes the default.
    if max_chunk_s and not MIN_CHUNK_S <= max_chunk_s <= MAX_CHUNK_DURATION_S:
        raise InvalidInputError(
            f"max_chunk_duration {max_chunk_s:g} s must be between {MIN_CHUNK_S:g} s and {MAX_CHUNK_DURATION_S:g} s"
            " (Whisper's window)"
        )
    for name, limit_s in (
        ("min_silence_duration", MAX_VAD_DURATION_S),
        ("speech_pad", MAX_SPEECH_PAD_S),
        ("min_speech_duration", MAX_VAD_DURATION_S),
    ):
        value_s = duration_to_seconds(getattr(vad, name))
        if not 0 <= value_s <= limit_s:
            raise InvalidInputError(f"{name} {value_s:g} s must be between 0 and {limit_s:g} s")
    pad_s = duration_to_seconds(vad.speech_pad) or DEFAULT_SPEECH_PAD_S
    chunk_s = max_chunk_s or MAX_CHUNK_DURATION_S
    if 2 * pad_s + VAD_FRAME_S >= chunk_s:
        raise InvalidInputError(
            f"speech_pad {pad_s:g} s on both sides leaves no room for speech in chunks of {chunk_s:g} s"
        )


def _validate_job_choices(config: gateway_pb2.JobConfig) -> None:
    subtitle_options(config.subtitles)
    if config.align_method not in align_pb2.AlignMethod.values():
        raise InvalidInputError(f"unknown align method {config.align_method}")
    if config.profile not in gateway_pb2.Profile.values():
        raise InvalidInputError(f"unknown profile {config.profile}: use fast, balanced or accurate")


MAX_REQUEST_ID_CHARS = 128
# A job id is what the gateway made (a uuid4's 32 hex digits); the bound leaves room, the characters do not.
MAX_JOB_ID_CHARS = 128
_JOB_ID_CHARACTER = re.compile(r"[A-Za-z0-9_-]")
# Longest server-side path accepted (Linux's PATH_MAX).
MAX_PATH_BYTES = 4096
MAX_PRIORITY = 100


def validate_path(path: str) -> None:
    """A server-side path: bounded, no NUL (INVALID_ARGUMENT)."""
    if len(path.encode()) > MAX_PATH_BYTES:
        raise InvalidInputError(f"path is {len(path.encode())} bytes long; at most {MAX_PATH_BYTES}")
    if "\x00" in path:
        raise InvalidInputError("path contains a NUL character")


def validate_job_id(job_id: str) -> None:
    """A job id as the gateway makes them (INVALID_ARGUMENT otherwise); the
    message never echoes the id, which may be megabytes."""
    rule = (
        f"job id must be 1 to {MAX_JOB_ID_CHARS} letters, digits, '-' or '_': "
        "the job_id CreateJob or UploadMedia returned"
    )
    if not job_id:
        raise InvalidInputError(f"{rule}; it is empty")
    if len(job_id) > MAX_JOB_ID_CHARS:
        raise InvalidInputError(f"{rule}; it is {len(job_id)} characters long")
    bad = next((character for character in job_id if not _JOB_ID_CHARACTER.fullmatch(character)), None)
    if bad is not None:
        raise InvalidInputError(f"{rule}; it has the character U+{ord(bad):04X} at position {job_id.index(bad)}")


def validate_request_id(request_id: str) -> None:
    """A client's idempotency key: bounded, no control characters (a NUL is
    more than PostgreSQL's text takes)."""
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidInputError(f"request_id is {len(request_id)} characters; at most {MAX_REQUEST_ID_CHARS}")
    for position, character in enumerate(request_id):
        if unicodedata.category(character) == "Cc":
            raise InvalidInputError(
                f"request_id has a control character (U+{ord(character):04X}) at position {position}"
            )


def validate_priority(priority: int) -> None:
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidInputError(f"priority {priority} must be between {-MAX_PRIORITY} and {MAX_PRIORITY}")

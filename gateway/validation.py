"""Checks of a job's configuration that the gateway can make at once, so a
bad request is refused when it is made rather than failing the job later.
The stage services check everything again."""

from __future__ import annotations

from common.convert import duration_to_seconds
from common.errors import InvalidInputError, NotFoundError
from common.languages import WHISPER_LANGUAGES, to_whisper_language
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2

# The ASR service's default SUBTITLER_ASR_MAX_BATCH_SIZE, and its beam limit.
MAX_BATCH_SIZE = 32
MAX_BEAM_SIZE = 16


def validate_job_config(config: gateway_pb2.JobConfig) -> None:
    """Raises InvalidInputError or NotFoundError for a config no service would accept."""
    transcription = config.transcription
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
            f"beam_size {transcription.beam_size} must be between 1 and {MAX_BEAM_SIZE} (0: the default, 5)"
        )
    if transcription.batch_size < 0 or transcription.batch_size > MAX_BATCH_SIZE:
        raise InvalidInputError(
            f"batch_size {transcription.batch_size} must be between 1 and {MAX_BATCH_SIZE} (0: the default)"
        )
    if transcription.temperature < 0 or transcription.temperature > 1:
        raise InvalidInputError(f"temperature {transcription.temperature} must be between 0 and 1")
    vad = config.speech_detection
    if vad.threshold and not 0 < vad.threshold < 1:
        raise InvalidInputError(f"speech detection threshold {vad.threshold} must be between 0 and 1 (exclusive)")
    max_chunk_s = duration_to_seconds(vad.max_chunk_duration)
    if max_chunk_s < 0 or max_chunk_s > 30:
        raise InvalidInputError(f"max_chunk_duration {max_chunk_s} s must be at most 30 s (Whisper's window)")
    for name in ("min_silence_duration", "speech_pad", "min_speech_duration"):
        if duration_to_seconds(getattr(vad, name)) < 0:
            raise InvalidInputError(f"{name} must not be negative")
    if config.align_method not in align_pb2.AlignMethod.values():
        raise InvalidInputError(f"unknown align method {config.align_method}")
    if config.profile not in gateway_pb2.Profile.values():
        raise InvalidInputError(f"unknown profile {config.profile}: use fast, balanced or accurate")


MAX_REQUEST_ID_CHARS = 128
MAX_PRIORITY = 100


def validate_request_id(request_id: str) -> None:
    if len(request_id) > MAX_REQUEST_ID_CHARS:
        raise InvalidInputError(f"request_id is {len(request_id)} characters; at most {MAX_REQUEST_ID_CHARS}")


def validate_priority(priority: int) -> None:
    if not -MAX_PRIORITY <= priority <= MAX_PRIORITY:
        raise InvalidInputError(f"priority {priority} must be between {-MAX_PRIORITY} and {MAX_PRIORITY}")

"""Checks of a job's configuration that the gateway can make at once, so a
bad request is refused when it is made rather than failing the job later.
The stage services check everything again."""

from __future__ import annotations

from common.convert import duration_to_seconds
from common.errors import InvalidInputError, NotFoundError
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2

# The languages Whisper knows (ISO 639-1 where one exists), as faster-whisper's
# tokenizer lists them. Kept here so the gateway needs no model packages.
WHISPER_LANGUAGES = frozenset(
    {
        "af",
        "am",
        "ar",
        "as",
        "az",
        "ba",
        "be",
        "bg",
        "bn",
        "bo",
        "br",
        "bs",
        "ca",
        "cs",
        "cy",
        "da",
        "de",
        "el",
        "en",
        "es",
        "et",
        "eu",
        "fa",
        "fi",
        "fo",
        "fr",
        "gl",
        "gu",
        "ha",
        "haw",
        "he",
        "hi",
        "hr",
        "ht",
        "hu",
        "hy",
        "id",
        "is",
        "it",
        "ja",
        "jw",
        "ka",
        "kk",
        "km",
        "kn",
        "ko",
        "la",
        "lb",
        "ln",
        "lo",
        "lt",
        "lv",
        "mg",
        "mi",
        "mk",
        "ml",
        "mn",
        "mr",
        "ms",
        "mt",
        "my",
        "ne",
        "nl",
        "nn",
        "no",
        "oc",
        "pa",
        "pl",
        "ps",
        "pt",
        "ro",
        "ru",
        "sa",
        "sd",
        "si",
        "sk",
        "sl",
        "sn",
        "so",
        "sq",
        "sr",
        "su",
        "sv",
        "sw",
        "ta",
        "te",
        "tg",
        "th",
        "tk",
        "tl",
        "tr",
        "tt",
        "uk",
        "ur",
        "uz",
        "vi",
        "yi",
        "yo",
        "zh",
        "yue",
    }
)


def primary_language(language_code: str) -> str:
    """The primary subtag of a BCP-47 code, lower case ("pt-BR" -> "pt")."""
    return language_code.replace("_", "-").split("-")[0].strip().lower()


def validate_job_config(config: gateway_pb2.JobConfig) -> None:
    """Raises InvalidInputError or NotFoundError for a config no service would accept."""
    transcription = config.transcription
    if transcription.language_code and primary_language(transcription.language_code) not in WHISPER_LANGUAGES:
        raise NotFoundError(
            f"unknown language code {transcription.language_code!r}: use a BCP-47 code of a language Whisper knows"
            " (e.g. en, fr, de, pt-BR), or leave it empty to detect the language"
        )
    if transcription.task not in asr_pb2.Task.values():
        raise InvalidInputError(f"unknown task {transcription.task}")
    if transcription.beam_size < 0 or transcription.beam_size > 64:
        raise InvalidInputError(f"beam_size {transcription.beam_size} must be between 1 and 64 (0: default 5)")
    if transcription.batch_size < 0 or transcription.batch_size > 256:
        raise InvalidInputError(f"batch_size {transcription.batch_size} must be between 1 and 256 (0: default)")
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

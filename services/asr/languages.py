"""BCP-47 language codes to Whisper's language codes and back.

Whisper names languages by ISO 639-1 codes (a few by ISO 639-2/3 where there is
no two-letter one: "haw", "yue"), with one oddity: Javanese is "jw" where
BCP-47 says "jv". Only the primary subtag of a BCP-47 code is used ("pt-BR" is
Portuguese).
"""

from __future__ import annotations

from faster_whisper.tokenizer import _LANGUAGE_CODES

from common.errors import InvalidInputError, NotFoundError

# BCP-47 primary subtags (including deprecated ones still seen) whose Whisper code differs.
_WHISPER_CODE_OF_SUBTAG = {"jv": "jw", "iw": "he", "in": "id", "ji": "yi", "mo": "ro"}
_SUBTAG_OF_WHISPER_CODE = {"jw": "jv"}


def to_whisper_language(language_code: str, supported: tuple[str, ...]) -> str:
    """The Whisper code of a BCP-47 language code, checked against the codes
    a model supports (`supported`)."""
    primary = language_code.strip().replace("_", "-").split("-", 1)[0].lower()
    if not primary:
        raise InvalidInputError(f"empty language code {language_code!r}")
    whisper_code = _WHISPER_CODE_OF_SUBTAG.get(primary, primary)
    if whisper_code in supported:
        return whisper_code
    if supported == ("en",) and whisper_code in _LANGUAGE_CODES:
        raise InvalidInputError(
            f"language {language_code!r} needs a multilingual model; the model is English-only (use e.g. embedded:base)"
        )
    valid = ", ".join(sorted(to_bcp47(code) for code in supported))
    raise NotFoundError(f"unknown language code {language_code!r} for this model; it knows: {valid}")


def to_bcp47(whisper_code: str) -> str:
    """The BCP-47 code of a Whisper language code."""
    return _SUBTAG_OF_WHISPER_CODE.get(whisper_code, whisper_code)

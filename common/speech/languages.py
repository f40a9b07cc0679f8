"""BCP-47 language codes to Whisper's language codes and back.

Whisper names languages by ISO 639-1 codes (a few by ISO 639-2/3 where there is
no two-letter one: "haw", "yue"), with one oddity: Javanese is "jw" where
BCP-47 says "jv". Only the primary subtag of a BCP-47 code is used ("pt-BR" is
Portuguese).
"""

from __future__ import annotations

from common.errors import InvalidInputError, NotFoundError

# The languages Whisper knows, as faster-whisper's tokenizer lists them (kept
# here so that the gateway can check codes without model packages; a unit test
# checks it against faster-whisper's list).
WHISPER_LANGUAGES: tuple[str, ...] = (
    "en", "zh", "de", "es", "ru", "ko", "fr", "ja", "pt", "tr", "pl", "ca", "nl", "ar", "sv", "it", "id", "hi",
    "fi", "vi", "he", "uk", "el", "ms", "cs", "ro", "da", "hu", "ta", "no", "th", "ur", "hr", "bg", "lt", "la",
    "mi", "ml", "cy", "sk", "te", "fa", "lv", "bn", "sr", "az", "sl", "kn", "et", "mk", "br", "eu", "is", "hy",
    "ne", "mn", "bs", "kk", "sq", "sw", "gl", "mr", "pa", "si", "km", "sn", "yo", "so", "af", "oc", "ka", "be",
    "tg", "sd", "gu", "am", "yi", "lo", "uz", "fo", "ht", "ps", "tk", "nn", "mt", "sa", "lb", "my", "bo", "tl",
    "mg", "as", "tt", "haw", "ln", "ha", "ba", "jw", "su", "yue",
)  # fmt: skip

# BCP-47 primary subtags (including deprecated ones still seen) whose Whisper code differs.
_WHISPER_CODE_OF_SUBTAG = {"jv": "jw", "iw": "he", "in": "id", "ji": "yi", "mo": "ro"}
_SUBTAG_OF_WHISPER_CODE = {"jw": "jv"}


def primary_language(language_code: str) -> str:
    """The primary subtag of a BCP-47 code, lower case ("pt-BR" -> "pt")."""
    return language_code.strip().replace("_", "-").split("-", 1)[0].lower()


def to_whisper_language(language_code: str, supported: tuple[str, ...]) -> str:
    """The Whisper code of a BCP-47 language code, checked against the codes
    a model supports (`supported`)."""
    primary = primary_language(language_code)
    if not primary:
        raise InvalidInputError(f"empty language code {language_code!r}")
    whisper_code = _WHISPER_CODE_OF_SUBTAG.get(primary, primary)
    if whisper_code in supported:
        return whisper_code
    if supported == ("en",) and whisper_code in WHISPER_LANGUAGES:
        raise InvalidInputError(
            f"language {language_code!r} needs a multilingual model; the model is English-only (use e.g. embedded:base)"
        )
    valid = ", ".join(sorted(to_bcp47(code) for code in supported))
    raise NotFoundError(f"unknown language code {language_code!r} for this model; it knows: {valid}")


def to_bcp47(whisper_code: str) -> str:
    """The BCP-47 code of a Whisper language code."""
    return _SUBTAG_OF_WHISPER_CODE.get(whisper_code, whisper_code)

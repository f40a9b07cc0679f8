from __future__ import annotations

import pytest
from faster_whisper.tokenizer import _LANGUAGE_CODES

from common.errors import InvalidInputError, NotFoundError
from common.speech.languages import WHISPER_LANGUAGES, to_bcp47, to_whisper_language


def test_the_gateway_knows_the_languages_faster_whisper_knows() -> None:
    assert sorted(WHISPER_LANGUAGES) == sorted(_LANGUAGE_CODES)


@pytest.mark.parametrize(
    ("bcp47", "whisper"), [("en", "en"), ("pt-BR", "pt"), ("jv", "jw"), ("iw", "he"), ("FR", "fr")]
)
def test_bcp47_codes_map_to_whisper_codes(bcp47: str, whisper: str) -> None:
    assert to_whisper_language(bcp47, WHISPER_LANGUAGES) == whisper


def test_unknown_and_unsupported_languages_are_refused() -> None:
    with pytest.raises(NotFoundError, match="xx"):
        to_whisper_language("xx-YY", WHISPER_LANGUAGES)
    with pytest.raises(InvalidInputError, match="multilingual"):
        to_whisper_language("fr", ("en",))
    assert to_bcp47("jw") == "jv"

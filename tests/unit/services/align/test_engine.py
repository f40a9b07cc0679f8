"""The align engine on real speech (Debian's Asterisk prompts and their
published transcripts), with both real aligners: Whisper tiny.en
cross-attention and pocketsphinx forced alignment."""

from __future__ import annotations

import itertools
import logging
import statistics
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from common.errors import InvalidInputError, NotFoundError
from common.speech.whisper_models import DEFAULT_MODEL, EMBEDDED_BASE, ModelCache, ModelLoadOptions
from common.speech.word_timing import WordPlacement, split_tokens, words_from_placements
from common.transcript import Segment, Word
from services.align.cross_attention import CrossAttentionAligner
from services.align.engine import (
    CALIBRATION_AUDIO_S,
    AlignEngine,
    AlignMethod,
    AlignOptions,
    is_english,
    validate_segments,
)
from services.align.phonetic import PhoneticAligner
from services.align.placement import Samples
from tests.speech import (
    ASTERISK_SOUNDS_DIR,
    FRENCH_SOUNDS_DIR,
    FRENCH_TRANSCRIPTS_PATH,
    SAMPLE_RATE_HERTZ,
    load_pcm16k,
    read_transcripts,
    speech_available,
)

FRENCH_TRANSCRIPTS = FRENCH_TRANSCRIPTS_PATH
# A plain sentence; one with the numbers 1 to 9 ("press 1 to mute..."); one
# with a symbol ("separated by * and then press the pound key").
PROMPTS = ("agent-pass", "conf-usermenu", "demo-enterkeywords")
LEAD_S = 0.4  # silence before each prompt, so segments do not start at 0

needs_speech = pytest.mark.skipif(not speech_available(), reason="asterisk-core-sounds-en-wav is not installed")


def prompt_audio(name: str, sounds_dir: Path = ASTERISK_SOUNDS_DIR) -> Samples:
    lead = np.zeros(round(LEAD_S * SAMPLE_RATE_HERTZ), dtype=np.float32)
    return np.concatenate([lead, load_pcm16k(sounds_dir / f"{name}.wav"), lead])


def whole_prompt(text: str, samples: Samples) -> Segment:
    """The segment a recogniser would give: the prompt without the padding."""
    return Segment(text, LEAD_S, len(samples) / SAMPLE_RATE_HERTZ - LEAD_S)


def assert_well_formed(segment: Segment, given: Segment) -> None:
    """Every token in order, monotonic, inside the segment as given."""
    words = segment.words
    assert [word.text for word in words] == given.text.split()
    assert given.start_s <= segment.start_s <= segment.end_s <= given.end_s
    assert (segment.start_s, segment.end_s) == (words[0].start_s, words[-1].end_s)
    for previous, word in itertools.pairwise(words):
        assert previous.end_s <= word.start_s
    for word in words:
        assert given.start_s <= word.start_s <= word.end_s <= given.end_s
        assert 0.0 <= word.probability <= 1.0


@pytest.fixture(scope="module")
def models() -> ModelCache:
    return ModelCache(ModelLoadOptions(device="cpu", cpu_threads=2))


@pytest.fixture(scope="module")
def engine(models: ModelCache) -> AlignEngine:
    return AlignEngine(
        CrossAttentionAligner(lambda name: models.get(name or DEFAULT_MODEL).whisper),
        PhoneticAligner(),
    )


@pytest.fixture(scope="module")
def aligned(engine: AlignEngine) -> dict[tuple[str, AlignMethod], tuple[Segment, Segment]]:
    """Each prompt aligned by each method: (given segment, aligned segment)."""
    transcripts = read_transcripts()
    results = {}
    for name in PROMPTS:
        samples = prompt_audio(name)
        given = whole_prompt(transcripts[name], samples)
        for method in AlignMethod:
            result = engine.align([given], samples, language_code="en-US", method=method)
            assert result.method is method
            assert result.failed_segment_count == 0
            results[name, method] = (given, result.segments[0])
    return results


@needs_speech
@pytest.mark.parametrize("method", list(AlignMethod), ids=lambda method: method.value)
@pytest.mark.parametrize("name", PROMPTS)
def test_every_word_comes_back_in_order_inside_its_segment(
    aligned: dict[tuple[str, AlignMethod], tuple[Segment, Segment]], name: str, method: AlignMethod
) -> None:
    given, segment = aligned[name, method]
    assert_well_formed(segment, given)
    # The prompt's speech starts a little after the padding: the segment is tightened to it.
    assert segment.words[0].start_s < given.start_s + 0.5


@needs_speech
def test_the_two_methods_agree_on_word_starts(
    aligned: dict[tuple[str, AlignMethod], tuple[Segment, Segment]],
) -> None:
    differences_s = []
    for name in PROMPTS:
        phonetic = aligned[name, AlignMethod.PHONETIC][1].words
        cross = aligned[name, AlignMethod.CROSS_ATTENTION][1].words
        differences_s += [
            abs(a.start_s - b.start_s)
            for a, b in zip(phonetic, cross, strict=True)
            if not a.interpolated and not b.interpolated
        ]
    assert len(differences_s) > 40
    assert statistics.median(differences_s) < 0.2
    assert sum(difference <= 0.3 for difference in differences_s) / len(differences_s) >= 0.8


@needs_speech
def test_numbers_and_symbols_out_of_the_dictionary_are_interpolated(
    aligned: dict[tuple[str, AlignMethod], tuple[Segment, Segment]],
) -> None:
    numbers = aligned["conf-usermenu", AlignMethod.PHONETIC][1].words
    interpolated = [word.text for word in numbers if word.interpolated]
    assert {"1", "4", "6", "7", "9", "8"} <= set(interpolated)
    assert "mute" not in interpolated and "conference" not in interpolated
    (star,) = [word for word in aligned["demo-enterkeywords", AlignMethod.PHONETIC][1].words if word.text == "*"]
    assert star.interpolated and star.end_s > star.start_s
    # Cross-attention knows digits and symbols: it places them.
    assert not any(word.interpolated for word in aligned["conf-usermenu", AlignMethod.CROSS_ATTENTION][1].words)


@needs_speech
@pytest.mark.skipif(not FRENCH_TRANSCRIPTS.is_file(), reason="asterisk-core-sounds-fr-wav is not installed")
@pytest.mark.parametrize("method", [None, AlignMethod.PHONETIC])
def test_french_falls_back_to_cross_attention(engine: AlignEngine, method: AlignMethod | None) -> None:
    samples = prompt_audio("agent-pass", FRENCH_SOUNDS_DIR)
    given = whole_prompt(read_transcripts(FRENCH_TRANSCRIPTS)["agent-pass"], samples)
    assert "dièse." in given.text.split()
    result = engine.align([given], samples, language_code="fr-FR", method=method)
    assert result.method is AlignMethod.CROSS_ATTENTION
    assert_well_formed(result.segments[0], given)


@needs_speech
@pytest.mark.slow
@pytest.mark.skipif(not FRENCH_TRANSCRIPTS.is_file(), reason="asterisk-core-sounds-fr-wav is not installed")
@pytest.mark.parametrize("language_code", ["fr", ""], ids=["french", "detected"])
def test_a_multilingual_model_aligns_french(tmp_path_factory: pytest.TempPathFactory, language_code: str) -> None:
    models = ModelCache(ModelLoadOptions(device="cpu", cpu_threads=2, cache_dir=tmp_path_factory.getbasetemp()))
    engine = AlignEngine(CrossAttentionAligner(lambda name: models.get(name).whisper))
    samples = prompt_audio("conf-onlyperson", FRENCH_SOUNDS_DIR)
    given = whole_prompt(read_transcripts(FRENCH_TRANSCRIPTS)["conf-onlyperson"], samples)
    result = engine.align([given], samples, language_code=language_code, model=EMBEDDED_BASE)
    assert result.method is AlignMethod.CROSS_ATTENTION and result.failed_segment_count == 0
    assert_well_formed(result.segments[0], given)
    assert "conférence." in [word.text for word in result.segments[0].words]


@needs_speech
def test_consecutive_segments_are_aligned_together_and_stay_apart(engine: AlignEngine) -> None:
    transcripts = read_transcripts()
    first, second = prompt_audio("agent-pass"), prompt_audio("auth-thankyou")
    samples = np.concatenate([first, second])
    offset_s = len(first) / SAMPLE_RATE_HERTZ
    given = [
        whole_prompt(transcripts["agent-pass"], first),
        Segment("", offset_s, offset_s + 0.2),
        Segment(transcripts["auth-thankyou"], offset_s + LEAD_S, len(samples) / SAMPLE_RATE_HERTZ - LEAD_S),
    ]
    for method in AlignMethod:
        result = engine.align(given, samples, language_code="en", method=method)
        assert result.segments[1] == given[1]  # no text: unchanged, no words
        assert_well_formed(result.segments[0], given[0])
        assert_well_formed(result.segments[2], given[2])


@needs_speech
def test_a_segment_longer_than_the_encoder_window_is_aligned_in_pieces(engine: AlignEngine) -> None:
    transcripts = read_transcripts()
    names = ("conf-usermenu", "conf-usermenu", "agent-pass")
    samples = np.concatenate([load_pcm16k(ASTERISK_SOUNDS_DIR / f"{name}.wav") for name in names])
    given = Segment(" ".join(transcripts[name] for name in names), 0.0, len(samples) / SAMPLE_RATE_HERTZ)
    assert given.end_s > 30.0
    result = engine.align([given], samples, language_code="en", method=AlignMethod.CROSS_ATTENTION)
    assert result.failed_segment_count == 0
    assert_well_formed(result.segments[0], given)
    password = next(word for word in result.segments[0].words if word.text == "password")
    assert password.start_s > 28.0  # in the last prompt, which starts at 28 s


class Failing:
    def place_words(
        self, samples: Samples, tokens: Sequence[str], *, language_code: str, model: str
    ) -> list[WordPlacement | None]:
        raise RuntimeError("broken aligner")


def test_a_failing_aligner_degrades_to_interpolation(caplog: pytest.LogCaptureFixture) -> None:
    engine = AlignEngine(Failing(), Failing())
    given = Segment("Hello there, 42 & more.", 1.0, 3.0)
    with caplog.at_level(logging.WARNING, logger="services.align.engine"):
        result = engine.align([given], np.zeros(4 * SAMPLE_RATE_HERTZ, dtype=np.float32), language_code="en")
    assert result.method is AlignMethod.PHONETIC and result.failed_segment_count == 1
    (segment,) = result.segments
    assert (segment.start_s, segment.end_s) == (1.0, 3.0)
    assert all(word.interpolated for word in segment.words)
    assert_well_formed(segment, given)
    # Longer words get more time.
    assert segment.words[0].end_s - segment.words[0].start_s > segment.words[3].end_s - segment.words[3].start_s
    assert "interpolating" in caplog.text


def test_domain_errors_of_an_aligner_reach_the_caller() -> None:
    class UnknownModel(Failing):
        def place_words(
            self, samples: Samples, tokens: Sequence[str], *, language_code: str, model: str
        ) -> list[WordPlacement | None]:
            raise NotFoundError(f"unknown model {model!r}")

    with pytest.raises(NotFoundError):
        AlignEngine(UnknownModel()).align(
            [Segment("hello", 0.0, 1.0)], np.zeros(SAMPLE_RATE_HERTZ, dtype=np.float32), model="nope"
        )


class Recording:
    """An aligner that remembers each call's audio (s) and tokens, and places nothing."""

    def __init__(self) -> None:
        self.calls: list[tuple[float, int]] = []

    def place_words(
        self, samples: Samples, tokens: Sequence[str], *, language_code: str, model: str
    ) -> list[WordPlacement | None]:
        self.calls.append((len(samples) / SAMPLE_RATE_HERTZ, len(tokens)))
        return [None] * len(tokens)


def test_the_calibration_aligns_a_window_of_speech_as_requests_are_grouped() -> None:
    cross_attention, phonetic = Recording(), Recording()
    engine = AlignEngine(cross_attention, phonetic)
    assert engine.calibrate(AlignMethod.CROSS_ATTENTION) > 0.0
    assert engine.calibrate(AlignMethod.PHONETIC) > 0.0
    # Cross-attention: the 30 s chunk's 12 segments in one window; phonetic: each alone.
    assert len(cross_attention.calls) == 1 and cross_attention.calls[0][0] == pytest.approx(CALIBRATION_AUDIO_S)
    assert len(phonetic.calls) == 12 and sum(duration_s for duration_s, _ in phonetic.calls) == pytest.approx(30.0)
    assert sum(tokens for _, tokens in phonetic.calls) == cross_attention.calls[0][1] == 84  # 168 words a minute
    with pytest.raises(ValueError, match="no phonetic aligner"):
        AlignEngine(Recording()).calibrate(AlignMethod.PHONETIC)


@needs_speech
def test_pocketsphinx_finding_no_path_through_the_calibration_noise_is_expected(
    engine: AlignEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        assert 0.0 < engine.calibrate(AlignMethod.PHONETIC) < 10.0
    assert not caplog.records
    # Another aligner's failure is not hidden.
    with pytest.raises(RuntimeError, match="broken aligner"):
        AlignEngine(Failing()).calibrate(AlignMethod.CROSS_ATTENTION)


def test_method_choice() -> None:
    engine = AlignEngine(Failing(), Failing())
    assert is_english("en") and is_english("en-GB") and is_english("EN_us") and not is_english("fr")
    assert engine.method_for("en-US") is AlignMethod.PHONETIC
    assert engine.method_for("en", AlignMethod.CROSS_ATTENTION) is AlignMethod.CROSS_ATTENTION
    assert engine.method_for("de", AlignMethod.PHONETIC) is AlignMethod.CROSS_ATTENTION
    assert engine.method_for("") is AlignMethod.CROSS_ATTENTION
    # Without a phonetic aligner, English too goes to cross-attention.
    assert AlignEngine(Failing()).method_for("en", AlignMethod.PHONETIC) is AlignMethod.CROSS_ATTENTION


@pytest.mark.parametrize(
    ("segment", "duration_s"),
    [(Segment("a", 2.0, 1.0), 5.0), (Segment("a", -0.5, 1.0), 5.0), (Segment("a", 4.0, 6.0), 5.0)],
    ids=["reversed", "negative-start", "past-the-end"],
)
def test_bad_segments_are_invalid_input(segment: Segment, duration_s: float) -> None:
    with pytest.raises(InvalidInputError):
        validate_segments([segment], duration_s)
    with pytest.raises(InvalidInputError):
        AlignEngine(Failing(), options=AlignOptions()).align(
            [segment], np.zeros(round(duration_s * SAMPLE_RATE_HERTZ), dtype=np.float32)
        )


def test_interpolation_fills_gaps_by_length_and_borrows_when_there_is_none() -> None:
    tokens = split_tokens("one 22 three four $5 six")
    placements = [
        WordPlacement(0.0, 0.5, 0.9),
        None,
        WordPlacement(1.5, 2.0, 0.8),
        WordPlacement(2.0, 2.5, 0.7),
        None,  # no gap between "four" and "six": shares their span
        WordPlacement(2.5, 3.0, 0.6),
    ]
    words = words_from_placements(tokens, placements, offset_s=10.0, start_s=10.0, end_s=14.0)
    assert words[1] == Word("22", 10.5, 11.5, 0.0, True)
    assert not words[3].interpolated and words[4].interpolated and not words[5].interpolated
    assert words[3].start_s == 12.0 and words[5].end_s == 13.0
    assert words[4].end_s - words[4].start_s > 0.1
    assert [w.start_s for w in words] == sorted(w.start_s for w in words)
    # Placements outside the segment or overlapping are clamped and made monotonic.
    clamped = words_from_placements(
        ["a", "b"], [WordPlacement(-1.0, 0.5), WordPlacement(0.2, 9.0)], offset_s=0.0, start_s=0.0, end_s=1.0
    )
    assert [(w.start_s, w.end_s) for w in clamped] == [(0.0, 0.5), (0.5, 1.0)]

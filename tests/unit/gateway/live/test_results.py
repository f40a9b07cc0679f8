"""gateway.live.results: interim results carry the text, its agreed part and
their ratio; finals carry words timed in the stream, kept inside their audio."""

from __future__ import annotations

import pytest

from common.limits import SAMPLE_RATE_HERTZ
from common.transcript import Word
from gateway.live import results
from gateway.live.decoder import Hypothesis

RATE = SAMPLE_RATE_HERTZ


def seconds(offset: object) -> float:
    return offset.ToTimedelta().total_seconds()  # type: ignore[attr-defined]


def test_speech_activity_carries_its_offset() -> None:
    assert seconds(results.speech_begin(1.5).speech_begin.offset) == 1.5
    assert seconds(results.speech_end(2.25).speech_end.offset) == 2.25


def test_an_interim_carries_its_agreed_part_and_their_ratio() -> None:
    texts = ("one", "two", "three", "four")
    heard = Hypothesis(" ".join(texts), tuple(Word(text, 0.0, 0.1) for text in texts), "en")
    interim = results.interim(3, RATE, 3 * RATE, heard, 3).interim
    assert interim.text == "one two three four" and interim.stable_text == "one two three"
    assert interim.stability == 0.75 and interim.utterance_index == 3 and interim.language_code == "en"
    assert (seconds(interim.start_offset), seconds(interim.end_offset)) == (1.0, 3.0)
    assert results.interim(0, 0, RATE, Hypothesis("", (), ""), 0).interim.stability == 0.0


def test_a_final_is_timed_in_the_stream_and_kept_inside_its_audio() -> None:
    heard = Hypothesis("one two", (Word("one", 0.2, 0.5, probability=0.9), Word("two", 0.6, 1.4)), "en")
    result = results.final(2, 2 * RATE, 3 * RATE, heard)
    assert result is not None and result.text == "one two"
    final = result.response.final
    assert final.stability == 1.0 and final.stable_text == "one two" and final.utterance_index == 2
    assert [(word.text, seconds(word.start_offset), seconds(word.end_offset)) for word in final.words] == [
        ("one", 2.2, 2.5),
        ("two", 2.6, 3.0),  # (its end clipped to the end of the final's audio)
    ]
    assert (seconds(final.start_offset), seconds(final.end_offset)) == (2.2, 3.0)
    assert final.words[0].probability == pytest.approx(0.9)


def test_a_final_without_words_spans_its_audio_and_one_without_text_is_not_sent() -> None:
    result = results.final(0, RATE, 2 * RATE, Hypothesis("hm", (), ""))
    assert result is not None
    assert (seconds(result.response.final.start_offset), seconds(result.response.final.end_offset)) == (1.0, 2.0)
    assert results.final(0, RATE, 2 * RATE, Hypothesis(" ", (), "")) is None

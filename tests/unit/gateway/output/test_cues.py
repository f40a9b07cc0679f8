"""Cues from segments: where transcripts are cut, lines balanced and laid out,
cue times, and the rules (gaps, reading speed, word limits) checks report."""

from __future__ import annotations

import itertools
import random

import pytest

from common.errors import InvalidInputError
from common.transcript import Segment, Word
from gateway.output.cues import _GLUE_AFTER as GLUE_AFTER
from gateway.output.cues import (
    PRESETS,
    Cue,
    SubtitleOptions,
    build_cues,
)
from tests.unit.gateway.output.transcripts import (
    random_transcript,
    timed_segment,
)


def test_cue_times_come_from_word_times() -> None:
    rng = random.Random(7)
    options = SubtitleOptions()
    for _ in range(100):
        # Well-formed words: increasing, each at least a millisecond long.
        segments = [
            segment
            for segment in random_transcript(rng)
            if segment.words and all(word.end_s > word.start_s for word in segment.words)
        ]
        words = [word for segment in segments for word in segment.words]
        if any(later.start_s < earlier.end_s for earlier, later in itertools.pairwise(words)):
            continue
        cues = build_cues(segments, options)
        position = 0
        for index, cue in enumerate(cues):
            count = len(" ".join(cue.lines).split())
            first, last = words[position], words[position + count - 1]
            position += count
            assert cue.start_s == round(first.start_s, 3)
            if last.end_s - first.start_s <= options.max_cue_duration_s:
                assert cue.end_s >= round(last.end_s, 3)
            if cue.end_s > round(last.end_s, 3):
                # Lengthened to the minimum, never into the next cue.
                assert cue.end_s - cue.start_s <= options.min_cue_duration_s + 1e-9
                if index + 1 < len(cues):
                    assert cue.end_s <= cues[index + 1].start_s
        assert position == len(words)


def test_two_line_cues_are_balanced() -> None:
    rng = random.Random(11)
    options = SubtitleOptions()
    checked = 0
    for _ in range(150):
        for cue in build_cues(random_transcript(rng), options):
            if len(cue.lines) != 2:
                continue
            words = " ".join(cue.lines).split()
            # Cuts that keep an article, determiner or pronoun with the next word.
            allowed = [cut for cut in range(1, len(words)) if words[cut - 1].lower() not in GLUE_AFTER]
            best_longest = min(
                (max(len(" ".join(words[:cut])), len(" ".join(words[cut:]))) for cut in allowed),
                default=len(" ".join(words)),
            )
            # Balanced, give or take a few characters for a break after punctuation.
            assert max(map(len, cue.lines)) <= best_longest + 6, cue.lines
            checked += 1
    assert checked > 100


def test_short_transcript_is_one_cue_on_one_line() -> None:
    cues = build_cues([timed_segment("Hello world.")])
    assert cues == [Cue(0.0, 0.833, ("Hello world.",))]  # lengthened to the minimum (5/6 s)


def test_cue_breaks_at_sentence_end_first() -> None:
    text = (
        "We went to the market early in the morning, before the crowds. "
        "Then we walked along the river, past the old mill, all the way home."
    )
    cues = build_cues([timed_segment(text, seconds_per_word=0.2)])
    assert [" ".join(cue.lines) for cue in cues] == [
        "We went to the market early in the morning, before the crowds.",
        "Then we walked along the river, past the old mill, all the way home.",
    ]
    # Balanced, the lower line longer, and never "in / the morning".
    assert cues[0].lines == ("We went to the market early", "in the morning, before the crowds.")


def test_cue_breaks_at_clause_when_no_sentence_ends() -> None:
    text = (
        "when the weather turns cold and the days grow short and dark, "
        "the birds fly south to warmer lands across the sea and mountains"
    )
    cues = build_cues([timed_segment(text, seconds_per_word=0.2)])
    assert len(cues) == 2
    assert cues[0].lines[-1].endswith("dark,")


def test_long_word_has_a_line_of_its_own() -> None:
    long_word = "Supercalifragilisticexpialidocious-and-then-some-more"
    cues = build_cues([timed_segment(f"It was {long_word} indeed.")])
    lines = [line for cue in cues for line in cue.lines]
    assert long_word in lines
    assert all(len(line) <= 42 for line in lines if line != long_word)


def test_slow_speech_is_cut_at_seven_seconds() -> None:
    cues = build_cues([timed_segment("one two three four five six seven eight nine ten", seconds_per_word=1.5)])
    assert len(cues) >= 3
    assert all(cue.end_s - cue.start_s <= 7.0 for cue in cues)


def test_single_word_longer_than_the_maximum_is_cut_short() -> None:
    cues = build_cues([Segment("Hmmmmm", 1.0, 20.0, (Word("Hmmmmm", 1.0, 20.0),))])
    assert cues == [Cue(1.0, 8.0, ("Hmmmmm",))]


def test_short_cue_lengthened_only_up_to_the_next_cue() -> None:
    segments = [
        Segment("Yes.", 1.0, 1.1, (Word("Yes.", 1.0, 1.1),)),
        Segment("No.", 1.5, 1.6, (Word("No.", 1.5, 1.6),)),
        Segment("Maybe.", 5.0, 5.2, (Word("Maybe.", 5.0, 5.2),)),
    ]
    cues = build_cues(segments)
    # Two frames at 24 fps before the next cue; 5/6 s at least where there is room.
    assert [(cue.start_s, cue.end_s) for cue in cues] == [(1.0, 1.417), (1.5, 2.333), (5.0, 5.833)]


def test_segment_without_words_shares_its_time_by_length() -> None:
    cues = build_cues([Segment("aa bbbbbb", 10.0, 12.0)], SubtitleOptions(max_line_chars=4, max_lines=1))
    # (A cue that starts the transcript starts with a capital.)
    assert cues == [Cue(10.0, 10.417, ("Aa",)), Cue(10.5, 12.0, ("bbbbbb",))]


def test_whisper_word_pieces_stay_together_and_cjk_has_no_spaces() -> None:
    pieces = Segment(" It costs 3.5 dollars", 0.0, 2.0, (
        Word(" It", 0.0, 0.3), Word(" costs", 0.3, 0.8), Word(" 3", 0.8, 1.0), Word(".5", 1.0, 1.2),
        Word(" dollars", 1.2, 2.0),
    ))  # fmt: skip
    # "It costs 3" / ".5 dollars" would be better balanced, but cuts "3.5".
    assert build_cues([pieces], SubtitleOptions(max_line_chars=11))[0].lines == ("It costs", "3.5 dollars")
    chinese = Segment("我们今天去公园", 0.0, 2.0, (
        Word("我们", 0.0, 0.5), Word("今天", 0.5, 1.0), Word("去", 1.0, 1.4), Word("公园", 1.4, 2.0),
    ))  # fmt: skip
    assert build_cues([chinese])[0].lines == ("我们今天去公园",)
    # A CJK character is two columns wide: 8 columns hold four of them.
    assert build_cues([chinese], SubtitleOptions(max_line_chars=8))[0].lines == ("我们今天", "去公园")


def test_bare_words_are_joined_with_spaces() -> None:
    segment = Segment("Hello world", 0.0, 1.0, (Word("Hello", 0.0, 0.4), Word("world", 0.5, 1.0)))
    assert build_cues([segment])[0].lines == ("Hello world",)


@pytest.mark.parametrize(
    "fields",
    [
        {"max_line_chars": 0},
        {"max_lines": 0},
        {"max_cue_duration_s": 0.0},
        {"min_cue_duration_s": -1.0},
        {"min_cue_duration_s": 8.0},
    ],
)
def test_bad_options_are_refused(fields: dict[str, float]) -> None:
    with pytest.raises(InvalidInputError):
        SubtitleOptions(**fields)  # type: ignore[arg-type]


def test_short_gaps_are_closed_to_two_frames_and_longer_ones_kept() -> None:
    from gateway.output.cues import check_cues

    segments = [
        timed_segment("First one here.", start_s=0.0),  # ends 0.84
        timed_segment("Second right after.", start_s=1.2),  # 0.36 s later: closed
        timed_segment("Third much later.", start_s=5.0),
    ]
    cues = build_cues(segments)
    assert round(cues[1].start_s - cues[0].end_s, 3) == 0.083
    assert cues[2].start_s - cues[1].end_s > 0.5
    assert check_cues(cues) == []
    # The short-video preset keeps 0.8 s between cues.
    wide = build_cues(segments, PRESETS["short-video"])
    assert all(later.start_s - earlier.end_s >= 0.8 - 1e-9 for earlier, later in itertools.pairwise(wide))


def test_one_word_a_cue_and_word_limits() -> None:
    segment = timed_segment("one two three four five six")
    assert [cue.text for cue in build_cues([segment], SubtitleOptions(max_words=1))] == [
        "One", "two", "three", "four", "five", "six",
    ]  # fmt: skip
    assert all(len(cue.text.split()) <= 4 for cue in build_cues([segment], SubtitleOptions(max_words=4)))


def test_lines_do_not_end_with_an_article_or_split_a_name() -> None:
    text = "Yesterday I met the President of the Republic Emmanuel Macron at a dinner"
    for width in range(40, 50):  # (at 36-39 only "of the / Republic" fits)
        for cue in build_cues([timed_segment(text, seconds_per_word=0.25)], SubtitleOptions(max_line_chars=width)):
            for line in cue.lines[:-1]:
                assert line.split()[-1].lower() not in {"the", "a", "i"}, (width, cue.lines)
                assert not line.endswith("Emmanuel"), (width, cue.lines)


def test_cues_that_start_a_sentence_start_with_a_capital() -> None:
    segments = [timed_segment("well this is it."), timed_segment("and then more", start_s=3.0)]
    cues = build_cues(segments)
    assert [cue.text[0] for cue in cues] == ["W", "A"]

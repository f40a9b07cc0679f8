"""Subtitle cues and renderers: limits, order, timing and format validity.

Most checks are properties run over many generated transcripts; the SRT and
WebVTT output is read back with small strict parsers written from the specs.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import random
import re
from dataclasses import dataclass

import pytest

from common.errors import InvalidInputError
from common.transcript import Segment, Word
from gateway.output.subtitles import _GLUE_AFTER as GLUE_AFTER
from gateway.output.subtitles import (
    CONTENT_TYPES,
    PRESETS,
    Cue,
    SubtitleFormat,
    SubtitleOptions,
    build_cues,
    render,
    render_json,
    render_srt,
    render_text,
    render_vtt,
)

# --- strict parsers ---------------------------------------------------------

_SRT_TIMING = re.compile(r"(\d{2,}):([0-5]\d):([0-5]\d),(\d{3}) --> (\d{2,}):([0-5]\d):([0-5]\d),(\d{3})")
_VTT_TIMING = re.compile(r"(\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3}) --> (\d{2,}):([0-5]\d):([0-5]\d)\.(\d{3})")


@dataclass(frozen=True)
class ParsedCue:
    start_ms: int
    end_ms: int
    lines: list[str]


def _ms(hours: str, minutes: str, seconds: str, milliseconds: str) -> int:
    return ((int(hours) * 60 + int(minutes)) * 60 + int(seconds)) * 1000 + int(milliseconds)


def _check_text_lines(lines: list[str]) -> None:
    assert lines, "a cue has at least one line of text"
    for line in lines:
        assert line.strip(), "no blank line inside a cue"
        assert line == line.strip(), f"no leading or trailing space: {line!r}"
        assert "-->" not in line


def parse_srt(content: str) -> list[ParsedCue]:
    """SubRip: blocks of index, timing and text lines, each followed by a blank line."""
    if content == "":
        return []
    assert content.endswith("\n\n") and not content.endswith("\n\n\n")
    assert "\r" not in content
    cues = []
    for number, block in enumerate(content[:-2].split("\n\n"), start=1):
        lines = block.split("\n")
        assert lines[0] == str(number), f"cue {number} is numbered {lines[0]!r}"
        match = _SRT_TIMING.fullmatch(lines[1])
        assert match, f"bad SRT timing line {lines[1]!r}"
        _check_text_lines(lines[2:])
        cues.append(ParsedCue(_ms(*match.groups()[:4]), _ms(*match.groups()[4:]), lines[2:]))
    return cues


def parse_vtt(content: str) -> list[ParsedCue]:
    """WebVTT without cue identifiers: header, blank line, then timing and text blocks."""
    assert content.startswith("WEBVTT\n\n")
    body = content[len("WEBVTT\n\n") :]
    if body == "":
        return []
    assert body.endswith("\n\n") and not body.endswith("\n\n\n")
    cues = []
    for block in body[:-2].split("\n\n"):
        lines = block.split("\n")
        match = _VTT_TIMING.fullmatch(lines[0])
        assert match, f"bad VTT timing line {lines[0]!r}"
        _check_text_lines(lines[1:])
        text_lines = []
        for line in lines[1:]:
            assert "<" not in line and ">" not in line
            assert re.fullmatch(r"([^&]|&(amp|lt|gt);)*", line), f"bare ampersand in {line!r}"
            text_lines.append(line.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&"))
        cues.append(ParsedCue(_ms(*match.groups()[:4]), _ms(*match.groups()[4:]), text_lines))
    return cues


# --- generated transcripts --------------------------------------------------

_VOCABULARY = (
    *("a", "I", "the", "of", "to", "and", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are"),
    *("with", "as", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "word"),
    *("but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use"),
    *("your", "how", "said", "an", "each"),
    *("extraordinary", "internationalisation", "telecommunications", "responsibilities"),
)
_SENTENCE_MARKS = (".", "!", "?", "\u2026")
_CLAUSE_MARKS = (",", ";", ":")


def _random_word(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.01:
        return "Pneumonoultramicroscopicsilicovolcanoconiosis-and-more"  # longer than a line
    word = rng.choice(_VOCABULARY)
    if roll < 0.03:
        word = f"<{word}>&co"  # characters WebVTT must escape
    elif roll < 0.1:
        word += rng.choice(_SENTENCE_MARKS)
    elif roll < 0.18:
        word += rng.choice(_CLAUSE_MARKS)
    return word


def _random_transcript(rng: random.Random) -> list[Segment]:
    """Segments in time order; words whisper-style (leading space) or bare, sometimes none."""
    segments = []
    time_s = rng.uniform(0.0, 3.0)
    for _ in range(rng.randint(0, 6)):
        seconds_per_word = rng.choice((0.05, 0.25, 0.4, 0.9))
        texts = [_random_word(rng) for _ in range(rng.randint(1, 60))]
        words = []
        for text in texts:
            duration_s = rng.choice((0.0, 0.001, seconds_per_word, rng.uniform(0, 2 * seconds_per_word)))
            words.append(Word(text, round(time_s, 3), round(time_s + duration_s, 3), probability=rng.random()))
            time_s += duration_s + rng.choice((0.0, 0.0, 0.05, 0.3, 0.7, 2.0))
        segment_words = tuple(words)
        if rng.random() < 0.5:
            segment_words = tuple(Word(" " + word.text, word.start_s, word.end_s) for word in words)
        if rng.random() < 0.15:
            segment_words = ()
        segments.append(Segment(" ".join(texts), words[0].start_s, words[-1].end_s, segment_words))
        time_s += rng.choice((0.0, 0.5, 3.0))
    return segments


_OPTION_SETS = (
    SubtitleOptions(),
    SubtitleOptions(max_line_chars=20, max_lines=1, max_cue_duration_s=3.0, min_cue_duration_s=0.5),
    SubtitleOptions(max_line_chars=32, max_lines=3, max_cue_duration_s=5.0, min_cue_duration_s=1.5),
)


def _all_words(segments: list[Segment]) -> list[str]:
    return [text for segment in segments for text in segment.text.split()]


@pytest.mark.parametrize("options", _OPTION_SETS, ids=["default", "one-line", "three-lines"])
def test_cues_keep_limits_order_and_words_over_generated_transcripts(options: SubtitleOptions) -> None:
    rng = random.Random(20240601)
    for _ in range(150):
        segments = _random_transcript(rng)
        cues = build_cues(segments, options)
        for parsed in (parse_srt(render_srt(cues)), parse_vtt(render_vtt(cues))):
            assert [cue.lines for cue in parsed] == [list(cue.lines) for cue in cues]
            _check_cue_properties(parsed, segments, options)


def _check_cue_properties(cues: list[ParsedCue], segments: list[Segment], options: SubtitleOptions) -> None:
    previous_end_ms = 0
    for cue in cues:
        assert cue.start_ms >= previous_end_ms, "cues overlap"
        assert cue.end_ms > cue.start_ms, "a cue lasts at least a millisecond"
        assert cue.end_ms - cue.start_ms <= options.max_cue_duration_s * 1000
        assert len(cue.lines) <= options.max_lines
        for line in cue.lines:
            assert len(line) <= options.max_line_chars or " " not in line, f"line too long: {line!r}"
        previous_end_ms = cue.end_ms
    # Every word exactly once, in order, none cut: the words of the cues are
    # the words of the transcript.
    # (A cue that starts a sentence starts with a capital.)
    assert [word.lower() for cue in cues for line in cue.lines for word in line.split()] == [
        word.lower() for word in _all_words(segments)
    ]


def test_cue_times_come_from_word_times() -> None:
    rng = random.Random(7)
    options = SubtitleOptions()
    for _ in range(100):
        # Well-formed words: increasing, each at least a millisecond long.
        segments = [
            segment
            for segment in _random_transcript(rng)
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
        for cue in build_cues(_random_transcript(rng), options):
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


# --- choices of cut ---------------------------------------------------------


def _timed_segment(text: str, seconds_per_word: float = 0.3, start_s: float = 0.0) -> Segment:
    words = []
    for index, word in enumerate(text.split()):
        word_start_s = start_s + index * seconds_per_word
        words.append(Word(" " + word, word_start_s, word_start_s + seconds_per_word * 0.8, 0.9))
    return Segment(text, start_s, words[-1].end_s, tuple(words))


def test_short_transcript_is_one_cue_on_one_line() -> None:
    cues = build_cues([_timed_segment("Hello world.")])
    assert cues == [Cue(0.0, 0.833, ("Hello world.",))]  # lengthened to the minimum (5/6 s)


def test_cue_breaks_at_sentence_end_first() -> None:
    text = (
        "We went to the market early in the morning, before the crowds. "
        "Then we walked along the river, past the old mill, all the way home."
    )
    cues = build_cues([_timed_segment(text, seconds_per_word=0.2)])
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
    cues = build_cues([_timed_segment(text, seconds_per_word=0.2)])
    assert len(cues) == 2
    assert cues[0].lines[-1].endswith("dark,")


def test_long_word_has_a_line_of_its_own() -> None:
    long_word = "Supercalifragilisticexpialidocious-and-then-some-more"
    cues = build_cues([_timed_segment(f"It was {long_word} indeed.")])
    lines = [line for cue in cues for line in cue.lines]
    assert long_word in lines
    assert all(len(line) <= 42 for line in lines if line != long_word)


def test_slow_speech_is_cut_at_seven_seconds() -> None:
    cues = build_cues([_timed_segment("one two three four five six seven eight nine ten", seconds_per_word=1.5)])
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


def test_zero_length_and_overlapping_words_still_give_increasing_cues() -> None:
    segments = [
        Segment("one", 2.0, 2.0, (Word("one", 2.0, 2.0),)),
        Segment("two", 2.0, 2.0, (Word("two", 2.0, 2.0),)),
        Segment("three four", 1.9, 2.5, (Word("three", 1.9, 2.5), Word("four", 1.0, 0.5))),
    ]
    cues = build_cues(segments)
    assert len(cues) >= 2
    for earlier, later in itertools.pairwise(cues):
        assert earlier.start_s < earlier.end_s <= later.start_s
    assert cues[-1].end_s > cues[-1].start_s
    parse_srt(render_srt(cues))


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


# --- renderers --------------------------------------------------------------


def test_srt_and_vtt_text() -> None:
    segments = [
        _timed_segment("Tom & Jerry <live> --> now.", start_s=3725.5),
    ]
    srt = render_srt(build_cues(segments))
    assert srt == "1\n01:02:05,500 --> 01:02:07,240\nTom & Jerry <live> -> now.\n\n"
    vtt = render_vtt(build_cues(segments))
    assert vtt == "WEBVTT\n\n01:02:05.500 --> 01:02:07.240\nTom &amp; Jerry &lt;live&gt; --&gt; now.\n\n"
    assert parse_vtt(vtt)[0].lines == ["Tom & Jerry <live> --> now."]


def test_empty_transcript_renders_valid_empty_files() -> None:
    assert render("srt", [], "en", 0.0) == ("", "application/x-subrip")
    assert render("vtt", [], "en", 0.0) == ("WEBVTT\n\n", "text/vtt")
    assert render("text", [], "en", 0.0) == ("", "text/plain")
    content, content_type = render("json", [], "en", 1.5)
    assert content_type == "application/json"
    assert json.loads(content) == {
        "language_code": "en", "duration_s": 1.5, "text": "", "segments": [], "speakers": [],
        "subtitle_violations": [],
    }  # fmt: skip
    assert render("srt", [Segment("  ", 0.0, 1.0)], "en", 1.0)[0] == ""


def test_text_is_one_segment_a_line() -> None:
    segments = [Segment(" Hello  there. ", 0.0, 1.0), Segment("", 1.0, 2.0), Segment(" Bye.", 2.0, 3.0)]
    assert render_text(segments) == "Hello there.\nBye.\n"


def test_json_keys_in_a_fixed_order() -> None:
    segment = Segment(
        " Hi there.",
        0.5,
        1.25,
        (Word(" Hi", 0.5, 0.8, 0.91234, False), Word(" there.", 0.8, 1.2500004, 0.5, True)),
    )
    document = json.loads(render_json([segment], "en", 10.0))
    assert list(document) == ["language_code", "duration_s", "text", "segments", "speakers", "subtitle_violations"]
    assert document["segments"] == [
        {
            "text": "Hi there.",
            "start_s": 0.5,
            "end_s": 1.25,
            "flags": [],
            "speaker": "",
            "words": [
                {
                    "text": "Hi",
                    "speaker": "",
                    "start_s": 0.5,
                    "end_s": 0.8,
                    "probability": 0.9123,
                    "interpolated": False,
                },
                {
                    "text": "there.",
                    "speaker": "",
                    "start_s": 0.8,
                    "end_s": 1.25,
                    "probability": 0.5,
                    "interpolated": True,
                },
            ],
        }
    ]
    assert list(document["segments"][0]) == ["text", "start_s", "end_s", "flags", "speaker", "words"]
    assert render_json([segment], "en", 10.0) == render_json([segment], "en", 10.0)


@pytest.mark.parametrize("subtitle_format", list(SubtitleFormat))
def test_render_gives_each_format_its_content_type(subtitle_format: SubtitleFormat) -> None:
    content, content_type = render(subtitle_format.value, [_timed_segment("Hello world.")], "en", 1.0)
    assert content_type == CONTENT_TYPES[subtitle_format]
    assert "Hello world." in content


def test_unknown_format_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="unknown subtitle format"):
        render("docx", [], "en", 0.0)


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


# --- rules and presets --------------------------------------------------------


def test_short_gaps_are_closed_to_two_frames_and_longer_ones_kept() -> None:
    from gateway.output.subtitles import check_cues

    segments = [
        _timed_segment("First one here.", start_s=0.0),  # ends 0.84
        _timed_segment("Second right after.", start_s=1.2),  # 0.36 s later: closed
        _timed_segment("Third much later.", start_s=5.0),
    ]
    cues = build_cues(segments)
    assert round(cues[1].start_s - cues[0].end_s, 3) == 0.083
    assert cues[2].start_s - cues[1].end_s > 0.5
    assert check_cues(cues) == []
    # The short-video preset keeps 0.8 s between cues.
    wide = build_cues(segments, PRESETS["short-video"])
    assert all(later.start_s - earlier.end_s >= 0.8 - 1e-9 for earlier, later in itertools.pairwise(wide))


def test_fast_cues_are_lengthened_for_reading_or_reported() -> None:
    from gateway.output.subtitles import check_cues

    fast = _timed_segment("Extraordinarily complicated vocabulary everywhere.", seconds_per_word=0.15)
    alone = build_cues([fast])
    chars = sum(len(line) for line in alone[0].lines)
    assert chars / (alone[0].end_s - alone[0].start_s) <= 20.0 + 1e-6
    # With the next cue right behind it, it cannot be: the JSON lists it.
    crowded = [fast, _timed_segment("Next.", start_s=0.7)]
    cues = build_cues(crowded)
    # (Nor can it last 5/6 s.)
    assert [violation.rule for violation in check_cues(cues)] == ["min_cue_duration", "max_chars_per_second"]
    document = json.loads(render_json(crowded, "en", 2.0))
    assert {violation["rule"] for violation in document["subtitle_violations"]} == {
        "min_cue_duration", "max_chars_per_second",
    }  # fmt: skip


def test_one_word_a_cue_and_word_limits() -> None:
    segment = _timed_segment("one two three four five six")
    assert [cue.text for cue in build_cues([segment], SubtitleOptions(max_words=1))] == [
        "One", "two", "three", "four", "five", "six",
    ]  # fmt: skip
    assert all(len(cue.text.split()) <= 4 for cue in build_cues([segment], SubtitleOptions(max_words=4)))


def test_lines_do_not_end_with_an_article_or_split_a_name() -> None:
    text = "Yesterday I met the President of the Republic Emmanuel Macron at a dinner"
    for width in range(40, 50):  # (at 36-39 only "of the / Republic" fits)
        for cue in build_cues([_timed_segment(text, seconds_per_word=0.25)], SubtitleOptions(max_line_chars=width)):
            for line in cue.lines[:-1]:
                assert line.split()[-1].lower() not in {"the", "a", "i"}, (width, cue.lines)
                assert not line.endswith("Emmanuel"), (width, cue.lines)


def test_cues_that_start_a_sentence_start_with_a_capital() -> None:
    segments = [_timed_segment("well this is it."), _timed_segment("and then more", start_s=3.0)]
    cues = build_cues(segments)
    assert [cue.text[0] for cue in cues] == ["W", "A"]


def test_word_highlighting_and_ass() -> None:
    import re

    import pysubs2

    cues = build_cues([_timed_segment("Hello there my friend.")])
    vtt = render_vtt(cues, highlight_words=True)
    assert re.findall(r"<(\d\d:\d\d:\d\d\.\d{3})>", vtt) == ["00:00:00.300", "00:00:00.600", "00:00:00.900"]
    assert len(pysubs2.SSAFile.from_string(vtt, format_="vtt")) == 1
    ass = render(SubtitleFormat.ASS, [_timed_segment("Hello {there}.")], "en", 1.0, highlight_words=True)[0]
    parsed = pysubs2.SSAFile.from_string(ass)
    assert len(parsed) == 1 and "\\k" in parsed[0].text and "{there}" not in parsed[0].text
    assert pysubs2.SSAFile.from_string(render(SubtitleFormat.ASS, [], "en", 0.0)[0]).events == []


def test_doubtful_segments_are_flagged_and_left_out_of_subtitles_only_when_asked() -> None:
    from common.transcript import doubt_flags

    good = _timed_segment("This is what was said.")
    loop = _timed_segment("Thank you. Thank you. Thank you. Thank you.", start_s=3.0)
    quiet = dataclasses.replace(_timed_segment("Hmm.", start_s=6.0), no_speech_prob=0.9, avg_logprob=-1.4)
    squashed = dataclasses.replace(_timed_segment("la la la", start_s=8.0), compression_ratio=3.1)
    assert doubt_flags(good) == ()
    assert doubt_flags(loop) == ("repetition",)
    assert doubt_flags(quiet) == ("low_avg_logprob", "no_speech")
    assert "high_compression_ratio" in doubt_flags(squashed)
    assert doubt_flags(_timed_segment("no, no, no, I said")) == ()  # speech, not a loop
    segments = [good, loop, quiet, squashed]
    assert len(build_cues(segments)) >= 4
    kept = build_cues(segments, SubtitleOptions(omit_doubtful=True))
    assert [cue.text for cue in kept] == ["This is what was said."]
    document = json.loads(render_json(segments, "en", 10.0))
    assert [segment["flags"] for segment in document["segments"]] == [
        [], ["repetition"], ["low_avg_logprob", "no_speech"], ["high_compression_ratio"],
    ]  # fmt: skip


def _spoken(text: str, start_s: float, speaker: str) -> Segment:
    words = []
    at = start_s
    for word in text.split():
        words.append(Word(word, at, at + 0.3))
        at += 0.35
    return Segment(text, start_s, at, tuple(words), speaker=speaker)


def test_a_new_speaker_is_named_where_they_start_in_every_format() -> None:
    segments = [
        _spoken("Hello there, how are you?", 0.0, "SPEAKER_00"),
        _spoken("And the weather is fine.", 2.5, "SPEAKER_00"),
        _spoken("Very well, thank you.", 5.0, "SPEAKER_01"),
    ]
    cues = build_cues(segments)
    assert [cue.speaker for cue in cues] == ["SPEAKER_00", "SPEAKER_00", "SPEAKER_01"]
    assert cues[0].lines[0].startswith("[SPEAKER_00] Hello")
    assert not cues[1].text.startswith("[")  # the same speaker goes on
    assert cues[2].text.startswith("[SPEAKER_01] Very")
    assert all(len(line) <= 42 for cue in cues for line in cue.lines)
    vtt, _ = render("vtt", segments, "en", 8.0)
    assert "<v SPEAKER_01>[SPEAKER_01] Very well" in vtt
    assert render("text", segments, "en", 8.0)[0].splitlines()[2] == "SPEAKER_01: Very well, thank you."
    document = json.loads(render("json", segments, "en", 8.0)[0])
    assert document["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert [segment["speaker"] for segment in document["segments"]] == ["SPEAKER_00", "SPEAKER_00", "SPEAKER_01"]
    assert "Name" in render("ass", segments, "en", 8.0)[0] and ",SPEAKER_01," in render("ass", segments, "en", 8.0)[0]


def test_fast_words_share_a_cue_with_slower_ones_rather_than_flash_by() -> None:
    from gateway.output import subtitles
    from gateway.output.subtitles import check_cues

    def spoken(parts: list[tuple[str, float]], start_s: float = 0.0) -> Segment:
        words, at_s = [], start_s
        for text, seconds_per_word in parts:
            for word in text.split():
                words.append(Word(" " + word, at_s, at_s + seconds_per_word * 0.9, 0.9))
                at_s += seconds_per_word
        return Segment(" ".join(text for text, _ in parts), start_s, words[-1].end_s, tuple(words))

    # 66 characters in 0.8 s, then a slow clause: too long for one cue.
    segments = [
        spoken(
            [
                ("Everything happened so incredibly quickly at the station yesterday,", 0.1),
                ("but then we all waited for hours and hours in the cold rain. Nobody came.", 0.45),
            ]
        ),
        spoken([("Next one.", 0.3)], start_s=9.0),
    ]

    def fastest(cues: list[Cue]) -> float:
        return max(v.value for v in check_cues(cues) if v.rule == "max_chars_per_second")

    shared = fastest(build_cues(segments, SubtitleOptions()))
    original = subtitles._READING_COST
    try:
        subtitles._READING_COST = 0.0  # cuts chosen by punctuation and balance alone
        alone = build_cues(segments, SubtitleOptions())
    finally:
        subtitles._READING_COST = original
    assert alone[0].lines[-1].endswith("yesterday,")  # the fast clause alone: 80 characters a second
    assert fastest(alone) > 2.5 * shared
    assert "min_cue_duration" in {v.rule for v in check_cues(alone)}
    assert "min_cue_duration" not in {v.rule for v in check_cues(build_cues(segments))}

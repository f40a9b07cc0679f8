"""Subtitle formats: SubRip, WebVTT, ASS, JSON and text rendered from cues,
read back with small strict parsers written from the specs; most checks are
properties run over many generated transcripts."""

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
from gateway.output.cues import Cue, SubtitleOptions, build_cues
from gateway.output.subtitles import (
    CONTENT_TYPES,
    SubtitleFormat,
    render,
    render_json,
    render_srt,
    render_text,
    render_vtt,
)
from tests.unit.gateway.output.transcripts import (
    random_transcript,
    timed_segment,
)

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
        segments = random_transcript(rng)
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


def test_srt_and_vtt_text() -> None:
    segments = [
        timed_segment("Tom & Jerry <live> --> now.", start_s=3725.5),
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
    content, content_type = render(subtitle_format.value, [timed_segment("Hello world.")], "en", 1.0)
    assert content_type == CONTENT_TYPES[subtitle_format]
    assert "Hello world." in content


def test_unknown_format_is_invalid_input() -> None:
    with pytest.raises(InvalidInputError, match="unknown subtitle format"):
        render("docx", [], "en", 0.0)


def test_fast_cues_are_lengthened_for_reading_or_reported() -> None:
    from gateway.output.cues import check_cues

    fast = timed_segment("Extraordinarily complicated vocabulary everywhere.", seconds_per_word=0.15)
    alone = build_cues([fast])
    chars = sum(len(line) for line in alone[0].lines)
    assert chars / (alone[0].end_s - alone[0].start_s) <= 20.0 + 1e-6
    # With the next cue right behind it, it cannot be: the JSON lists it.
    crowded = [fast, timed_segment("Next.", start_s=0.7)]
    cues = build_cues(crowded)
    # (Nor can it last 5/6 s.)
    assert [violation.rule for violation in check_cues(cues)] == ["min_cue_duration", "max_chars_per_second"]
    document = json.loads(render_json(crowded, "en", 2.0))
    assert {violation["rule"] for violation in document["subtitle_violations"]} == {
        "min_cue_duration", "max_chars_per_second",
    }  # fmt: skip


def test_word_highlighting_and_ass() -> None:
    import re

    import pysubs2

    cues = build_cues([timed_segment("Hello there my friend.")])
    vtt = render_vtt(cues, highlight_words=True)
    assert re.findall(r"<(\d\d:\d\d:\d\d\.\d{3})>", vtt) == ["00:00:00.300", "00:00:00.600", "00:00:00.900"]
    assert len(pysubs2.SSAFile.from_string(vtt, format_="vtt")) == 1
    ass = render(SubtitleFormat.ASS, [timed_segment("Hello {there}.")], "en", 1.0, highlight_words=True)[0]
    parsed = pysubs2.SSAFile.from_string(ass)
    assert len(parsed) == 1 and "\\k" in parsed[0].text and "{there}" not in parsed[0].text
    assert pysubs2.SSAFile.from_string(render(SubtitleFormat.ASS, [], "en", 0.0)[0]).events == []


def test_doubtful_segments_are_flagged_and_left_out_of_subtitles_only_when_asked() -> None:
    from common.transcript import doubt_flags

    good = timed_segment("This is what was said.")
    loop = timed_segment("Thank you. Thank you. Thank you. Thank you.", start_s=3.0)
    quiet = dataclasses.replace(timed_segment("Hmm.", start_s=6.0), no_speech_prob=0.9, avg_logprob=-1.4)
    squashed = dataclasses.replace(timed_segment("la la la", start_s=8.0), compression_ratio=3.1)
    assert doubt_flags(good) == ()
    assert doubt_flags(loop) == ("repetition",)
    assert doubt_flags(quiet) == ("low_avg_logprob", "no_speech")
    assert "high_compression_ratio" in doubt_flags(squashed)
    assert doubt_flags(timed_segment("no, no, no, I said")) == ()  # speech, not a loop
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
    from gateway.output import cues
    from gateway.output.cues import check_cues

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
    original = cues._READING_COST
    try:
        cues._READING_COST = 0.0  # cuts chosen by punctuation and balance alone
        alone = build_cues(segments, SubtitleOptions())
    finally:
        cues._READING_COST = original
    assert alone[0].lines[-1].endswith("yesterday,")  # the fast clause alone: 80 characters a second
    assert fastest(alone) > 2.5 * shared
    assert "min_cue_duration" in {v.rule for v in check_cues(alone)}
    assert "min_cue_duration" not in {v.rule for v in check_cues(build_cues(segments))}

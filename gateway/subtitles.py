"""Subtitles and transcripts from segments: SubRip, WebVTT, JSON and plain text.

Pure Python: no gRPC, no numpy. `build_cues` cuts a transcript into cues that
follow common broadcast guidelines (BBC, Netflix): at most `max_lines` lines of
`max_line_chars` characters and `max_cue_duration_s` a cue, cut preferably
where a sentence ends, then where a clause ends or the speaker pauses, never
inside a word; a cue's lines are balanced. Cue times come from the words: the
first word's start and the last word's end, then adjusted so cues follow one
another without overlap and each lasts at least `min_cue_duration_s` where
the next cue leaves room.

Segments are cut separately (a segment boundary always ends a cue). A segment
without words has its time shared among the words of its text in proportion
to their length.
"""

from __future__ import annotations

import json
import logging
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from common.errors import InvalidInputError
from common.transcript import Segment

logger = logging.getLogger(__name__)


class SubtitleFormat(StrEnum):
    """Output formats of `render`."""

    SRT = "srt"
    VTT = "vtt"
    JSON = "json"
    TEXT = "text"


CONTENT_TYPES: dict[SubtitleFormat, str] = {
    SubtitleFormat.SRT: "application/x-subrip",
    SubtitleFormat.VTT: "text/vtt",
    SubtitleFormat.JSON: "application/json",
    SubtitleFormat.TEXT: "text/plain",
}


@dataclass(frozen=True)
class SubtitleOptions:
    """How transcripts are cut into cues."""

    # Characters a line; 42 is the BBC and Netflix limit for Latin scripts. A
    # single word longer than this has a line of its own.
    max_line_chars: int = 42
    # Lines a cue.
    max_lines: int = 2
    # Longest time a cue stays on screen (Netflix: 7 s). A single word said for
    # longer has its cue cut to this.
    max_cue_duration_s: float = 7.0
    # Shortest time a cue stays on screen when the next cue leaves room, about
    # the 5/6 s of Netflix's guidelines: time to read a word or two.
    min_cue_duration_s: float = 0.8

    def __post_init__(self) -> None:
        if self.max_line_chars < 1:
            raise InvalidInputError(f"max_line_chars must be at least 1, not {self.max_line_chars}")
        if self.max_lines < 1:
            raise InvalidInputError(f"max_lines must be at least 1, not {self.max_lines}")
        if not 0.001 <= self.max_cue_duration_s < math.inf:
            raise InvalidInputError(f"max_cue_duration_s must be at least 0.001, not {self.max_cue_duration_s}")
        if not 0.0 <= self.min_cue_duration_s <= self.max_cue_duration_s:
            raise InvalidInputError(
                f"min_cue_duration_s must lie in [0, max_cue_duration_s], not {self.min_cue_duration_s}"
            )


@dataclass(frozen=True)
class Cue:
    """One subtitle: lines of text shown from `start_s` to `end_s` (whole milliseconds)."""

    start_s: float
    end_s: float
    lines: tuple[str, ...]

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


# Marks after which a cue or line is best cut; a word ending in one (closing
# quotes and brackets aside) ends a sentence or a clause.
_SENTENCE_ENDS = frozenset(".!?\u2026\u3002\uff01\uff1f")  # ellipsis; CJK full stop, exclamation and question marks
_CLAUSE_ENDS = frozenset(",;:-\u2014\u2013\uff0c\u3001\uff1b\uff1a")  # dashes; CJK commas, semicolon, colon
_CLOSING_MARKS = "\"')]}\u201d\u2019\u00bb"  # closing curly quotes, closing guillemet
# Words ending in a full stop that seldom end a sentence.
_ABBREVIATIONS = frozenset({"mr.", "mrs.", "ms.", "dr.", "prof.", "st.", "vs.", "e.g.", "i.e.", "no."})
# Cost of cutting a cue after a word, by what ends it; in units of one extra cue.
_CUE_BREAK_COST = {"sentence": 0.0, "clause": 1.5, "pause": 1.5, "long pause": 0.0, "none": 4.0}
# Cost of a line break after a word, in squared characters of imbalance.
_LINE_BREAK_COST = {"sentence": 0.0, "clause": 16.0, "pause": 64.0, "long pause": 64.0, "none": 64.0}
# Unicode name prefixes of scripts (and their punctuation) written without
# spaces between words.
_UNSPACED_SCRIPTS = (
    "CJK",
    "IDEOGRAPHIC",
    "FULLWIDTH",
    "HIRAGANA",
    "KATAKANA",
    "THAI",
    "LAO",
    "KHMER",
    "MYANMAR",
    "TIBETAN",
)
_PAUSE_MS = 500
_LONG_PAUSE_MS = 1500


@dataclass(frozen=True)
class _Token:
    """A word as laid out: stripped text, times in ms, and whether a space precedes it."""

    text: str
    start_ms: int
    end_ms: int
    space_before: bool = True


def build_cues(segments: Sequence[Segment], options: SubtitleOptions | None = None) -> list[Cue]:
    """Cut `segments` into cues, in time order, that keep to `options`."""
    options = options or SubtitleOptions()
    timed: list[tuple[int, int, tuple[str, ...]]] = []
    for segment in sorted(segments, key=lambda segment: segment.start_s):
        tokens = _segment_tokens(segment)
        for cue_tokens in _split_cues(tokens, options):
            lines = _layout_lines(cue_tokens, options)
            timed.append((cue_tokens[0].start_ms, cue_tokens[-1].end_ms, lines))
    return _fix_times(timed, options)


def render_srt(cues: Sequence[Cue]) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each."""
    blocks = [
        f"{number}\n{_timestamp(cue.start_s, ',')} --> {_timestamp(cue.end_s, ',')}\n"
        + "\n".join(line.replace("-->", "->") for line in cue.lines)
        for number, cue in enumerate(cues, start=1)
    ]
    return "".join(block + "\n\n" for block in blocks)


def render_vtt(cues: Sequence[Cue]) -> str:
    """WebVTT: the `WEBVTT` header, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm` with escaped text."""
    blocks = [
        f"{_timestamp(cue.start_s, '.')} --> {_timestamp(cue.end_s, '.')}\n"
        + "\n".join(_escape_vtt(line) for line in cue.lines)
        for cue in cues
    ]
    return "WEBVTT\n\n" + "".join(block + "\n\n" for block in blocks)


def render_text(segments: Sequence[Segment]) -> str:
    """The transcript, one segment a line."""
    lines = [" ".join(segment.text.split()) for segment in segments]
    return "".join(line + "\n" for line in lines if line)


def render_json(segments: Sequence[Segment], language_code: str, audio_duration_s: float) -> str:
    """The transcript as JSON; keys in a fixed order, times in seconds to the millisecond.

    `{"language_code", "duration_s", "text", "segments": [{"text", "start_s",
    "end_s", "words": [{"text", "start_s", "end_s", "probability",
    "interpolated"}]}]}`
    """
    document: dict[str, Any] = {
        "language_code": language_code,
        "duration_s": _json_seconds(audio_duration_s),
        "text": " ".join(" ".join(segment.text.split()) for segment in segments).strip(),
        "segments": [
            {
                "text": " ".join(segment.text.split()),
                "start_s": _json_seconds(segment.start_s),
                "end_s": _json_seconds(segment.end_s),
                "words": [
                    {
                        "text": word.text.strip(),
                        "start_s": _json_seconds(word.start_s),
                        "end_s": _json_seconds(word.end_s),
                        "probability": round(word.probability, 4) if math.isfinite(word.probability) else 0.0,
                        "interpolated": word.interpolated,
                    }
                    for word in segment.words
                ],
            }
            for segment in segments
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2, allow_nan=False) + "\n"


def render(
    format: SubtitleFormat | str,
    segments: Sequence[Segment],
    language_code: str,
    audio_duration_s: float,
    options: SubtitleOptions | None = None,
) -> tuple[str, str]:
    """The transcript in `format` ("srt", "vtt", "json", "text") and its media type."""
    try:
        subtitle_format = SubtitleFormat(format)
    except ValueError:
        raise InvalidInputError(
            f"unknown subtitle format {format!r}; use one of {', '.join(f.value for f in SubtitleFormat)}"
        ) from None
    if subtitle_format is SubtitleFormat.SRT:
        content = render_srt(build_cues(segments, options))
    elif subtitle_format is SubtitleFormat.VTT:
        content = render_vtt(build_cues(segments, options))
    elif subtitle_format is SubtitleFormat.JSON:
        content = render_json(segments, language_code, audio_duration_s)
    else:
        content = render_text(segments)
    return content, CONTENT_TYPES[subtitle_format]


# --- words ------------------------------------------------------------------


def _segment_tokens(segment: Segment) -> list[_Token]:
    """The segment's words as tokens; words that are glued to the previous one are merged into it."""
    words = [word for word in segment.words if word.text.strip()]
    if not words:
        return _spread_text(segment)
    # Whisper's words carry their own leading space ("Hello", " world"): trust
    # it. Aligners that strip words get a space between any two words except
    # between two characters of a script written without spaces (Chinese...).
    carries_spaces = any(word.text[:1].isspace() for word in words[1:])
    tokens: list[_Token] = []
    for word in words:
        text = word.text.strip()
        start_ms, end_ms = _ms(word.start_s), _ms(word.end_s)
        if not tokens:
            tokens.append(_Token(text, start_ms, end_ms))
            continue
        previous = tokens[-1]
        unspaced = _unspaced_script(previous.text[-1]) and _unspaced_script(text[0])
        if carries_spaces and not word.text[:1].isspace() and not unspaced:
            # A piece of the previous word ("3" ".5"): a line never breaks inside it.
            tokens[-1] = _Token(
                previous.text + text, previous.start_ms, max(previous.end_ms, end_ms), previous.space_before
            )
        else:
            tokens.append(_Token(text, start_ms, end_ms, space_before=not unspaced))
    return tokens


def _spread_text(segment: Segment) -> list[_Token]:
    """Tokens for the words of a segment that has none, its time shared by their length."""
    texts = segment.text.split()
    if not texts:
        return []
    start_ms, end_ms = _ms(segment.start_s), _ms(segment.end_s)
    total_chars = sum(len(text) for text in texts)
    tokens = []
    chars_before = 0
    for text in texts:
        token_start_ms = start_ms + round((end_ms - start_ms) * chars_before / total_chars)
        chars_before += len(text)
        token_end_ms = start_ms + round((end_ms - start_ms) * chars_before / total_chars)
        tokens.append(_Token(text, token_start_ms, token_end_ms))
    return tokens


def _unspaced_script(char: str) -> bool:
    """Whether `char` belongs to a script written without spaces between words."""
    return unicodedata.name(char, "").startswith(_UNSPACED_SCRIPTS)


def _break_kind(token: _Token, following: _Token | None) -> str:
    """What ends `token`: a sentence, a clause, a pause before the next word, or nothing."""
    text = token.text.rstrip(_CLOSING_MARKS) or token.text
    last = text[-1]
    if last in _SENTENCE_ENDS and text.lower() not in _ABBREVIATIONS:
        return "sentence"
    if last in _CLAUSE_ENDS:
        return "clause"
    if following is not None:
        gap_ms = following.start_ms - token.end_ms
        if gap_ms >= _LONG_PAUSE_MS:
            return "long pause"
        if gap_ms >= _PAUSE_MS:
            return "pause"
    return "none"


# --- cues -------------------------------------------------------------------


def _join(tokens: Sequence[_Token]) -> str:
    return "".join((" " if index and token.space_before else "") + token.text for index, token in enumerate(tokens))


def _min_line_count(tokens: Sequence[_Token], max_line_chars: int) -> int:
    """Fewest lines that hold `tokens` (filling each line as far as it goes is optimal)."""
    line_count, width = 1, 0
    for index, token in enumerate(tokens):
        separator = 1 if index and token.space_before else 0
        if index == 0:
            width = len(token.text)
        elif width + separator + len(token.text) <= max_line_chars:
            width += separator + len(token.text)
        else:
            line_count += 1
            width = len(token.text)
    return line_count


def _fits(tokens: Sequence[_Token], options: SubtitleOptions) -> bool:
    if len(tokens) == 1:
        return True
    duration_ms = tokens[-1].end_ms - tokens[0].start_ms
    return (
        duration_ms <= _ms(options.max_cue_duration_s)
        and _min_line_count(tokens, options.max_line_chars) <= options.max_lines
    )


def _split_cues(tokens: Sequence[_Token], options: SubtitleOptions) -> list[Sequence[_Token]]:
    """Cut tokens into cues that fit, at the least total cost (dynamic programming over cut points).

    A cue costs 1, plus up to 1 more the emptier it is (so text is spread
    evenly rather than leaving a last word alone), plus the cost of the cut
    that ends it: nothing after a sentence or a long pause, more after a
    clause or a pause, most between two words of a running phrase.
    """
    capacity_chars = options.max_line_chars * options.max_lines
    best_cost = [0.0] + [math.inf] * len(tokens)
    best_start = [0] * (len(tokens) + 1)
    for end in range(1, len(tokens) + 1):
        following = tokens[end] if end < len(tokens) else None
        cut_cost = 0.0 if following is None else _CUE_BREAK_COST[_break_kind(tokens[end - 1], following)]
        for start in range(end - 1, -1, -1):
            cue = tokens[start:end]
            if not _fits(cue, options):
                break
            emptiness = max(0.0, 1.0 - len(_join(cue)) / capacity_chars)
            cost = best_cost[start] + 1.0 + emptiness**2 + cut_cost
            if cost < best_cost[end]:
                best_cost[end], best_start[end] = cost, start
    cues: list[Sequence[_Token]] = []
    end = len(tokens)
    while end > 0:
        cues.append(tokens[best_start[end] : end])
        end = best_start[end]
    return cues[::-1]


def _layout_lines(tokens: Sequence[_Token], options: SubtitleOptions) -> tuple[str, ...]:
    """Lay a cue's tokens out on as few lines as they need, as even in length as can be.

    Lines are chosen by dynamic programming: the squared difference of each
    line's length from the mean, plus a cost for line breaks that do not
    follow a sentence or clause.
    """
    line_count = _min_line_count(tokens, options.max_line_chars)
    if line_count == 1:
        return (_join(tokens),)
    target_chars = len(_join(tokens)) / line_count
    count = len(tokens)
    # cost[lines][end]: best cost of laying out tokens[:end] on `lines` lines.
    cost = [[math.inf] * (count + 1) for _ in range(line_count + 1)]
    start_of = [[0] * (count + 1) for _ in range(line_count + 1)]
    cost[0][0] = 0.0
    for lines in range(1, line_count + 1):
        for end in range(1, count + 1):
            break_cost = 0.0
            if lines < line_count and end < count:
                break_cost = _LINE_BREAK_COST[_break_kind(tokens[end - 1], tokens[end])]
            for start in range(end - 1, -1, -1):
                if cost[lines - 1][start] == math.inf:
                    continue
                width = len(_join(tokens[start:end]))
                if width > options.max_line_chars and end - start > 1:
                    break
                line_cost = cost[lines - 1][start] + (width - target_chars) ** 2 + break_cost
                if line_cost < cost[lines][end]:
                    cost[lines][end], start_of[lines][end] = line_cost, start
    lines_text: list[str] = []
    end = count
    for lines in range(line_count, 0, -1):
        start = start_of[lines][end]
        lines_text.append(_join(tokens[start:end]))
        end = start
    return tuple(lines_text[::-1])


def _fix_times(timed: Sequence[tuple[int, int, tuple[str, ...]]], options: SubtitleOptions) -> list[Cue]:
    """Cues from (start ms, end ms, lines), in order, each at least 1 ms long and none overlapping.

    A cue starts no earlier than the previous one ends; it lasts at least
    `min_cue_duration_s` unless that would run into the next cue's start, and
    at most `max_cue_duration_s`.
    """
    min_ms, max_ms = max(1, _ms(options.min_cue_duration_s)), _ms(options.max_cue_duration_s)
    cues = []
    previous_end_ms = 0
    for index, (raw_start_ms, raw_end_ms, lines) in enumerate(timed):
        start_ms = max(raw_start_ms, previous_end_ms)
        end_ms = min(max(raw_end_ms, start_ms + min_ms), start_ms + max_ms)
        if index + 1 < len(timed):
            end_ms = min(end_ms, max(timed[index + 1][0], start_ms + 1))
        if (start_ms, end_ms) != (raw_start_ms, raw_end_ms):
            logger.debug("cue %d moved from %d-%d ms to %d-%d ms", index, raw_start_ms, raw_end_ms, start_ms, end_ms)
        cues.append(Cue(start_ms / 1000, end_ms / 1000, lines))
        previous_end_ms = end_ms
    return cues


# --- formatting -------------------------------------------------------------


def _ms(seconds: float) -> int:
    """Seconds to whole milliseconds, negative and non-finite times to 0."""
    return round(seconds * 1000) if math.isfinite(seconds) and seconds > 0 else 0


def _timestamp(seconds: float, millisecond_separator: str) -> str:
    """`HH:MM:SS,mmm` (SubRip) or `HH:MM:SS.mmm` (WebVTT); hours grow past two digits if needed."""
    total_ms = _ms(seconds)
    hours, rest_ms = divmod(total_ms, 3_600_000)
    minutes, rest_ms = divmod(rest_ms, 60_000)
    whole_seconds, milliseconds = divmod(rest_ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}{millisecond_separator}{milliseconds:03d}"


def _escape_vtt(line: str) -> str:
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _json_seconds(seconds: float) -> float:
    return round(seconds, 3) if math.isfinite(seconds) else 0.0

"""Cues from segments: a transcript cut into subtitles that follow common
broadcast guidelines (BBC, Netflix), and the check of cues against them.

Pure Python: no gRPC, no numpy. `build_cues` cuts a transcript into cues of at
most `max_lines` lines of `max_line_chars` characters and `max_cue_duration_s`
a cue, cut preferably where a sentence ends, then where a clause ends or the
speaker pauses, never inside a word; a cue's lines are balanced. Cue times
come from the words: the first word's start and the last word's end, then
adjusted so cues follow one another without overlap and each lasts at least
`min_cue_duration_s` where the next cue leaves room.

Segments are cut separately (a segment boundary always ends a cue). A segment
without words has its time shared among the words of its text in proportion
to their length. `check_cues` lists where cues break the rules.
"""

from __future__ import annotations

import dataclasses
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass, field

from common.errors import InvalidInputError
from common.transcript import Segment, doubt_flags


@dataclass(frozen=True)
class SubtitleOptions:
    """How transcripts are cut into cues. The defaults are Netflix's timed-text
    rules for Latin scripts (`PRESETS["netflix"]`)."""

    # Width of a line, in characters; a character of a wide script (Chinese,
    # Japanese, Korean) counts as two, as on screen. A single word wider than
    # this has a line of its own.
    max_line_chars: int = 42
    # Lines a cue.
    max_lines: int = 2
    # Longest time a cue stays on screen. A single word said for longer has
    # its cue cut to this.
    max_cue_duration_s: float = 7.0
    # Shortest time a cue stays on screen when the next cue leaves room
    # (Netflix: 5/6 s).
    min_cue_duration_s: float = 5 / 6
    # Least time between two cues: two frames at `frame_rate`, unless given.
    min_gap_s: float | None = None
    frame_rate: float = 24.0
    # Gaps shorter than this are closed to `min_gap_s` (the earlier cue stays
    # up), as Netflix asks, so cues do not flicker; 0: gaps are kept.
    close_gap_s: float = 0.5
    # Reading speed: characters a second at most. A faster cue is lengthened
    # into the gap after it as far as the other rules allow.
    max_chars_per_second: float = 20.0
    # Words a cue at most (0: no limit); 1 gives one word a cue.
    max_words: int = 0
    # Leave doubtful segments (`doubt_flags`) out of the cues.
    omit_doubtful: bool = False

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
        if not 1.0 <= self.frame_rate <= 240.0:
            raise InvalidInputError(f"frame_rate must lie in [1, 240], not {self.frame_rate}")
        if self.min_gap_s is not None and not 0.0 <= self.min_gap_s <= 10.0:
            raise InvalidInputError(f"min_gap_s must lie in [0, 10], not {self.min_gap_s}")
        if not 0.0 <= self.close_gap_s <= 10.0:
            raise InvalidInputError(f"close_gap_s must lie in [0, 10], not {self.close_gap_s}")
        if not 1.0 <= self.max_chars_per_second <= 1000.0:
            raise InvalidInputError(f"max_chars_per_second must lie in [1, 1000], not {self.max_chars_per_second}")
        if self.max_words < 0:
            raise InvalidInputError(f"max_words must not be negative, not {self.max_words}")

    @property
    def gap_s(self) -> float:
        """The least time between two cues."""
        return self.min_gap_s if self.min_gap_s is not None else 2.0 / self.frame_rate


# Presets: Netflix's English rules (the default), the BBC's (37 characters,
# about 180 words a minute, i.e. 15 characters a second), and short-video
# platforms (2 short lines: 18 CJK characters, or 36 Latin ones; 0.8 s gaps
# kept; faster reading).
PRESETS: dict[str, SubtitleOptions] = {
    "netflix": SubtitleOptions(),
    "bbc": SubtitleOptions(max_line_chars=37, max_chars_per_second=15.0, min_cue_duration_s=1.0, frame_rate=25.0),
    "short-video": SubtitleOptions(
        max_line_chars=36,
        max_lines=2,
        max_cue_duration_s=5.0,
        min_cue_duration_s=0.5,
        min_gap_s=0.8,
        close_gap_s=0.0,
        max_chars_per_second=25.0,
    ),
}


@dataclass(frozen=True)
class Violation:
    """A rule a cue still breaks after every adjustment the other rules allow."""

    # Position of the cue, from 1 (as SubRip numbers them).
    cue: int
    rule: str
    value: float
    limit: float

    def describe(self) -> str:
        return f"cue {self.cue} breaks {self.rule}: {self.value:g} (limit {self.limit:g})"


@dataclass(frozen=True)
class Cue:
    """One subtitle: lines of text shown from `start_s` to `end_s` (whole milliseconds)."""

    start_s: float
    end_s: float
    lines: tuple[str, ...]
    # Each line's words: (text with the space before it, start in seconds), for word highlighting.
    line_words: tuple[tuple[tuple[str, float], ...], ...] = field(default=(), compare=False)
    # Who speaks ("SPEAKER_00") when the job was diarized; "" otherwise.
    speaker: str = ""

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
# Cost of a cue for each time it is over the reading speed (twice too fast: as a cut between two words).
_READING_COST = 4.0
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


def _word_set(text: str) -> frozenset[str]:
    return frozenset(text.split())


# Words a line should not end with: they belong with the word after them
# (articles, determiners, possessives, subject pronouns; English and French).
_GLUE_AFTER = _word_set(
    """
    a an the this that these those my your his her its our their i you he she we they it
    le la les un une des du mon ma mes ton ta tes son sa ses notre votre leur je tu il elle nous vous ils elles
    el los las una unos unas mi su der die das ein eine
    """
)
# Words a line may well start with: conjunctions and prepositions.
_BREAK_BEFORE = _word_set(
    """
    and but or nor so because while when if although though which who where than
    to of in on at for with from by about into over after before under between without
    et mais ou donc car que qui quand si pour avec dans sur sans
    """
)


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
    laid_out: list[list[list[_Token]]] = []
    speakers: list[str] = []
    sentence_start = True
    previous_speaker = ""
    kept = [
        segment
        for segment in sorted(segments, key=lambda segment: segment.start_s)
        if not (options.omit_doubtful and doubt_flags(segment))
    ]
    for number, segment in enumerate(kept):
        tokens = _segment_tokens(segment)
        if segment.speaker and segment.speaker != previous_speaker and tokens:
            # A new speaker is named where they start, in the cue's own text
            # (so line widths count it): "[SPEAKER_01] Yes, ...".
            first = tokens[0]
            tokens = [_Token(f"[{segment.speaker}]", first.start_ms, first.start_ms, False), *tokens]
            tokens[1] = _Token(first.text, first.start_ms, first.end_ms, True)
        previous_speaker = segment.speaker or previous_speaker
        next_start_ms = whole_ms(kept[number + 1].start_s) if number + 1 < len(kept) else None
        for cue_tokens in _split_cues(tokens, options, next_start_ms):
            speakers.append(segment.speaker)
            cue_tokens = list(cue_tokens)
            at = 1 if len(cue_tokens) > 1 and _is_label(cue_tokens[0]) else 0
            first = cue_tokens[at]
            if sentence_start and first.text[:1].islower():
                # A cue that starts a sentence starts with a capital.
                cue_tokens[at] = _Token(
                    first.text[:1].upper() + first.text[1:], first.start_ms, first.end_ms, first.space_before
                )
            laid_out.append(_layout_lines(cue_tokens, options))
            sentence_start = _break_kind(cue_tokens[-1], None) == "sentence"
    return [
        dataclasses.replace(cue, speaker=speaker)
        for cue, speaker in zip(_fix_times(laid_out, options), speakers, strict=True)
    ]


def _is_label(token: _Token) -> bool:
    return token.start_ms == token.end_ms and token.text.startswith("[") and token.text.endswith("]")


def check_cues(cues: Sequence[Cue], options: SubtitleOptions | None = None) -> list[Violation]:
    """The rules of `options` each cue breaks (line width and count,
    duration, reading speed, gap to the next cue)."""
    options = options or SubtitleOptions()
    violations: list[Violation] = []
    gap_ms = whole_ms(options.gap_s)
    for number, cue in enumerate(cues, start=1):
        duration_s = cue.end_s - cue.start_s
        widths = [_width(line) for line in cue.lines]
        checks = [
            ("max_lines", len(cue.lines), options.max_lines, len(cue.lines) > options.max_lines),
            (
                "max_line_chars",
                max(widths, default=0),
                options.max_line_chars,
                any(
                    width > options.max_line_chars and " " in line
                    for width, line in zip(widths, cue.lines, strict=True)
                ),
            ),
            (
                "min_cue_duration",
                round(duration_s, 3),
                round(options.min_cue_duration_s, 3),
                duration_s < options.min_cue_duration_s - 0.0005,
            ),
            (
                "max_cue_duration",
                round(duration_s, 3),
                options.max_cue_duration_s,
                duration_s > options.max_cue_duration_s + 0.0005,
            ),
        ]
        chars = sum(len(line) for line in cue.lines)
        cps = chars / duration_s if duration_s > 0 else math.inf
        checks.append(
            (
                "max_chars_per_second",
                round(cps, 1),
                options.max_chars_per_second,
                cps > options.max_chars_per_second + 0.05,
            )
        )
        if number < len(cues):
            gap = whole_ms(cues[number].start_s) - whole_ms(cue.end_s)
            checks.append(("min_gap", gap / 1000, round(options.gap_s, 3), gap < gap_ms))
        violations += [
            Violation(number, rule, float(value), float(limit)) for rule, value, limit, broken in checks if broken
        ]
    return violations


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
        start_ms, end_ms = whole_ms(word.start_s), whole_ms(word.end_s)
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
    start_ms, end_ms = whole_ms(segment.start_s), whole_ms(segment.end_s)
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


def punctuation_end(word: str) -> str:
    """What the punctuation at the end of `word` ends ("sentence", "clause"
    or ""), closing quotes and brackets aside; "Mr." ends no sentence."""
    text = word.rstrip(_CLOSING_MARKS) or word
    if not text:
        return ""
    if text[-1] in _SENTENCE_ENDS and text.lower() not in _ABBREVIATIONS:
        return "sentence"
    if text[-1] in _CLAUSE_ENDS:
        return "clause"
    return ""


def _break_kind(token: _Token, following: _Token | None) -> str:
    """What ends `token`: a sentence, a clause, a pause before the next word, or nothing."""
    if ending := punctuation_end(token.text):
        return ending
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


def _width(text: str) -> int:
    """Width on screen: a wide (CJK) character counts as two."""
    if text.isascii():
        return len(text)
    return sum(2 if unicodedata.east_asian_width(char) in "WF" else 1 for char in text)


def _min_line_count(tokens: Sequence[_Token], max_line_chars: int) -> int:
    """Fewest lines that hold `tokens` (filling each line as far as it goes is optimal)."""
    line_count, width = 1, 0
    for index, token in enumerate(tokens):
        separator = 1 if index and token.space_before else 0
        token_width = _width(token.text)
        if index == 0:
            width = token_width
        elif width + separator + token_width <= max_line_chars:
            width += separator + token_width
        else:
            line_count += 1
            width = token_width
    return line_count


def _fits(tokens: Sequence[_Token], options: SubtitleOptions) -> bool:
    if len(tokens) == 1:
        return True
    if options.max_words and len(tokens) > options.max_words:
        return False
    duration_ms = tokens[-1].end_ms - tokens[0].start_ms
    return (
        duration_ms <= whole_ms(options.max_cue_duration_s)
        and _min_line_count(tokens, options.max_line_chars) <= options.max_lines
    )


def _split_cues(
    tokens: Sequence[_Token], options: SubtitleOptions, next_start_ms: int | None = None
) -> list[Sequence[_Token]]:
    """Cut tokens into cues that fit, at the least total cost (dynamic programming over cut points).

    A cue costs 1, plus up to 1 more the emptier it is (so text is spread
    evenly rather than leaving a last word alone), plus the cost of the cut
    that ends it: nothing after a sentence or a long pause, more after a
    clause or a pause, most between two words of a running phrase; plus,
    when it would be too fast to read even shown until the next word
    (`next_start_ms` after the last token), `_READING_COST` for each time
    over the reading speed: fast words then share a cue with slower ones
    where the other rules allow, rather than flashing by alone.
    """
    capacity_chars = options.max_line_chars * options.max_lines
    gap_ms, max_cue_ms = whole_ms(options.gap_s), whole_ms(options.max_cue_duration_s)
    best_cost = [0.0] + [math.inf] * len(tokens)
    best_start = [0] * (len(tokens) + 1)
    for end in range(1, len(tokens) + 1):
        following = tokens[end] if end < len(tokens) else None
        cut_cost = 0.0 if following is None else _CUE_BREAK_COST[_break_kind(tokens[end - 1], following)]
        for start in range(end - 1, -1, -1):
            cue = tokens[start:end]
            if not _fits(cue, options):
                break
            text = _join(cue)
            emptiness = max(0.0, 1.0 - _width(text) / capacity_chars)
            cost = best_cost[start] + 1.0 + emptiness**2 + cut_cost
            shown_until_ms = following.start_ms if following is not None else next_start_ms
            if shown_until_ms is not None:  # the last cue of all can stay up as long as it needs
                shown_until_ms -= gap_ms
                shown_ms = max(cue[-1].end_ms, min(shown_until_ms, cue[0].start_ms + max_cue_ms)) - cue[0].start_ms
                speed = len(text) * 1000 / max(1, shown_ms) / options.max_chars_per_second
                cost += _READING_COST * max(0.0, speed - 1.0)
            if cost < best_cost[end]:
                best_cost[end], best_start[end] = cost, start
    cues: list[Sequence[_Token]] = []
    end = len(tokens)
    while end > 0:
        cues.append(tokens[best_start[end] : end])
        end = best_start[end]
    return cues[::-1]


def _line_break_cost(token: _Token, following: _Token) -> float:
    """Cost of a line break between two words: cheap after a sentence or a
    clause and before a conjunction or preposition; dear after an article, a
    determiner or a subject pronoun (which belong with what follows), and
    between two capitalised words (a name)."""
    kind = _break_kind(token, following)
    cost = _LINE_BREAK_COST[kind]
    if kind in ("sentence", "clause"):
        return cost
    word = token.text.lower().strip(_CLOSING_MARKS + "\"'(")
    if word in _GLUE_AFTER:
        cost += 400.0
    elif following.text.lower() in _BREAK_BEFORE:
        cost -= 40.0
    if token.text[:1].isupper() and following.text[:1].isupper() and len(token.text) > 1:
        cost += 150.0
    return cost


def _layout_lines(tokens: Sequence[_Token], options: SubtitleOptions) -> list[list[_Token]]:
    """Lay a cue's tokens out on as few lines as they need, as even in length as can be.

    Lines are chosen by dynamic programming: the squared difference of each
    line's width from the mean, plus the cost of each line break
    (`_line_break_cost`), plus a little for an upper line longer than the
    mean (when lines cannot be equal, the lower one is the longer).
    """
    line_count = _min_line_count(tokens, options.max_line_chars)
    if line_count == 1:
        return [list(tokens)]
    target_chars = _width(_join(tokens)) / line_count
    count = len(tokens)
    # cost[lines][end]: best cost of laying out tokens[:end] on `lines` lines.
    cost = [[math.inf] * (count + 1) for _ in range(line_count + 1)]
    start_of = [[0] * (count + 1) for _ in range(line_count + 1)]
    cost[0][0] = 0.0
    for lines in range(1, line_count + 1):
        for end in range(1, count + 1):
            break_cost = 0.0
            if lines < line_count and end < count:
                break_cost = _line_break_cost(tokens[end - 1], tokens[end])
            for start in range(end - 1, -1, -1):
                if cost[lines - 1][start] == math.inf:
                    continue
                width = _width(_join(tokens[start:end]))
                if width > options.max_line_chars and end - start > 1:
                    break
                top_heavy = 2.0 * max(0.0, width - target_chars) if lines < line_count else 0.0
                line_cost = cost[lines - 1][start] + (width - target_chars) ** 2 + break_cost + top_heavy
                if line_cost < cost[lines][end]:
                    cost[lines][end], start_of[lines][end] = line_cost, start
    laid_out: list[list[_Token]] = []
    end = count
    for lines in range(line_count, 0, -1):
        start = start_of[lines][end]
        laid_out.append(list(tokens[start:end]))
        end = start
    return laid_out[::-1]


def _fix_times(laid_out: Sequence[Sequence[Sequence[_Token]]], options: SubtitleOptions) -> list[Cue]:
    """Cues from laid-out tokens, in order, timed from their words, then
    adjusted: at least `gap_s` between cues (the earlier one ends sooner),
    gaps under `close_gap_s` closed to `gap_s` (the earlier one stays up),
    each cue at least `min_cue_duration_s` long and slow enough to read
    (`max_chars_per_second`) where the next cue leaves room, at most
    `max_cue_duration_s`, none overlapping, each at least 1 ms."""
    min_ms, max_ms = max(1, whole_ms(options.min_cue_duration_s)), whole_ms(options.max_cue_duration_s)
    gap_ms, close_ms = whole_ms(options.gap_s), whole_ms(options.close_gap_s)
    raw = [(lines[0][0].start_ms, lines[-1][-1].end_ms) for lines in laid_out]
    cues = []
    previous_end_ms = -gap_ms
    for index, lines in enumerate(laid_out):
        raw_start_ms, raw_end_ms = raw[index]
        start_ms = max(raw_start_ms, previous_end_ms + gap_ms if index else raw_start_ms, previous_end_ms)
        chars = sum(len(_join(line)) for line in lines)
        reading_ms = math.ceil(chars / options.max_chars_per_second * 1000)
        end_ms = min(max(raw_end_ms, start_ms + min_ms, start_ms + reading_ms), start_ms + max_ms)
        if index + 1 < len(laid_out):
            next_start_ms = raw[index + 1][0]
            if 0 <= next_start_ms - end_ms < close_ms + gap_ms:
                # A short gap is closed to the least gap: the cue stays up.
                end_ms = min(next_start_ms - gap_ms, start_ms + max_ms)
            end_ms = min(end_ms, next_start_ms - gap_ms)
            end_ms = max(end_ms, start_ms + 1)
        line_words = tuple(
            tuple(
                (
                    (" " if position and token.space_before else "") + token.text,
                    min(max(token.start_ms, start_ms), end_ms) / 1000,
                )
                for position, token in enumerate(line)
            )
            for line in lines
        )
        cues.append(Cue(start_ms / 1000, end_ms / 1000, tuple(_join(line) for line in lines), line_words))
        previous_end_ms = end_ms
    return cues


# --- formatting -------------------------------------------------------------


def whole_ms(seconds: float) -> int:
    """Seconds to whole milliseconds, negative and non-finite times to 0."""
    return round(seconds * 1000) if math.isfinite(seconds) and seconds > 0 else 0

"""Subtitles and transcripts in every format: SubRip, WebVTT, ASS (karaoke
word highlighting in both), JSON and plain text, rendered from the cues of
cues.py (RTTM speaker turns: speakers.py). Pure Python: no gRPC, no numpy.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from enum import StrEnum
from typing import Any

from common.errors import InvalidInputError
from common.transcript import Segment, doubt_flags
from gateway.output.cues import Cue, SubtitleOptions, build_cues, check_cues, whole_ms


class SubtitleFormat(StrEnum):
    """Output formats of `render`."""

    SRT = "srt"
    VTT = "vtt"
    JSON = "json"
    TEXT = "text"
    ASS = "ass"


CONTENT_TYPES: dict[SubtitleFormat, str] = {
    SubtitleFormat.SRT: "application/x-subrip",
    SubtitleFormat.VTT: "text/vtt",
    SubtitleFormat.JSON: "application/json",
    SubtitleFormat.TEXT: "text/plain",
    SubtitleFormat.ASS: "text/x-ssa",
}


def render_srt(cues: Sequence[Cue]) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm --> HH:MM:SS,mmm`, a blank line after each."""
    blocks = [
        f"{number}\n{timestamp(cue.start_s, ',')} --> {timestamp(cue.end_s, ',')}\n"
        + "\n".join(line.replace("-->", "->") for line in cue.lines)
        for number, cue in enumerate(cues, start=1)
    ]
    return "".join(block + "\n\n" for block in blocks)


def render_vtt(cues: Sequence[Cue], *, highlight_words: bool = False) -> str:
    """WebVTT: the `WEBVTT` header, then cues `HH:MM:SS.mmm --> HH:MM:SS.mmm` with escaped text;
    with `highlight_words`, a timestamp tag before every word but the first
    (players show the words said so far as past, the rest as future)."""
    blocks = [
        f"{timestamp(cue.start_s, '.')} --> {timestamp(cue.end_s, '.')}\n"
        # The speaker as a voice span, for players and tools that read it.
        + (f"<v {_escape_vtt(cue.speaker)}>" if cue.speaker else "")
        + "\n".join(
            _highlighted_vtt_line(cue, number) if highlight_words and cue.line_words else _escape_vtt(line)
            for number, line in enumerate(cue.lines)
        )
        for cue in cues
    ]
    return "WEBVTT\n\n" + "".join(block + "\n\n" for block in blocks)


def _highlighted_vtt_line(cue: Cue, line_number: int) -> str:
    parts = []
    for position, (text, start_s) in enumerate(cue.line_words[line_number]):
        stripped = text.lstrip()
        space = text[: len(text) - len(stripped)]
        tag = f"<{timestamp(start_s, '.')}>" if line_number or position else ""
        parts.append(f"{space}{tag}{_escape_vtt(stripped)}")
    return "".join(parts)


def render_ass(cues: Sequence[Cue], *, highlight_words: bool = False) -> str:
    """Advanced SubStation Alpha (pysubs2) with one readable style: white
    text, black outline and shadow, at the bottom centre of a 1920x1080
    frame; with `highlight_words`, \\k karaoke tags."""
    import pysubs2

    document = pysubs2.SSAFile()
    document.info["PlayResX"], document.info["PlayResY"] = "1920", "1080"
    document.styles["Default"] = pysubs2.SSAStyle(
        fontname="Arial", fontsize=64, outline=3.0, shadow=1.0, marginv=60, alignment=pysubs2.Alignment.BOTTOM_CENTER
    )
    for cue in cues:
        if highlight_words and cue.line_words:
            lines = []
            for number, words in enumerate(cue.line_words):
                parts = []
                for position, (text, start_s) in enumerate(words):
                    following = (
                        words[position + 1][1]
                        if position + 1 < len(words)
                        else cue.line_words[number + 1][0][1]
                        if number + 1 < len(cue.line_words)
                        else cue.end_s
                    )
                    centiseconds = max(0, round((following - start_s) * 100))
                    parts.append(f"{{\\k{centiseconds}}}{_escape_ass(text)}")
                lines.append("".join(parts))
            text = "\\N".join(lines)
        else:
            text = "\\N".join(_escape_ass(line) for line in cue.lines)
        document.events.append(
            pysubs2.SSAEvent(start=whole_ms(cue.start_s), end=whole_ms(cue.end_s), text=text, name=cue.speaker)
        )
    return str(document.to_string("ass"))


def _escape_ass(text: str) -> str:
    # Braces start override blocks and a backslash an escape in ASS text.
    return text.replace("\\", "\uff3c").replace("{", "(").replace("}", ")")


def render_text(segments: Sequence[Segment]) -> str:
    """The transcript, one segment a line ("SPEAKER_00: ..." when diarized)."""
    lines = [
        (f"{segment.speaker}: " if segment.speaker else "") + " ".join(segment.text.split())
        for segment in segments
        if segment.text.strip()
    ]
    return "".join(line + "\n" for line in lines if line)


def render_json(
    segments: Sequence[Segment],
    language_code: str,
    audio_duration_s: float,
    options: SubtitleOptions | None = None,
) -> str:
    """The transcript as JSON; keys in a fixed order, times in seconds to the millisecond.

    `{"language_code", "duration_s", "text", "segments": [{"text", "start_s",
    "end_s", "flags", "speaker", "words": [{"text", "speaker", "start_s",
    "end_s", "probability", "interpolated"}]}], "speakers", "subtitle_violations":
    [{"cue", "rule", "value", "limit"}]}`: `speaker` is "" and `speakers`
    empty unless the job was diarized; the last lists each cue of the
    subtitles (as SRT numbers them) that still breaks a rule of `options`,
    and which.
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
                "flags": list(doubt_flags(segment)),
                "speaker": segment.speaker,
                "words": [
                    {
                        "text": word.text.strip(),
                        "speaker": segment.speaker,
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
        "speakers": sorted({segment.speaker for segment in segments if segment.speaker}),
        "subtitle_violations": [
            {"cue": violation.cue, "rule": violation.rule, "value": violation.value, "limit": violation.limit}
            for violation in check_cues(build_cues(segments, options), options)
            if math.isfinite(violation.value)
        ],
    }
    return json.dumps(document, ensure_ascii=False, indent=2, allow_nan=False) + "\n"


def render(
    format: SubtitleFormat | str,
    segments: Sequence[Segment],
    language_code: str,
    audio_duration_s: float,
    options: SubtitleOptions | None = None,
    *,
    highlight_words: bool = False,
) -> tuple[str, str]:
    """The transcript in `format` ("srt", "vtt", "json", "text", "ass") and its media type."""
    try:
        subtitle_format = SubtitleFormat(format)
    except ValueError:
        raise InvalidInputError(
            f"unknown subtitle format {format!r}; use one of {', '.join(f.value for f in SubtitleFormat)}"
        ) from None
    if subtitle_format is SubtitleFormat.SRT:
        content = render_srt(build_cues(segments, options))
    elif subtitle_format is SubtitleFormat.VTT:
        content = render_vtt(build_cues(segments, options), highlight_words=highlight_words)
    elif subtitle_format is SubtitleFormat.ASS:
        content = render_ass(build_cues(segments, options), highlight_words=highlight_words)
    elif subtitle_format is SubtitleFormat.JSON:
        content = render_json(segments, language_code, audio_duration_s, options)
    else:
        content = render_text(segments)
    return content, CONTENT_TYPES[subtitle_format]


# --- words ------------------------------------------------------------------


def timestamp(seconds: float, millisecond_separator: str) -> str:
    """`HH:MM:SS,mmm` (SubRip) or `HH:MM:SS.mmm` (WebVTT); hours grow past two digits if needed."""
    total_ms = whole_ms(seconds)
    hours, rest_ms = divmod(total_ms, 3_600_000)
    minutes, rest_ms = divmod(rest_ms, 60_000)
    whole_seconds, milliseconds = divmod(rest_ms, 1000)
    return f"{hours:02d}:{minutes:02d}:{whole_seconds:02d}{millisecond_separator}{milliseconds:03d}"


def _escape_vtt(line: str) -> str:
    return line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _json_seconds(seconds: float) -> float:
    return round(seconds, 3) if math.isfinite(seconds) else 0.0

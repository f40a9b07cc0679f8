"""`SubtitleOptions` messages to the subtitle writer's options: the preset,
then every field set in the message over it."""

from __future__ import annotations

import dataclasses
import math

from common.errors import InvalidInputError
from common.rpc.convert import duration_to_seconds
from gateway.output.cues import PRESETS, SubtitleOptions
from subtitler.gateway.v1 import gateway_pb2

PRESET_NAMES = {
    gateway_pb2.SUBTITLE_PRESET_UNSPECIFIED: "netflix",
    gateway_pb2.SUBTITLE_PRESET_NETFLIX: "netflix",
    gateway_pb2.SUBTITLE_PRESET_BBC: "bbc",
    gateway_pb2.SUBTITLE_PRESET_SHORT_VIDEO: "short-video",
}
MAX_LINE_CHARS = 200
MAX_LINES = 10


def subtitle_options(message: gateway_pb2.SubtitleOptions) -> tuple[SubtitleOptions, bool]:
    """(the writer's options, whether to highlight words); InvalidInputError
    for values out of range."""
    if message.preset not in PRESET_NAMES:
        raise InvalidInputError(f"unknown subtitle preset {message.preset}: use netflix, bbc or short-video")
    changes: dict[str, object] = {}
    if message.max_line_chars:
        if not 1 <= message.max_line_chars <= MAX_LINE_CHARS:
            raise InvalidInputError(f"max_line_chars {message.max_line_chars} must be between 1 and {MAX_LINE_CHARS}")
        changes["max_line_chars"] = message.max_line_chars
    if message.max_lines:
        if not 1 <= message.max_lines <= MAX_LINES:
            raise InvalidInputError(f"max_lines {message.max_lines} must be between 1 and {MAX_LINES}")
        changes["max_lines"] = message.max_lines
    for field, name in (
        ("min_cue_duration", "min_cue_duration_s"),
        ("max_cue_duration", "max_cue_duration_s"),
        ("min_gap", "min_gap_s"),
    ):
        if message.HasField(field):  # type: ignore[arg-type]
            changes[name] = duration_to_seconds(getattr(message, field))
    for field, name in (("frame_rate", "frame_rate"), ("max_chars_per_second", "max_chars_per_second")):
        value = getattr(message, field)
        if value:
            if not math.isfinite(value):
                raise InvalidInputError(f"{field} is not a number")
            changes[name] = round(float(value), 3)
    if message.max_words < 0:
        raise InvalidInputError(f"max_words {message.max_words} must not be negative")
    if message.max_words:
        changes["max_words"] = message.max_words
    if message.omit_doubtful:
        changes["omit_doubtful"] = True
    preset = PRESETS[PRESET_NAMES[message.preset]]
    if "max_cue_duration_s" in changes and "min_cue_duration_s" not in changes:
        changes["min_cue_duration_s"] = min(preset.min_cue_duration_s, float(changes["max_cue_duration_s"]))  # type: ignore[arg-type]
    try:
        return dataclasses.replace(preset, **changes), message.highlight_words  # type: ignore[arg-type]
    except InvalidInputError as error:
        raise InvalidInputError(f"subtitle options: {error}") from None

"""Speakers on a transcript: each word takes the speaker of the diarization
turn it overlaps most, and a segment is split where its words' speaker
changes, so that every segment (and every subtitle cue, which never spans
segments) has one speaker."""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from common.rpc.convert import duration_to_seconds
from common.transcript import Segment, Word
from subtitler.diarize.v1 import diarize_pb2

# A lone word shorter than this between another speaker's words is taken
# for diarization jitter at a turn's edge, not a turn of its own.
MIN_RUN_S = 0.5


@dataclass(frozen=True)
class Turn:
    start_s: float
    end_s: float
    speaker: str


def turns_from_proto(response: diarize_pb2.DiarizeResponse) -> list[Turn]:
    return [
        Turn(duration_to_seconds(turn.start_offset), duration_to_seconds(turn.end_offset), turn.speaker)
        for turn in response.turns
    ]


def render_rttm(turns: Sequence[Turn], file_id: str) -> str:
    """Turns in RTTM (NIST's Rich Transcription Time Marked format), one line a turn."""
    return "".join(
        f"SPEAKER {file_id} 1 {turn.start_s:.3f} {turn.end_s - turn.start_s:.3f} <NA> <NA> {turn.speaker} <NA> <NA>\n"
        for turn in turns
    )


def speaker_at(start_s: float, end_s: float, turns: Sequence[Turn]) -> str:
    """The speaker whose turns overlap [start_s, end_s] most; when none does,
    the one whose turn is nearest; "" without turns."""
    if not turns:
        return ""
    overlap: dict[str, float] = {}
    for turn in turns:
        shared = min(end_s, turn.end_s) - max(start_s, turn.start_s)
        if shared > 0:
            overlap[turn.speaker] = overlap.get(turn.speaker, 0.0) + shared
    if overlap:
        return max(overlap, key=lambda speaker: overlap[speaker])
    middle = (start_s + end_s) / 2
    nearest = min(turns, key=lambda turn: max(turn.start_s - middle, middle - turn.end_s, 0.0))
    return nearest.speaker


def assign_speakers(segments: Sequence[Segment], turns: Sequence[Turn]) -> list[Segment]:
    """`segments` with their speakers, split where the speaker changes
    between two words (a segment without words takes the speaker of its
    span). Without turns every speaker stays ""."""
    result: list[Segment] = []
    for segment in segments:
        if not turns:
            result.append(segment)
            continue
        if not segment.words:
            result.append(dataclasses.replace(segment, speaker=speaker_at(segment.start_s, segment.end_s, turns)))
            continue
        runs = _smooth(_grouped((speaker_at(word.start_s, word.end_s, turns), word) for word in segment.words))
        if len(runs) == 1:
            result.append(dataclasses.replace(segment, speaker=runs[0][0]))
            continue
        separator = " " if " " in segment.text.strip() else ""
        for position, (speaker, words) in enumerate(runs):
            result.append(
                dataclasses.replace(
                    segment,
                    text=separator.join(word.text.strip() for word in words),
                    start_s=segment.start_s if position == 0 else words[0].start_s,
                    end_s=segment.end_s if position == len(runs) - 1 else words[-1].end_s,
                    words=tuple(words),
                    speaker=speaker,
                )
            )
    return result


def _smooth(runs: list[tuple[str, list[Word]]]) -> list[tuple[str, list[Word]]]:
    """Runs of one short word join the run before them (the first, the one after)."""
    if len(runs) < 2:
        return runs
    kept: list[tuple[str, list[Word]]] = []
    for speaker, words in runs:
        lone = len(words) == 1 and words[0].end_s - words[0].start_s < MIN_RUN_S
        if kept and (lone or kept[-1][0] == speaker):
            kept[-1][1].extend(words)
        else:
            kept.append((speaker, list(words)))
    if len(kept) > 1 and len(kept[0][1]) == 1 and kept[0][1][0].end_s - kept[0][1][0].start_s < MIN_RUN_S:
        kept[1] = (kept[1][0], kept[0][1] + kept[1][1])
        kept.pop(0)
    return _grouped((speaker, word) for speaker, words in kept for word in words)


def _grouped(labelled: Iterable[tuple[str, Word]]) -> list[tuple[str, list[Word]]]:
    """Runs of consecutive words with the same speaker."""
    return [
        (speaker, [word for _, word in run]) for speaker, run in itertools.groupby(labelled, key=lambda pair: pair[0])
    ]

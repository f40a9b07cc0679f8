"""Word times from an aligner's output: placements of a text's whitespace
tokens, and the one place where unplaced words get interpolated times.

Used by the align service's aligners and by the ASR service when Whisper's
cross-attention word timestamps come with a transcription. `words_from_placements`
turns placements into `common.transcript.Word`s that cover every token in
order, with times that are non-decreasing, never overlap, and stay inside the
segment.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from common.transcript import Word

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class WordPlacement:
    """Where an aligner put one token, in seconds from the start of its window."""

    start_s: float
    end_s: float
    probability: float = 0.0


def split_tokens(text: str) -> list[str]:
    """The whitespace tokens of a text: the words the caller gets back."""
    return text.split()


def _weight(token: str) -> int:
    # Characters stand in for duration; at least one so every word gets time.
    return max(1, len(token))


def _spread(tokens: Sequence[str], start_s: float, end_s: float) -> list[tuple[float, float]]:
    """Splits [start_s, end_s] over `tokens` in proportion to their length."""
    weights = [_weight(token) for token in tokens]
    total = sum(weights)
    span_s = max(0.0, end_s - start_s)
    spans = []
    cursor = 0
    for weight in weights:
        spans.append((start_s + span_s * cursor / total, start_s + span_s * (cursor + weight) / total))
        cursor += weight
    return spans


def words_from_placements(
    tokens: Sequence[str],
    placements: Sequence[WordPlacement | None],
    *,
    offset_s: float,
    start_s: float,
    end_s: float,
    min_interpolated_word_s: float = 0.08,
) -> tuple[Word, ...]:
    """Words for every token, inside [start_s, end_s].

    `placements` are relative to `offset_s` (the start of the aligner's
    window). Placed times are clamped to the segment and made monotonic (a
    word starts no earlier than the previous one ends). Each run of unplaced
    tokens gets the gap between its placed neighbours (or the segment's edge),
    split by character length, and interpolated=True. When that gap is shorter
    than `min_interpolated_word_s` per unplaced token (the aligner stretched a
    neighbour over the unknown word), the run shares the span of its
    neighbours with them instead, again by character length.
    """
    if len(placements) != len(tokens):
        raise ValueError(f"{len(placements)} placements for {len(tokens)} tokens")
    times: list[tuple[float, float] | None] = []
    probabilities: list[float] = []
    cursor_s = start_s
    for placement in placements:
        if placement is None:
            times.append(None)
            probabilities.append(0.0)
            continue
        word_start_s = min(max(offset_s + placement.start_s, cursor_s), end_s)
        word_end_s = min(max(offset_s + placement.end_s, word_start_s), end_s)
        times.append((word_start_s, word_end_s))
        probabilities.append(placement.probability)
        cursor_s = word_end_s

    interpolated = [entry is None for entry in times]
    index = 0
    while index < len(times):
        if times[index] is not None:
            index += 1
            continue
        run_end = index
        while run_end < len(times) and times[run_end] is None:
            run_end += 1
        _fill_run(tokens, times, index, run_end, start_s, end_s, min_interpolated_word_s)
        index = run_end

    words = []
    for token, entry, probability, was_interpolated in zip(tokens, times, probabilities, interpolated, strict=True):
        assert entry is not None
        words.append(Word(token, entry[0], entry[1], probability=probability, interpolated=was_interpolated))
    return tuple(words)


def _fill_run(
    tokens: Sequence[str],
    times: list[tuple[float, float] | None],
    first: int,
    stop: int,
    start_s: float,
    end_s: float,
    min_interpolated_word_s: float,
) -> None:
    """Fills times[first:stop] (all None) from their neighbours."""
    before = times[first - 1] if first > 0 else None
    after = times[stop] if stop < len(times) else None
    gap_start_s = before[1] if before is not None else start_s
    gap_end_s = after[0] if after is not None else end_s
    if gap_end_s - gap_start_s >= min_interpolated_word_s * (stop - first) or (before is None and after is None):
        for offset, span in enumerate(_spread(tokens[first:stop], gap_start_s, gap_end_s)):
            times[first + offset] = span
        return
    # Too little room: re-share the neighbours' span with the run.
    lo = first - 1 if before is not None else first
    hi = stop + 1 if after is not None else stop
    span_start_s = before[0] if before is not None else start_s
    span_end_s = after[1] if after is not None else end_s
    for offset, span in enumerate(_spread(tokens[lo:hi], span_start_s, span_end_s)):
        times[lo + offset] = span


def placements_by_position(
    text: str, tokens: Sequence[str], alignment: Sequence[Mapping[str, Any]]
) -> list[WordPlacement | None]:
    """Maps aligned words onto whitespace tokens by where their characters lie
    in `text` (" " + tokens joined by single spaces). A token takes the
    earliest start, latest end and mean probability of the aligned words that
    overlap it; a token overlapped by none stays unplaced."""
    token_spans = []
    cursor = 1
    for token in tokens:
        token_spans.append((cursor, cursor + len(token)))
        cursor += len(token) + 1

    starts: list[float | None] = [None] * len(tokens)
    ends: list[float] = [0.0] * len(tokens)
    probabilities: list[list[float]] = [[] for _ in tokens]
    search_from = 0
    token_index = 0
    for item in alignment:
        word = str(item["word"]).strip()
        if not word:
            continue  # merged into a neighbour by merge_punctuations
        position = text.find(word, search_from)
        if position < 0:
            logger.debug("aligned word %r not found in the text; skipped", word)
            continue
        word_end = position + len(word)
        search_from = word_end
        while token_index < len(tokens) and token_spans[token_index][1] <= position:
            token_index += 1
        index = token_index
        while index < len(tokens) and token_spans[index][0] < word_end:
            start = starts[index]
            starts[index] = float(item["start"]) if start is None else min(start, float(item["start"]))
            ends[index] = max(ends[index], float(item["end"]))
            probabilities[index].append(float(item["probability"]))
            index += 1

    placements: list[WordPlacement | None] = []
    for start, end, probs in zip(starts, ends, probabilities, strict=True):
        placements.append(None if start is None else WordPlacement(start, max(start, end), sum(probs) / len(probs)))
    return placements

"""From aligner output to words: the interface every aligner implements, and
the one place where unplaced words get interpolated times.

An aligner places the whitespace tokens of a segment's text in a window of
audio. It may leave a token unplaced (None): pocketsphinx cannot place a word
missing from its dictionary, the cross-attention aligner a token that got no
text tokens. `words_from_placements` then turns the placements into
`common.transcript.Word`s that cover every token in order, with times that are
non-decreasing, never overlap, and stay inside the segment.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from common.transcript import Word

SAMPLE_RATE_HERTZ = 16_000
"""Every aligner takes 16 kHz mono float32 samples."""

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True)
class WordPlacement:
    """Where an aligner put one token, in seconds from the start of its window."""

    start_s: float
    end_s: float
    probability: float = 0.0


class WordAligner(Protocol):
    """A backend that places the tokens of a known text in audio."""

    def place_words(
        self, samples: Samples, tokens: Sequence[str], *, language_code: str, model: str
    ) -> list[WordPlacement | None]:
        """Places each token of `tokens` (the text split on whitespace, in
        order) in `samples` (16 kHz mono float32, the segment's window).

        Returns one entry per token: its placement relative to the start of
        `samples`, or None when it could not be placed. `model` names the
        Whisper model for aligners that use one (empty: the default).
        Raises on failure; the engine then interpolates the whole segment."""
        ...


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

"""The interface every aligner implements.

An aligner places the whitespace tokens of a segment's text in a window of
audio. It may leave a token unplaced (None): pocketsphinx cannot place a word
missing from its dictionary, the cross-attention aligner a token that got no
text tokens. `common.speech.word_timing.words_from_placements` then turns the
placements into words, interpolating the unplaced ones.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import numpy as np
import numpy.typing as npt

from common.speech.word_timing import WordPlacement

Samples = npt.NDArray[np.float32]


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

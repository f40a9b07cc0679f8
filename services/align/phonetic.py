"""English forced alignment with pocketsphinx.

pocketsphinx's alignment search (`Decoder.set_align_text`) matches a known
word sequence against the audio with the en-us acoustic model and CMU
dictionary shipped in the pocketsphinx wheel, and reports each word's first
and last frame (100 frames per second). The dictionary knows words only:
each token is normalised for lookup (lower case, surrounding punctuation
stripped, hyphenated parts looked up one by one); a token that still has no
pronunciation (numbers, symbols, most names) is left out of the alignment and
comes back unplaced, for the engine to interpolate.
"""

from __future__ import annotations

import logging
import queue
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import pocketsphinx

from common.speech.word_timing import WordPlacement
from services.align.placement import Samples

logger = logging.getLogger(__name__)

_FRAMES_PER_SECOND = 100
# Words of the search that are not words of the text.
_FILLER = re.compile(r"^(<s>|</s>|<sil>|\[.*\]|\+\+.*\+\+)$")
_ALTERNATE_PRONUNCIATION = re.compile(r"\(\d+\)$")
# Characters stripped from both ends of a token before lookup.
_EDGE_PUNCTUATION = "\"'\u201c\u201d\u2018\u2019.,;:!?\u00bf\u00a1()[]{}<>\u00ab\u00bb\u2026\u2014\u2013-"
# Typographic apostrophes (U+2018, U+2019) spelled as the dictionary does.
_APOSTROPHES = str.maketrans({"\u2019": "'", "\u2018": "'"})
# Hyphens, dashes (U+2013, U+2014) and slashes between the parts of a compound.
_COMPOUND_SEPARATOR = re.compile("[-\u2013\u2014/]")


@dataclass(frozen=True)
class PhoneticOptions:
    """Options of the pocketsphinx aligner."""

    # Level of pocketsphinx's own C logging, which bypasses `logging` and
    # goes straight to stderr. "FATAL" keeps service logs structured: a failed
    # alignment is reported by the engine's warning instead.
    log_level: str = "FATAL"


class PhoneticAligner:
    """Places English words by forced alignment (see module doc).

    pocketsphinx decoders are not thread-safe, so each call borrows one from
    a pool that grows to the number of concurrent calls."""

    def __init__(self, options: PhoneticOptions | None = None) -> None:
        self.options = options or PhoneticOptions()
        self._idle: queue.SimpleQueue[pocketsphinx.Decoder] = queue.SimpleQueue()

    def load(self, decoders: int = 1) -> None:
        """Loads `decoders` decoders now (acoustic model and dictionary each,
        0.15 s), one for each alignment that runs at once, instead of on the
        first calls."""
        for _ in range(max(0, decoders - self._idle.qsize())):
            self._idle.put(self._new_decoder())

    def _new_decoder(self) -> pocketsphinx.Decoder:
        return pocketsphinx.Decoder(lm=None, loglevel=self.options.log_level)

    @contextmanager
    def _decoder(self) -> Iterator[pocketsphinx.Decoder]:
        try:
            decoder = self._idle.get_nowait()
        except queue.Empty:
            decoder = self._new_decoder()
        try:
            yield decoder
        finally:
            self._idle.put(decoder)

    def place_words(
        self, samples: Samples, tokens: Sequence[str], *, language_code: str = "en", model: str = ""
    ) -> list[WordPlacement | None]:
        if not tokens:
            return []
        with self._decoder() as decoder:
            pronounceable = [dictionary_words(decoder, token) for token in tokens]
            sequence = [word for words in pronounceable for word in words]
            if not sequence:
                return [None] * len(tokens)
            decoder.set_align_text(" ".join(sequence))
            pcm = (np.clip(samples, -1.0, 1.0) * 32767.0).astype("<i2").tobytes()
            decoder.start_utt()
            decoder.process_raw(pcm, full_utt=True)
            decoder.end_utt()
            if decoder.hyp() is None:
                raise RuntimeError("pocketsphinx found no alignment of the text to the audio")
            aligned = [
                (_ALTERNATE_PRONUNCIATION.sub("", item.word), item.start_frame, item.end_frame, float(item.prob))
                for item in decoder.seg()
                if not _FILLER.match(item.word)
            ]
        # When the search does not reach the end of the text (the audio stops
        # short of it), pocketsphinx returns the best partial path: the words
        # it did not reach stay unplaced.
        if [word for word, *_ in aligned] != sequence[: len(aligned)]:
            raise RuntimeError(f"pocketsphinx aligned words that are not the text's: {aligned[:5]}")
        placements: list[WordPlacement | None] = []
        cursor = 0
        for words in pronounceable:
            parts = aligned[cursor : cursor + len(words)]
            cursor += len(words)
            if not words or len(parts) < len(words):
                placements.append(None)
                continue
            placements.append(
                WordPlacement(
                    start_s=parts[0][1] / _FRAMES_PER_SECOND,
                    end_s=(parts[-1][2] + 1) / _FRAMES_PER_SECOND,
                    probability=min(1.0, max(0.0, float(np.mean([part[3] for part in parts])))),
                )
            )
        return placements


def dictionary_words(decoder: pocketsphinx.Decoder, token: str) -> list[str]:
    """The dictionary words a token is aligned as: the token normalised for
    lookup, or its hyphenated parts; [] when any part is not in the
    dictionary."""
    normalised = token.translate(_APOSTROPHES).lower().strip(_EDGE_PUNCTUATION)
    if not normalised:
        return []
    if decoder.lookup_word(normalised) is not None:
        return [normalised]
    parts = [part.strip(_EDGE_PUNCTUATION) for part in _COMPOUND_SEPARATOR.split(normalised)]
    parts = [part for part in parts if part]
    if len(parts) > 1 and all(decoder.lookup_word(part) is not None for part in parts):
        return parts
    return []

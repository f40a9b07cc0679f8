"""Word alignment from Whisper's cross-attention, through CTranslate2.

The mechanism behind faster-whisper's ``word_timestamps=True``, applied to a
text we already have: the segment's audio window (at most 30 s) is encoded
once, the text is tokenized, `ctranslate2.models.Whisper.align` runs dynamic
time warping over the attention of the model's alignment heads, and
faster-whisper's own `WhisperModel.find_alignment` and `merge_punctuations`
turn that into words. Those words are then mapped back onto the whitespace
tokens of the original text by character position, so the caller's spelling
and punctuation are kept exactly. Works for any language the model knows;
an English-only model aligns other languages' text with its English tokens.

Encoding costs the same 30 s of audio whatever the window's length, so the
engine hands this aligner several consecutive segments at once
(`AlignOptions.pack_window_s`), as faster-whisper aligns all the segments of
one window together.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from faster_whisper import WhisperModel
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import merge_punctuations

from common.errors import SuiteError
from common.limits import SAMPLE_RATE_HERTZ
from common.speech.languages import to_whisper_language
from common.speech.whisper_models import ATTENTION_MEDIAN_FILTER_WIDTH
from common.speech.word_timing import WordPlacement, placements_by_position
from services.align.placement import Samples

logger = logging.getLogger(__name__)

# Windows shorter than this (50 ms) are not aligned; their words are interpolated.
_MIN_WINDOW_SAMPLES = SAMPLE_RATE_HERTZ // 20

WhisperModelProvider = Callable[[str], WhisperModel]
"""Returns the loaded Whisper model of a name (empty: the default model);
raises `NotFoundError` for an unknown one. Shared with the ASR's model cache."""


@dataclass(frozen=True)
class CrossAttentionOptions:
    """Options of the cross-attention aligner (faster-whisper's defaults)."""

    # Width of the median filter over the attention weights, in frames (the
    # ASR's; faster-whisper's is 7).
    median_filter_width: int = ATTENTION_MEDIAN_FILTER_WIDTH
    # Punctuation that sticks to the following word.
    prepend_punctuations: str = "\"'“¿([{-"
    # Punctuation that sticks to the preceding word.
    append_punctuations: str = "\"'.。,，!！?？:：”)]}、"  # noqa: RUF001 - full-width marks intended
    # Longest window the encoder takes; longer segments are cut into this many
    # seconds at most, their words shared out by character length.
    max_window_s: float = 30.0
    # Silence at the edges of a window is cut before aligning: dynamic time
    # warping makes the first word start at the window's first frame and the
    # last end at its last, so leading silence would stretch the first word.
    # Frames (10 ms) more than this many dB below the window's loudest frame
    # count as silence; None: no trimming.
    edge_silence_db: float | None = 35.0


class CrossAttentionAligner:
    """Places words with Whisper's cross-attention (see module doc)."""

    def __init__(self, models: WhisperModelProvider, options: CrossAttentionOptions | None = None) -> None:
        self._models = models
        self.options = options or CrossAttentionOptions()

    def place_words(
        self, samples: Samples, tokens: Sequence[str], *, language_code: str, model: str
    ) -> list[WordPlacement | None]:
        if not tokens:
            return []
        whisper = self._models(model)
        placements: list[WordPlacement | None] = []
        for first, stop, window_start, window_stop in _windows(
            tokens, len(samples), round(self.options.max_window_s * SAMPLE_RATE_HERTZ)
        ):
            offset_s = window_start / SAMPLE_RATE_HERTZ
            window = self._place_window(whisper, samples[window_start:window_stop], tokens[first:stop], language_code)
            placements.extend(
                None
                if placement is None
                else WordPlacement(placement.start_s + offset_s, placement.end_s + offset_s, placement.probability)
                for placement in window
            )
        return placements

    def _place_window(
        self, whisper: WhisperModel, samples: Samples, tokens: Sequence[str], language_code: str
    ) -> list[WordPlacement | None]:
        first, stop = 0, len(samples)
        if self.options.edge_silence_db is not None:
            first, stop = voiced_span(samples, self.options.edge_silence_db)
        if stop - first < _MIN_WINDOW_SAMPLES:
            return [None] * len(tokens)
        offset_s = first / SAMPLE_RATE_HERTZ
        return [
            None
            if placement is None
            else WordPlacement(placement.start_s + offset_s, placement.end_s + offset_s, placement.probability)
            for placement in self._align(whisper, samples[first:stop], tokens, language_code)
        ]

    def _align(
        self, whisper: WhisperModel, samples: Samples, tokens: Sequence[str], language_code: str
    ) -> list[WordPlacement | None]:
        # As faster-whisper does: features of the window without the last
        # (padding) frame, padded to the encoder's 30 s.
        features = whisper.feature_extractor(samples)[..., :-1]
        num_frames = min(int(features.shape[-1]), whisper.feature_extractor.nb_max_frames)
        encoder_output = whisper.encode(pad_or_trim(features))
        tokenizer = self._tokenizer(whisper, language_code, encoder_output)
        text = " " + " ".join(tokens)
        text_tokens = tokenizer.encode(text)
        alignment: list[dict[str, Any]] = whisper.find_alignment(
            tokenizer, [text_tokens], encoder_output, num_frames, self.options.median_filter_width
        )[0]
        merge_punctuations(alignment, self.options.prepend_punctuations, self.options.append_punctuations)
        return placements_by_position(text, tokens, alignment)

    def _tokenizer(self, whisper: WhisperModel, language_code: str, encoder_output: Any) -> Tokenizer:
        if not whisper.model.is_multilingual:
            # An English-only model still aligns other text, with English tokens.
            return Tokenizer(whisper.hf_tokenizer, False)
        try:
            language = to_whisper_language(language_code, tuple(whisper.supported_languages))
        except SuiteError:
            language = whisper.model.detect_language(encoder_output)[0][0][0][2:-2]
            logger.debug("language %r unknown to the model; aligning as detected %r", language_code, language)
        return Tokenizer(whisper.hf_tokenizer, True, task="transcribe", language=language)


def voiced_span(samples: Samples, silence_db: float, frame_samples: int = 160) -> tuple[int, int]:
    """The sample range from the first to the last frame no more than
    `silence_db` below the loudest frame; the whole range when all is silent."""
    frame_count = len(samples) // frame_samples
    if frame_count == 0:
        return 0, len(samples)
    frames = samples[: frame_count * frame_samples].reshape(frame_count, frame_samples).astype(np.float64)
    energy = np.mean(frames * frames, axis=1)
    peak = float(energy.max())
    if peak <= 0.0:
        return 0, len(samples)
    loud = np.flatnonzero(energy >= peak * 10.0 ** (-silence_db / 10.0))
    first = int(loud[0]) * frame_samples
    stop = len(samples) if loud[-1] == frame_count - 1 else (int(loud[-1]) + 1) * frame_samples
    return first, stop


def _windows(tokens: Sequence[str], sample_count: int, max_window_samples: int) -> list[tuple[int, int, int, int]]:
    """Cuts a long window into equal pieces of at most `max_window_samples`,
    giving each the tokens whose characters fall in its share of the text:
    (first token, stop token, first sample, stop sample) per piece."""
    pieces = max(1, math.ceil(sample_count / max_window_samples))
    if pieces == 1:
        return [(0, len(tokens), 0, sample_count)]
    lengths = np.array([len(token) + 1 for token in tokens], dtype=np.float64)
    # Where the middle of each token lies in the text, in characters.
    middles = np.cumsum(lengths) - lengths / 2
    total = float(lengths.sum())
    windows = []
    first = 0
    for piece in range(pieces):
        if piece == pieces - 1:
            stop = len(tokens)
        else:
            stop = max(first, int(np.searchsorted(middles, total * (piece + 1) / pieces)))
        windows.append((first, stop, sample_count * piece // pieces, sample_count * (piece + 1) // pieces))
        first = stop
    return windows

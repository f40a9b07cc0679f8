"""The align engine: picks the aligner for a request, falls back where it
must, and turns every segment's text into timed words.

Choice of method: phonetic (pocketsphinx) for English when it is available,
cross-attention (Whisper) otherwise. Phonetic asked for a language other than
English falls back to cross-attention: the job never fails for it. When an
aligner fails on a segment, that segment's words are interpolated over the
segment by character length (interpolated=True) and a warning is logged; a
domain error (e.g. an unknown model, `NotFoundError`) still reaches the caller.
"""

from __future__ import annotations

import contextlib
import enum
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from common.errors import InvalidInputError, SuiteError
from common.limits import SAMPLE_RATE_HERTZ
from common.speech.silence_snap import snap_words_to_sound
from common.speech.word_timing import WordPlacement, split_tokens, words_from_placements
from common.transcript import Segment
from services.align.placement import Samples, WordAligner

logger = logging.getLogger(__name__)

_ONE_SAMPLE_S = 1.0 / SAMPLE_RATE_HERTZ
# The warm-up's calibrated alignment (`AlignEngine.calibrate`): a chunk of 30 s
# of speech, Whisper's window, in segments of 2.5 s of 7 words each (168 words
# a minute, as dense as bench.media's realistic recording).
CALIBRATION_AUDIO_S = 30.0
CALIBRATION_SEGMENT_S = 2.5
CALIBRATION_TEXT = "we will meet again at the station"


class AlignMethod(enum.Enum):
    """How words are placed in time (the proto's AlignMethod without UNSPECIFIED)."""

    CROSS_ATTENTION = "cross_attention"
    PHONETIC = "phonetic"


@dataclass(frozen=True)
class AlignOptions:
    """Options of the align engine."""

    # Move each segment's start and end to its first word's start and last
    # word's end (never outside the segment as given).
    tighten_segments: bool = True
    # Least time an interpolated word gets before its run borrows time from
    # its placed neighbours (see `words_from_placements`).
    min_interpolated_word_s: float = 0.08
    # Segments shorter than this are not given to an aligner; their words are interpolated.
    min_aligned_segment_s: float = 0.1
    # Cross-attention only: consecutive segments spanning at most this much
    # audio together are aligned in one call, as faster-whisper aligns the
    # segments of one 30 s window (one encoder pass instead of one per
    # segment); 0: each segment alone.
    pack_window_s: float = 30.0
    # How far a segment may end past the end of the audio (rounding of the
    # recogniser's timestamps) before it is refused as outside the audio.
    end_tolerance_s: float = 0.1


@dataclass(frozen=True)
class AlignResult:
    """Aligned segments and how they were aligned."""

    # The segments, in order, each with its words (segments with no text: unchanged).
    segments: tuple[Segment, ...]
    # The method used, after any fallback.
    method: AlignMethod
    # Segments whose aligner failed, so all their words were interpolated.
    failed_segment_count: int = 0


def is_english(language_code: str) -> bool:
    """Whether a BCP-47 code names English ("en", "en-US", "en_GB"...)."""
    return language_code.strip().replace("_", "-").split("-", 1)[0].lower() == "en"


def validate_segments(segments: Sequence[Segment], audio_duration_s: float, *, end_tolerance_s: float = 0.1) -> None:
    """Raises `InvalidInputError` for a segment that ends before it starts or
    lies outside [0, audio_duration_s] (plus `end_tolerance_s` at the end)."""
    for index, segment in enumerate(segments):
        if segment.end_s < segment.start_s:
            raise InvalidInputError(
                f"segment {index} ends ({segment.end_s:.3f} s) before it starts ({segment.start_s:.3f} s)"
            )
        if segment.start_s < 0 or segment.end_s > audio_duration_s + end_tolerance_s:
            raise InvalidInputError(
                f"segment {index} [{segment.start_s:.3f} s, {segment.end_s:.3f} s] lies outside the audio "
                f"[0, {audio_duration_s:.3f} s]"
            )


class AlignEngine:
    """Aligns the words of transcript segments to audio (see module doc)."""

    def __init__(
        self,
        cross_attention: WordAligner,
        phonetic: WordAligner | None = None,
        options: AlignOptions | None = None,
    ) -> None:
        self._cross_attention = cross_attention
        self._phonetic = phonetic
        self.options = options or AlignOptions()

    def method_for(self, language_code: str, requested: AlignMethod | None = None) -> AlignMethod:
        """The method used for a request: `requested` (None: let the engine
        choose) unless it cannot serve the language."""
        phonetic_fits = self._phonetic is not None and is_english(language_code)
        if requested is AlignMethod.CROSS_ATTENTION or not phonetic_fits:
            if requested is AlignMethod.PHONETIC:
                logger.debug("phonetic alignment has no model for %r; using cross-attention", language_code)
            return AlignMethod.CROSS_ATTENTION
        return AlignMethod.PHONETIC

    def align(
        self,
        segments: Sequence[Segment],
        samples: Samples,
        *,
        samples_start_s: float = 0.0,
        language_code: str = "",
        method: AlignMethod | None = None,
        model: str = "",
    ) -> AlignResult:
        """Aligns `segments` to `samples` (16 kHz mono float32 starting at
        `samples_start_s` in the audio, covering every segment).

        Every whitespace token of each segment's text comes back as a word, in
        order, with its punctuation; times are non-decreasing and inside the
        segment. Raises `InvalidInputError` for a bad segment."""
        samples_end_s = samples_start_s + len(samples) / SAMPLE_RATE_HERTZ
        for index, segment in enumerate(segments):
            if not split_tokens(segment.text):
                continue  # returned as it is
            if segment.end_s < segment.start_s or segment.start_s < samples_start_s - _ONE_SAMPLE_S:
                raise InvalidInputError(
                    f"segment {index} [{segment.start_s:.3f} s, {segment.end_s:.3f} s] is not inside the samples "
                    f"given [{samples_start_s:.3f} s, {samples_end_s:.3f} s]"
                )
            if segment.end_s > samples_end_s + self.options.end_tolerance_s:
                raise InvalidInputError(
                    f"segment {index} ends at {segment.end_s:.3f} s, after the samples given ({samples_end_s:.3f} s)"
                )
        chosen = self.method_for(language_code, method)
        aligner = self._phonetic if chosen is AlignMethod.PHONETIC else self._cross_attention
        assert aligner is not None
        started = time.perf_counter()
        aligned = list(segments)
        failed = 0
        pack_window_s = self.options.pack_window_s if chosen is AlignMethod.CROSS_ATTENTION else 0.0
        for group in _groups(segments, pack_window_s):
            results, ok = self._align_group(
                aligner, [segments[index] for index in group], samples, samples_start_s, language_code, model
            )
            for index, result in zip(group, results, strict=True):
                aligned[index] = result
            failed += 0 if ok else len(group)
        if chosen is AlignMethod.CROSS_ATTENTION:
            # Cross-attention starts words early after a pause: move them out
            # of silence, the silences found once for the whole window.
            aligned = list(snap_words_to_sound(aligned, samples, samples_start_s))
        logger.debug(
            "aligned %d segments with %s in %.3f s (%d failed)",
            len(segments),
            chosen.value,
            time.perf_counter() - started,
            failed,
        )
        return AlignResult(tuple(aligned), chosen, failed)

    def calibrate(self, method: AlignMethod, *, model: str = "", duration_s: float = CALIBRATION_AUDIO_S) -> float:
        """Seconds one alignment of `duration_s` of speech with `method`
        takes, its segments grouped as `align` groups them (the warm-up's
        measure, `common.machine.capacity`). Noise stands in for the speech: neither
        aligner's cost depends on what the audio holds (30 s, 67 words:
        pocketsphinx 0.20 s on noise, 0.21 s on the real speech; cross-attention
        0.48 s on both, on one core). pocketsphinx searches all of the noise
        and then finds no path through it: that failure is expected here."""
        samples = np.random.default_rng(0).normal(0.0, 0.05, round(duration_s * SAMPLE_RATE_HERTZ)).astype(np.float32)
        count = max(1, round(duration_s / CALIBRATION_SEGMENT_S))
        segments = [
            Segment(text=CALIBRATION_TEXT, start_s=index * duration_s / count, end_s=(index + 1) * duration_s / count)
            for index in range(count)
        ]
        aligner = self._phonetic if method is AlignMethod.PHONETIC else self._cross_attention
        if aligner is None:
            raise ValueError(f"no {method.value} aligner to calibrate")
        pack_window_s = self.options.pack_window_s if method is AlignMethod.CROSS_ATTENTION else 0.0
        started = time.perf_counter()
        for group in _groups(segments, pack_window_s):
            first = round(segments[group[0]].start_s * SAMPLE_RATE_HERTZ)
            stop = round(segments[group[-1]].end_s * SAMPLE_RATE_HERTZ)
            tokens = [token for index in group for token in split_tokens(segments[index].text)]
            with contextlib.suppress(RuntimeError) if method is AlignMethod.PHONETIC else contextlib.nullcontext():
                aligner.place_words(samples[first:stop], tokens, language_code="en", model=model)
        return time.perf_counter() - started

    def _align_group(
        self,
        aligner: WordAligner,
        group: Sequence[Segment],
        samples: Samples,
        samples_start_s: float,
        language_code: str,
        model: str,
    ) -> tuple[list[Segment], bool]:
        """Aligns consecutive segments with one aligner call over the audio
        from the first one's start to the last one's end."""
        tokens = [split_tokens(segment.text) for segment in group]
        all_tokens = [token for segment_tokens in tokens for token in segment_tokens]
        start_s, end_s = group[0].start_s, max(segment.end_s for segment in group)
        first = max(0, round((start_s - samples_start_s) * SAMPLE_RATE_HERTZ))
        stop = min(len(samples), round((end_s - samples_start_s) * SAMPLE_RATE_HERTZ))
        window_start_s = samples_start_s + first / SAMPLE_RATE_HERTZ
        placements: Sequence[WordPlacement | None] = [None] * len(all_tokens)
        ok = True
        if (stop - first) / SAMPLE_RATE_HERTZ >= self.options.min_aligned_segment_s:
            try:
                placements = aligner.place_words(
                    samples[first:stop], all_tokens, language_code=language_code, model=model
                )
                if len(placements) != len(all_tokens):
                    raise RuntimeError(f"{len(placements)} placements for {len(all_tokens)} words")
            except SuiteError:
                raise
            except Exception:  # any aligner failure degrades these segments to interpolation
                logger.warning(
                    "aligner failed on %d segment(s) [%.2f s, %.2f s]; interpolating their %d words",
                    len(group),
                    start_s,
                    end_s,
                    len(all_tokens),
                    exc_info=True,
                )
                placements = [None] * len(all_tokens)
                ok = False
        results = []
        cursor = 0
        for segment, segment_tokens in zip(group, tokens, strict=True):
            words = words_from_placements(
                segment_tokens,
                placements[cursor : cursor + len(segment_tokens)],
                offset_s=window_start_s,
                start_s=segment.start_s,
                end_s=segment.end_s,
                min_interpolated_word_s=self.options.min_interpolated_word_s,
            )
            cursor += len(segment_tokens)
            if self.options.tighten_segments and any(not word.interpolated for word in words):
                results.append(replace(segment, start_s=words[0].start_s, end_s=words[-1].end_s, words=words))
            else:
                results.append(replace(segment, words=words))
        return results, ok


def _groups(segments: Sequence[Segment], pack_window_s: float) -> list[list[int]]:
    """Indexes of the segments with text, grouped for one aligner call each:
    consecutive, non-overlapping segments spanning at most `pack_window_s`
    together (0: every segment alone)."""
    groups: list[list[int]] = []
    group_start_s = group_end_s = 0.0
    for index, segment in enumerate(segments):
        if not split_tokens(segment.text):
            continue
        if groups and segment.start_s >= group_end_s - _ONE_SAMPLE_S and segment.end_s - group_start_s <= pack_window_s:
            groups[-1].append(index)
        else:
            groups.append([index])
            group_start_s = segment.start_s
        group_end_s = segment.end_s
    return groups

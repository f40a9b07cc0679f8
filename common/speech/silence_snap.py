"""Word times snapped to the sound of the audio, as stable-ts's
`suppress_silence` does with its loudness mask.

Whisper's cross-attention word times are coarse (20 ms tokens) and, after a
pause, start early: the attention spreads a word over the silence before it,
or puts the boundary between two words near the end of the first one.
`snap_words_to_sound` corrects that cheaply from the chunk's own loudness:

1. The chunk is cut into `frame_s` frames and each frame's energy taken in dB.
2. The silence threshold adapts to the chunk: `silence_below_loud_db` under
   its loud level (a high percentile of the frame energies), but never less
   than `silence_above_quiet_db` over its quiet level (a low percentile), so
   a noise floor is not taken for speech, and quiet recordings work as well
   as loud ones. A chunk whose loud and quiet levels are closer than
   `min_dynamic_range_db` (all speech, all noise, all digital silence) has no
   silence to snap to and comes back unchanged.
3. Runs of silent frames lasting at least `min_silence_s` are the silences;
   shorter dips (most stop closures) are not. A silence at the chunk's start
   has no sound before it, one at its end none after it.
4. Each word, in order:

   * a start inside a silence moves forward to where the sound begins; an end
     inside a silence moves back to where the sound ends. A word wholly inside
     one silence thus shrinks towards its end (to `min_word_s`): its start
     never passes its end;
   * a start inside sound that began less than `max_extend_s` earlier, after
     a silence and after the previous word's end, moves back to where that
     sound begins (the sound belongs to no other word, so it is this word's
     start); likewise an end inside sound that stops less than `max_extend_s`
     later, before the next word's start, moves forward to where it stops;
   * two words that touch (one ends where the next starts, as Whisper's
     words do) at a point inside sound, with a silence less than
     `max_extend_s` before or after that point: the boundary moves to the
     nearer such silence, the first word ending where it begins and the
     second starting where it ends.

   No move is longer than `max_shift_s`; a word keeps at least `min_word_s`
   (or its own duration, if shorter); words keep their order and never
   overlap (a word never starts before the previous one ends, nor ends after
   the next one starts, nor crosses into a neighbouring segment).
   Interpolated words are moved like the others.

5. A segment whose first word's start (last word's end) moved starts (ends)
   where that word now does; other segments keep their bounds.

The input words are expected in order and not overlapping (as
`common.speech.word_timing.words_from_placements` gives them). Words outside the
samples are left alone. Pure numpy: the framing is vectorised and the words
are visited once, about 0.1 ms per second of audio.

Measured by `bench/word_timing.py` on real recorded words (median start
error, tiny.en in English, base in French): about 200-300 ms raw, 5 ms
snapped. Speech without pauses between words gains less: only the words
next to a silence move.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import numpy.typing as npt

from common.errors import InvalidInputError
from common.limits import SAMPLE_RATE_HERTZ
from common.transcript import Segment, Word

# Energy of an all-zero frame, in dB relative to full scale: below any real signal.
_ENERGY_FLOOR = 1e-12
# Word times this close outside the chunk count as at its edge (they are rounded to the millisecond).
_EDGE_TOLERANCE_S = 0.001
# Words this close (or closer) share a boundary.
_TOUCHING_S = 0.001


@dataclass(frozen=True)
class SnapOptions:
    """How silence is found and how far words move out of it."""

    # Length of the frames whose energy is measured (hop = length).
    frame_s: float = 0.01
    # Percentile of the frame energies (dB) taken as the chunk's loud level
    # (a robust peak: one click does not set it).
    loud_percentile: float = 99.0
    # Percentile of the frame energies (dB) taken as the chunk's quiet level (its noise floor).
    quiet_percentile: float = 5.0
    # A frame is silent when its energy is more than this below the loud level...
    silence_below_loud_db: float = 35.0
    # ...or less than this above the quiet level (the threshold is the higher of the two).
    silence_above_quiet_db: float = 6.0
    # Chunks whose loud and quiet levels are closer than this have no silence.
    min_dynamic_range_db: float = 20.0
    # Shortest run of silent frames that counts as silence.
    min_silence_s: float = 0.1
    # Longest move of a word's start or end.
    max_shift_s: float = 1.0
    # Longest stretch of sound, before a start or after an end, that a word
    # takes in, and farthest a silence may lie from a shared boundary that
    # moves to it (0: words only move out of silence, never into sound).
    max_extend_s: float = 0.2
    # Shortest word left by a move (a word already shorter keeps its duration).
    min_word_s: float = 0.05

    def __post_init__(self) -> None:
        for name in ("frame_s", "min_dynamic_range_db", "silence_below_loud_db"):
            if not getattr(self, name) > 0:
                raise InvalidInputError(f"{name} must be positive, got {getattr(self, name)}")
        for name in ("silence_above_quiet_db", "min_silence_s", "max_shift_s", "max_extend_s", "min_word_s"):
            if not getattr(self, name) >= 0:
                raise InvalidInputError(f"{name} must not be negative, got {getattr(self, name)}")
        if not 0 <= self.quiet_percentile < self.loud_percentile <= 100:
            raise InvalidInputError(
                f"percentiles must satisfy 0 <= quiet ({self.quiet_percentile}) < loud ({self.loud_percentile}) <= 100"
            )


@dataclass(frozen=True)
class Silences:
    """The silences of the chunk [chunk_start_s, chunk_end_s): [starts_s[i],
    ends_s[i]), in order; all times from the start of the whole audio."""

    chunk_start_s: float
    chunk_end_s: float
    starts_s: npt.NDArray[np.float64]
    ends_s: npt.NDArray[np.float64]

    def containing(self, time_s: float) -> int:
        """Index of the silence that holds `time_s`, or -1."""
        index = int(np.searchsorted(self.starts_s, time_s, side="right")) - 1
        return index if index >= 0 and time_s < self.ends_s[index] else -1

    def clamp(self, time_s: float, tolerance_s: float) -> float | None:
        """`time_s` if it lies in the chunk (its end included), the chunk's
        nearer edge if it lies at most `tolerance_s` outside (times rounded to
        the millisecond), else None."""
        if self.chunk_start_s - tolerance_s <= time_s <= self.chunk_end_s + tolerance_s:
            return min(max(time_s, self.chunk_start_s), self.chunk_end_s)
        return None

    def sound_starts_at(self, index: int) -> bool:
        """Whether sound follows silence `index` (it does not end the chunk)."""
        return bool(self.ends_s[index] < self.chunk_end_s)

    def sound_ends_at(self, index: int) -> bool:
        """Whether sound comes before silence `index` (it does not start the chunk)."""
        return bool(self.starts_s[index] > self.chunk_start_s)


def frame_energies_db(samples: npt.NDArray[np.float32], frame_samples: int) -> npt.NDArray[np.float64]:
    """Mean energy of each `frame_samples` frame of `samples` in dB (full
    scale 0 dB), the last frame partial; NaN and infinite samples count as zero."""
    signal = np.asarray(samples, dtype=np.float64)
    if not np.isfinite(signal).all():
        signal = np.where(np.isfinite(signal), signal, 0.0)
    starts = np.arange(0, signal.size, frame_samples)
    energy = np.add.reduceat(signal * signal, starts) / np.diff(np.append(starts, signal.size))
    return 10.0 * np.log10(np.maximum(energy, _ENERGY_FLOOR))


def find_silences(samples: npt.NDArray[np.float32], offset_s: float, options: SnapOptions = SnapOptions()) -> Silences:
    """The silences of a chunk of 16 kHz `samples` starting at `offset_s`
    (steps 1-3 of the module doc); none when the chunk has no dynamic range."""
    duration_s = samples.size / SAMPLE_RATE_HERTZ
    none = Silences(offset_s, offset_s + duration_s, np.zeros(0), np.zeros(0))
    frame_samples = max(1, round(options.frame_s * SAMPLE_RATE_HERTZ))
    if samples.size < frame_samples:
        return none
    energy_db = frame_energies_db(samples, frame_samples)
    quiet_db, loud_db = np.percentile(energy_db, [options.quiet_percentile, options.loud_percentile])
    if loud_db - quiet_db < options.min_dynamic_range_db:
        return none
    threshold_db = max(loud_db - options.silence_below_loud_db, quiet_db + options.silence_above_quiet_db)
    silent = np.concatenate(([False], energy_db < threshold_db, [False]))
    edges = np.flatnonzero(silent[1:] != silent[:-1])
    run_starts, run_ends = edges[0::2], edges[1::2]
    frame_s = frame_samples / SAMPLE_RATE_HERTZ
    long_enough = (run_ends - run_starts) * frame_s >= options.min_silence_s - 1e-9
    starts_s = (offset_s + run_starts[long_enough] * frame_s).astype(np.float64)
    ends_s = (offset_s + np.minimum(run_ends[long_enough] * frame_s, duration_s)).astype(np.float64)
    return Silences(offset_s, offset_s + duration_s, starts_s, ends_s)


def snap_words_to_sound(
    segments: Sequence[Segment],
    samples: npt.NDArray[np.float32],
    offset_s: float,
    options: SnapOptions = SnapOptions(),
) -> tuple[Segment, ...]:
    """`segments` with their words' starts and ends moved out of the silences
    of `samples` (16 kHz mono float32, the chunk that starts `offset_s` seconds
    into the audio; segment and word times are from the start of the audio).
    See the module doc for the rules; segments without words come back as
    they are. `InvalidInputError` for samples that are not one channel or an
    offset that is not a finite number."""
    chunk = np.asarray(samples, dtype=np.float32)
    if chunk.ndim != 1:
        raise InvalidInputError(f"samples must be one channel, got shape {chunk.shape}")
    if not math.isfinite(offset_s):
        raise InvalidInputError(f"offset_s must be a finite number of seconds, got {offset_s}")
    silences = find_silences(chunk, offset_s, options)
    if silences.starts_s.size == 0 or not any(segment.words for segment in segments):
        return tuple(segments)
    # Every word in order, with the bounds its neighbours and segments set.
    words = [word for segment in segments for word in segment.words]
    lower_bounds: list[float] = []  # a start may not move before this (besides the previous word's end)
    upper_bounds: list[float] = []  # an end may not move after this (besides the next word's start)
    previous_segment_end_s = -math.inf
    for position, segment in enumerate(segments):
        next_segment_start_s = next((later.start_s for later in segments[position + 1 :] if later.words), math.inf)
        for index in range(len(segment.words)):
            lower_bounds.append(previous_segment_end_s if index == 0 else -math.inf)
            upper_bounds.append(next_segment_start_s if index == len(segment.words) - 1 else math.inf)
        if segment.words:
            previous_segment_end_s = segment.end_s

    snapped: list[Word] = []
    # The start a word gets from the boundary it shares with the previous word, once moved.
    boundary_start_s: float | None = None
    for index, word in enumerate(words):
        current = word if boundary_start_s is None else replace(word, start_s=boundary_start_s)
        previous_end_s = max(snapped[-1].end_s if snapped else -math.inf, lower_bounds[index])
        following = words[index + 1] if index + 1 < len(words) else None
        next_start_s = min(following.start_s if following else math.inf, upper_bounds[index])
        snapped_word = _snap_word(
            current, silences, previous_end_s, next_start_s, options, keep_start=boundary_start_s is not None
        )
        boundary_start_s = None
        if following is not None and options.max_extend_s > 0:
            moved = _moved_boundary(
                snapped_word, following, silences, lower_bounds[index + 1], upper_bounds[index], options
            )
            if moved is not None:
                snapped_word = replace(snapped_word, end_s=moved[0])
                boundary_start_s = moved[1]
        snapped.append(snapped_word)

    result = []
    cursor = 0
    for segment in segments:
        count = len(segment.words)
        if not count:
            result.append(segment)
            continue
        old, new = segment.words, tuple(snapped[cursor : cursor + count])
        cursor += count
        start_s = new[0].start_s if new[0].start_s != old[0].start_s else segment.start_s
        end_s = new[-1].end_s if new[-1].end_s != old[-1].end_s else segment.end_s
        result.append(replace(segment, start_s=start_s, end_s=end_s, words=new))
    return tuple(result)


def _snap_word(
    word: Word,
    silences: Silences,
    previous_end_s: float,
    next_start_s: float,
    options: SnapOptions,
    keep_start: bool = False,
) -> Word:
    """`word` with its start and end snapped (step 4 of the module doc),
    never before `previous_end_s` nor after `next_start_s`; with `keep_start`
    (its start is a boundary moved already) only its end."""
    start_s, end_s = word.start_s, word.end_s
    if not (math.isfinite(start_s) and math.isfinite(end_s)) or end_s < start_s:
        return word
    min_duration_s = min(options.min_word_s, end_s - start_s)
    new_start_s = start_s
    if not keep_start and (lookup_s := silences.clamp(start_s, _EDGE_TOLERANCE_S)) is not None:
        new_start_s = _snapped_start(lookup_s, end_s - min_duration_s, silences, previous_end_s, options)
        if new_start_s == lookup_s:
            new_start_s = start_s  # not moved (only looked up at the chunk's edge)
    new_end_s = end_s
    if (lookup_s := silences.clamp(end_s, _EDGE_TOLERANCE_S)) is not None:
        new_end_s = _snapped_end(lookup_s, new_start_s + min_duration_s, silences, next_start_s, options)
        if new_end_s == lookup_s:
            new_end_s = end_s
    if new_start_s == start_s and new_end_s == end_s:
        return word
    return replace(word, start_s=new_start_s, end_s=new_end_s)


def _moved_boundary(
    word: Word, following: Word, silences: Silences, lowest_s: float, highest_s: float, options: SnapOptions
) -> tuple[float, float] | None:
    """(end of `word`, start of `following`) moved to the nearest silence, when
    the two words touch inside sound and a silence lies within `max_extend_s`
    of their boundary; None to leave them. The silence must leave each word
    `min_word_s`; `word` may end no later than `highest_s` and `following`
    start no earlier than `lowest_s` (the bounds of their segments)."""
    boundary_s = word.end_s
    if not (math.isfinite(boundary_s) and math.isfinite(following.start_s) and math.isfinite(following.end_s)):
        return None
    if following.start_s - boundary_s > _TOUCHING_S or following.start_s < boundary_s:
        return None
    if silences.clamp(boundary_s, 0.0) is None or silences.containing(boundary_s) >= 0:
        return None
    reach_s = min(options.max_extend_s, options.max_shift_s)
    # Bounds of the new end of `word` and the new start of `following`.
    earliest_end_s = word.start_s + min(options.min_word_s, word.end_s - word.start_s)
    latest_start_s = following.end_s - min(options.min_word_s, following.end_s - following.start_s)
    candidates = []
    after = int(np.searchsorted(silences.starts_s, boundary_s, side="left"))
    for index in (after - 1, after):
        if not 0 <= index < silences.starts_s.size:
            continue
        silence_start_s, silence_end_s = float(silences.starts_s[index]), float(silences.ends_s[index])
        if not (silences.sound_ends_at(index) and silences.sound_starts_at(index)):
            continue
        if not (earliest_end_s <= silence_start_s <= highest_s and lowest_s <= silence_end_s <= latest_start_s):
            continue
        distance_s = silence_start_s - boundary_s if silence_start_s >= boundary_s else boundary_s - silence_end_s
        moves_s = max(abs(silence_start_s - boundary_s), abs(silence_end_s - boundary_s))
        if 0 <= distance_s <= reach_s and moves_s <= options.max_shift_s:
            candidates.append((distance_s, silence_start_s, silence_end_s))
    if not candidates:
        return None
    _, silence_start_s, silence_end_s = min(candidates)
    return silence_start_s, silence_end_s


def _snapped_start(
    start_s: float, latest_s: float, silences: Silences, earliest_s: float, options: SnapOptions
) -> float:
    """Where a word's start goes: at most `latest_s`, at least `earliest_s` (or where it is)."""
    inside = silences.containing(start_s)
    if inside >= 0:
        sound_s = float(silences.ends_s[inside])
        if silences.sound_starts_at(inside) and sound_s - start_s <= options.max_shift_s:
            return max(start_s, min(sound_s, latest_s))
        return start_s
    # In sound: the end of the last silence before the start, if the sound since is unclaimed.
    before = int(np.searchsorted(silences.ends_s, start_s, side="right")) - 1
    if before >= 0 and silences.sound_starts_at(before):
        sound_s = float(silences.ends_s[before])
        if start_s - sound_s <= min(options.max_extend_s, options.max_shift_s) and sound_s >= earliest_s:
            return min(sound_s, start_s)
    return start_s


def _snapped_end(end_s: float, earliest_s: float, silences: Silences, latest_s: float, options: SnapOptions) -> float:
    """Where a word's end goes: at least `earliest_s`, at most `latest_s` (or where it is)."""
    inside = silences.containing(end_s)
    # An end exactly at a silence's start is already where the sound stops.
    if inside >= 0 and end_s > silences.starts_s[inside]:
        sound_s = float(silences.starts_s[inside])
        if silences.sound_ends_at(inside) and end_s - sound_s <= options.max_shift_s:
            return min(end_s, max(sound_s, earliest_s))
        return end_s
    if inside >= 0:
        return end_s
    # In sound: the start of the first silence after the end, if the sound until then is unclaimed.
    after = int(np.searchsorted(silences.starts_s, end_s, side="left"))
    if after < silences.starts_s.size and silences.sound_ends_at(after):
        silence_s = float(silences.starts_s[after])
        if silence_s - end_s <= min(options.max_extend_s, options.max_shift_s) and silence_s <= latest_s:
            return max(silence_s, end_s)
    return end_s

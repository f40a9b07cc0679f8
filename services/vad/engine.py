"""Speech detection with silero VAD, streamed block by block.

The model is the silero VAD v6 ONNX export that faster-whisper bundles
(`faster_whisper/assets/silero_vad_v6.onnx`): it takes a sequence of 32 ms
frames, each prefixed with the last 64 samples of the frame before, plus the
LSTM state, and returns one speech probability per frame and the new state.
Run through onnxruntime, it needs no torch (see `bench/vad_backends.py` for
the measurements behind the choice).

`SpeechDetector.detect` reproduces faster-whisper's `get_speech_timestamps`
followed by the merge of `merge_segments` (faster-whisper 1.1) / WhisperX's
`merge_chunks`, but streams: the audio is scored one block at a time with
the LSTM state and frame context carried across blocks, and each chunk is
yielded as soon as no later speech can join it. The results equal the
one-shot computation on the whole audio; only the model's floating point may
differ in the last bits between block sizes.
"""

from __future__ import annotations

import importlib.util
import logging
import math
import threading
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from common.errors import InvalidInputError, NotFoundError
from common.limits import (
    LIVE_MAX_MIN_SILENCE_S,
    MAX_CHUNK_DURATION_S,
    SAMPLE_RATE_HERTZ,
    VAD_FRAME_S,
    VAD_FRAME_SAMPLES,
)
from common.transcript import TimeRange

if TYPE_CHECKING:
    import onnxruntime

logger = logging.getLogger(__name__)

# The most audio a packed chunk spans, silences between its speech included:
# a segment decoded without word times spans its whole chunk, and whatever
# reads or aligns such a segment reads all of that audio.
MAX_PACKED_SPAN_S = 60.0
"""Whisper's window: no chunk may be longer."""

_CONTEXT_SAMPLES = 64
_STATE_SHAPE = (1, 1, 128)
# When a speech region reaches the maximum length it is cut at the last
# silence of at least this long inside it, if there is one (faster-whisper's 98 ms).
_MIN_SILENCE_AT_MAX_SPEECH_SAMPLES = 98 * SAMPLE_RATE_HERTZ // 1000
# Below threshold minus this, a frame ends speech (faster-whisper's neg_threshold).
_NEG_THRESHOLD_MARGIN = 0.15

# The warm-up's calibrated detection (`SpeechDetector.calibrate`): a minute of
# audio, as long as a short job's; silero's cost is the same for every frame.
CALIBRATION_AUDIO_S = 60.0

Samples = npt.NDArray[np.float32]


def bundled_model_path() -> Path:
    """Path of the silero VAD v6 ONNX model bundled with faster-whisper,
    found without importing faster-whisper (which would load CTranslate2)."""
    spec = importlib.util.find_spec("faster_whisper")
    if spec is None or not spec.submodule_search_locations:
        raise NotFoundError("faster-whisper is not installed; set the VAD model path explicitly")
    return Path(next(iter(spec.submodule_search_locations))) / "assets" / "silero_vad_v6.onnx"


def _to_samples(duration_s: float) -> int:
    return round(duration_s * SAMPLE_RATE_HERTZ)


@dataclass(frozen=True)
class VadOptions:
    """Options of speech detection.

    The defaults are those of faster-whisper's `BatchedInferencePipeline`
    (`VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160)`), so
    that the suite and that pipeline cut the audio alike.
    """

    # Speech probability at or above which a frame is speech, in (0, 1). Speech
    # ends at frames below max(threshold - 0.15, 0.01).
    threshold: float = 0.5
    # Silence needed to end a speech region.
    min_silence_duration_s: float = 0.16
    # Padding added on each side of a speech region (half the gap when two
    # regions are closer than twice this).
    speech_pad_s: float = 0.4
    # Longest chunk, in (0, 30]. Longer speech regions are split (at a silence
    # of at least 98 ms when there is one), and regions are merged into chunks
    # no longer than this.
    max_chunk_duration_s: float = MAX_CHUNK_DURATION_S
    # Speech regions at most this long are dropped (0: keep all).
    min_speech_duration_s: float = 0.0
    # faster-whisper 1.2's speech packing: a chunk holds regions while their
    # speech together lasts at most `max_chunk_duration_s`, and may span more
    # of the audio (its speech ranges are decoded back to back). False:
    # WhisperX's merge, a chunk spans at most `max_chunk_duration_s`.
    pack_speech: bool = False

    def __post_init__(self) -> None:
        for name in (
            "threshold",
            "min_silence_duration_s",
            "speech_pad_s",
            "max_chunk_duration_s",
            "min_speech_duration_s",
        ):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidInputError(f"VAD option {name}={value!r} is not a finite number")
        if not 0.0 < self.threshold < 1.0:
            raise InvalidInputError(f"VAD threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 < self.max_chunk_duration_s <= MAX_CHUNK_DURATION_S:
            raise InvalidInputError(
                f"max_chunk_duration_s must be in (0, {MAX_CHUNK_DURATION_S:g}] s, got {self.max_chunk_duration_s}"
            )
        for name in ("min_silence_duration_s", "speech_pad_s", "min_speech_duration_s"):
            if getattr(self, name) < 0.0:
                raise InvalidInputError(f"VAD option {name} must not be negative, got {getattr(self, name)}")
        if self.max_speech_samples <= 0:
            raise InvalidInputError(
                f"speech_pad_s={self.speech_pad_s} leaves no room for speech in chunks of "
                f"{self.max_chunk_duration_s} s: twice the padding plus one 32 ms frame must be shorter"
            )

    @property
    def max_speech_samples(self) -> int:
        """Longest unpadded speech region before it is split (faster-whisper's rule:
        the chunk length less one frame and the padding on both sides)."""
        return _to_samples(self.max_chunk_duration_s) - VAD_FRAME_SAMPLES - 2 * _to_samples(self.speech_pad_s)


@dataclass(frozen=True)
class SpeechChunk:
    """Speech regions grouped into one piece of at most `max_chunk_duration_s`
    (of speech, when packed)."""

    # Position in the stream of chunks, from 0 in time order.
    index: int
    # From the start of the first speech region to the end of the last.
    range: TimeRange
    # The padded speech regions inside `range`, in order, not overlapping.
    speech_ranges: tuple[TimeRange, ...]
    # How much of the audio had been analysed when the chunk was complete.
    analysed_s: float


@dataclass(frozen=True)
class DetectionProgress:
    """Progress only: `analysed_s` of the audio analysed, no new chunk yet."""

    analysed_s: float


DetectionEvent = SpeechChunk | DetectionProgress


@dataclass
class _Region:
    """A speech region in samples, [start, end)."""

    start: int
    end: int


class _FrameScorer:
    """Speech probabilities of a stream of samples, frame by frame.

    Carries the LSTM state and the 64-sample context of the previous frame
    across calls, so scoring in blocks equals scoring the whole audio at once.
    `finish` scores the tail the way faster-whisper does: padded with zeros to
    a whole frame (a whole frame of zeros when the audio is a whole number of
    frames), with the last 64 samples of that frame zeroed.
    """

    def __init__(self, session: onnxruntime.InferenceSession) -> None:
        self._session = session
        self._hidden = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._cell = np.zeros(_STATE_SHAPE, dtype=np.float32)
        self._context = np.zeros(_CONTEXT_SAMPLES, dtype=np.float32)
        self._remainder = np.zeros(0, dtype=np.float32)

    def score(self, samples: Samples) -> npt.NDArray[np.float32]:
        buffered = np.concatenate((self._remainder, samples)) if self._remainder.size else samples
        frame_count = buffered.shape[0] // VAD_FRAME_SAMPLES
        whole_samples = frame_count * VAD_FRAME_SAMPLES
        self._remainder = np.array(buffered[whole_samples:], dtype=np.float32)
        return self._run(buffered[:whole_samples].reshape(frame_count, VAD_FRAME_SAMPLES))

    def finish(self) -> npt.NDArray[np.float32]:
        last = np.zeros((1, VAD_FRAME_SAMPLES), dtype=np.float32)
        last[0, : self._remainder.shape[0]] = self._remainder
        last[0, -_CONTEXT_SAMPLES:] = 0.0
        self._remainder = np.zeros(0, dtype=np.float32)
        return self._run(last)

    def _run(self, frames: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        frame_count = frames.shape[0]
        if frame_count == 0:
            return np.zeros(0, dtype=np.float32)
        inputs = np.empty((frame_count, _CONTEXT_SAMPLES + VAD_FRAME_SAMPLES), dtype=np.float32)
        inputs[0, :_CONTEXT_SAMPLES] = self._context
        inputs[1:, :_CONTEXT_SAMPLES] = frames[:-1, -_CONTEXT_SAMPLES:]
        inputs[:, _CONTEXT_SAMPLES:] = frames
        self._context = np.array(frames[-1, -_CONTEXT_SAMPLES:], dtype=np.float32)
        probabilities, self._hidden, self._cell = self._session.run(
            None, {"input": inputs, "h": self._hidden, "c": self._cell}
        )
        return np.asarray(probabilities, dtype=np.float32).reshape(-1)


class _RegionTracker:
    """faster-whisper's `get_speech_timestamps` state machine, fed frame
    probabilities as they come; returns unpadded speech regions once ended."""

    def __init__(self, options: VadOptions) -> None:
        self._threshold = np.float32(options.threshold)
        # Compared in float32, as faster-whisper compares its float32 probabilities.
        self._neg_threshold = np.float32(max(options.threshold - _NEG_THRESHOLD_MARGIN, 0.01))
        self._min_speech_samples = _to_samples(options.min_speech_duration_s)
        self._min_silence_samples = _to_samples(options.min_silence_duration_s)
        self._max_speech_samples = options.max_speech_samples
        self._frame_index = 0
        self._triggered = False
        self._start = 0
        # 0 means unset, as in faster-whisper (none of them can be 0 when set).
        self._temp_end = 0
        self._prev_end = 0
        self._next_start = 0

    @property
    def analysed_samples(self) -> int:
        return self._frame_index * VAD_FRAME_SAMPLES

    @property
    def next_start_lower_bound(self) -> int:
        """No region still to come starts before this sample."""
        return self._start if self._triggered else self.analysed_samples

    def push(self, probabilities: npt.NDArray[np.float32]) -> list[_Region]:
        ended: list[_Region] = []
        is_speech = (probabilities >= self._threshold).tolist()
        is_silence = (probabilities < self._neg_threshold).tolist()
        for speech, silence in zip(is_speech, is_silence, strict=True):
            self._step(speech, silence, ended)
            self._frame_index += 1
        return ended

    def _step(self, speech: bool, silence: bool, ended: list[_Region]) -> None:
        position = self._frame_index * VAD_FRAME_SAMPLES
        if speech and self._temp_end:
            self._temp_end = 0
            if self._next_start < self._prev_end:
                self._next_start = position
        if speech and not self._triggered:
            self._triggered = True
            self._start = position
            return
        if self._triggered and position - self._start > self._max_speech_samples:
            if self._prev_end:
                # Cut at the last long-enough silence inside the region.
                ended.append(_Region(self._start, self._prev_end))
                if self._next_start < self._prev_end:
                    self._triggered = False
                else:
                    self._start = self._next_start
                self._prev_end = self._next_start = self._temp_end = 0
            else:
                # No silence to cut at: cut right here.
                ended.append(_Region(self._start, position))
                self._prev_end = self._next_start = self._temp_end = 0
                self._triggered = False
                return
        if silence and self._triggered:
            if not self._temp_end:
                self._temp_end = position
            if position - self._temp_end > _MIN_SILENCE_AT_MAX_SPEECH_SAMPLES:
                self._prev_end = self._temp_end
            if position - self._temp_end < self._min_silence_samples:
                return
            if self._temp_end - self._start > self._min_speech_samples:
                ended.append(_Region(self._start, self._temp_end))
            self._prev_end = self._next_start = self._temp_end = 0
            self._triggered = False

    def finish(self, audio_samples: int) -> list[_Region]:
        """The region still open at the end of the audio, if long enough."""
        if not self._triggered:
            return []
        self._triggered = False
        if audio_samples - self._start > self._min_speech_samples:
            return [_Region(self._start, audio_samples)]
        return []


class _RegionPadder:
    """faster-whisper's padding of speech regions: `pad` on each side, or half
    the gap when two regions are closer than twice `pad`. A region is final
    once the next one is known, or once no later one can come that close."""

    def __init__(self, pad_samples: int) -> None:
        self._pad = pad_samples
        # The last region: start padded, end not yet.
        self._pending: _Region | None = None

    def next_end_lower_bound(self, next_start_lower_bound: int) -> int:
        """No padded region still to come ends before this sample."""
        return self._pending.end if self._pending is not None else next_start_lower_bound

    def push(self, region: _Region) -> list[_Region]:
        finished: list[_Region] = []
        start = max(0, region.start - self._pad)
        if self._pending is not None:
            gap = region.start - self._pending.end
            if gap < 2 * self._pad:
                finished.append(_Region(self._pending.start, self._pending.end + gap // 2))
                start = max(0, region.start - gap // 2)
            else:
                finished.append(_Region(self._pending.start, self._pending.end + self._pad))
        self._pending = _Region(start, region.end)
        return finished

    def flush_isolated(self, next_start_lower_bound: int) -> list[_Region]:
        """The pending region, if no later region can start within twice the pad."""
        pending = self._pending
        if pending is None or next_start_lower_bound - pending.end < 2 * self._pad:
            return []
        self._pending = None
        # The end cannot pass the audio: a later sample has been analysed.
        return [_Region(pending.start, pending.end + self._pad)]

    def finish(self, audio_samples: int) -> list[_Region]:
        pending, self._pending = self._pending, None
        if pending is None:
            return []
        return [_Region(pending.start, min(audio_samples, pending.end + self._pad))]


class _ChunkMerger:
    """WhisperX's `merge_chunks` / faster-whisper 1.1's `merge_segments`:
    consecutive padded regions are merged while the span from the first start
    to the last end stays within the maximum chunk length. (merge_segments
    also takes the padding back off regions that overlap their neighbours;
    padded regions never overlap, so that step is left out.)

    faster-whisper 1.2's batched pipeline groups regions differently
    (`collect_chunks`: up to 30 s of speech with the silences cut out, so a
    group may span more than 30 s of the audio); a chunk here is one range of
    the audio, as the VadService contract says."""

    def __init__(self, max_chunk_samples: int) -> None:
        self._max_chunk_samples = max_chunk_samples
        self._regions: list[_Region] = []

    def push(self, region: _Region) -> list[list[_Region]]:
        finished: list[list[_Region]] = []
        if self._regions and region.end - self._regions[0].start > self._max_chunk_samples:
            finished.append(self._regions)
            self._regions = []
        self._regions.append(region)
        return finished

    def flush_full(self, next_end_lower_bound: int) -> list[list[_Region]]:
        """The open chunk, if no region still to come could join it."""
        if self._regions and next_end_lower_bound - self._regions[0].start > self._max_chunk_samples:
            finished, self._regions = self._regions, []
            return [finished]
        return []

    def finish(self) -> list[list[_Region]]:
        finished, self._regions = self._regions, []
        return [finished] if finished else []


class _SpeechPacker:
    """faster-whisper 1.2's `collect_chunks`: consecutive padded regions are
    grouped while their lengths together stay within the maximum; the
    silences between them are cut out when the chunk is decoded, so a chunk
    may span more of the audio than the maximum, though at most
    `MAX_PACKED_SPAN_S` (faster-whisper sets no bound)."""

    def __init__(self, max_speech_samples: int) -> None:
        self._max_speech_samples = max_speech_samples
        self._max_span_samples = _to_samples(MAX_PACKED_SPAN_S)
        self._regions: list[_Region] = []
        self._speech_samples = 0

    def push(self, region: _Region) -> list[list[_Region]]:
        finished: list[list[_Region]] = []
        length = region.end - region.start
        too_long = region.end - (self._regions[0].start if self._regions else region.start) > self._max_span_samples
        if self._regions and (self._speech_samples + length > self._max_speech_samples or too_long):
            finished.append(self._regions)
            self._regions, self._speech_samples = [], 0
        self._regions.append(region)
        self._speech_samples += length
        return finished

    def flush_full(self, next_end_lower_bound: int) -> list[list[_Region]]:
        """The open chunk, if no region still to come fits: none (a frame
        long at least) would fit its speech, or none could end within its span."""
        full = self._max_speech_samples - self._speech_samples < VAD_FRAME_SAMPLES
        if self._regions and (full or next_end_lower_bound - self._regions[0].start > self._max_span_samples):
            finished, self._regions, self._speech_samples = self._regions, [], 0
            return [finished]
        return []

    def finish(self) -> list[list[_Region]]:
        finished, self._regions, self._speech_samples = self._regions, [], 0
        return [finished] if finished else []


class StreamingDetection:
    """One detection fed audio block by block: `feed` each consecutive block
    (any size), then `finish` once; each returns the chunks completed so far,
    or a `DetectionProgress` when there are none. Not thread-safe: feed one
    block at a time (from any thread)."""

    def __init__(self, session: onnxruntime.InferenceSession, options: VadOptions) -> None:
        self._scorer = _FrameScorer(session)
        self._tracker = _RegionTracker(options)
        self._padder = _RegionPadder(_to_samples(options.speech_pad_s))
        max_chunk_samples = _to_samples(options.max_chunk_duration_s)
        self._merger = _SpeechPacker(max_chunk_samples) if options.pack_speech else _ChunkMerger(max_chunk_samples)
        self._fed_samples = 0
        self._chunk_count = 0
        self._finished = False

    def feed(self, block: npt.ArrayLike) -> list[DetectionEvent]:
        """Analyses the next `block` of samples (1-D, 16 kHz)."""
        if self._finished:
            raise RuntimeError("feed after finish")
        samples = np.asarray(block, dtype=np.float32)
        if samples.ndim != 1:
            raise InvalidInputError(f"audio must be one channel (1-D), got shape {samples.shape}")
        self._fed_samples += samples.shape[0]
        ended = self._tracker.push(self._scorer.score(samples))
        padded = [done for region in ended for done in self._padder.push(region)]
        padded += self._padder.flush_isolated(self._tracker.next_start_lower_bound)
        merged = [chunk for region in padded for chunk in self._merger.push(region)]
        merged += self._merger.flush_full(self._padder.next_end_lower_bound(self._tracker.next_start_lower_bound))
        return self._events(merged, self._tracker.analysed_samples)

    def finish(self) -> list[DetectionEvent]:
        """Ends the audio: the remaining chunks, or the final progress."""
        if self._finished:
            raise RuntimeError("finish called twice")
        self._finished = True
        audio_samples = self._fed_samples
        ended = self._tracker.push(self._scorer.finish())
        ended += self._tracker.finish(audio_samples)
        padded = [done for region in ended for done in self._padder.push(region)]
        padded += self._padder.finish(audio_samples)
        merged = [chunk for region in padded for chunk in self._merger.push(region)]
        merged += self._merger.finish()
        return self._events(merged, audio_samples)

    def _events(self, merged: list[list[_Region]], analysed_samples: int) -> list[DetectionEvent]:
        analysed_s = min(analysed_samples, self._fed_samples) / SAMPLE_RATE_HERTZ
        events: list[DetectionEvent] = []
        for regions in merged:
            speech_ranges = tuple(
                TimeRange(region.start / SAMPLE_RATE_HERTZ, region.end / SAMPLE_RATE_HERTZ) for region in regions
            )
            events.append(
                SpeechChunk(
                    index=self._chunk_count,
                    range=TimeRange(speech_ranges[0].start_s, speech_ranges[-1].end_s),
                    speech_ranges=speech_ranges,
                    analysed_s=analysed_s,
                )
            )
            self._chunk_count += 1
        return events or [DetectionProgress(analysed_s)]




@dataclass(frozen=True)
class LiveVadOptions:
    """Options of live speech detection (`LiveSpeechDetection`)."""

    # Speech probability at or above which a frame is speech, in (0, 1);
    # speech ends at frames below max(threshold - 0.15, 0.01).
    threshold: float = 0.5
    # Silence that ends speech. Longer than the batch pipeline's 160 ms: live
    # utterances are what a caption shows at once, and a pause for breath
    # should not end one.
    min_silence_duration_s: float = 0.4

    def __post_init__(self) -> None:
        for name in ("threshold", "min_silence_duration_s"):
            value = getattr(self, name)
            if not isinstance(value, int | float) or not math.isfinite(value):
                raise InvalidInputError(f"VAD option {name}={value!r} is not a finite number")
        if not 0.0 < self.threshold < 1.0:
            raise InvalidInputError(f"VAD threshold must be in (0, 1), got {self.threshold}")
        if not 0.0 <= self.min_silence_duration_s <= LIVE_MAX_MIN_SILENCE_S:
            raise InvalidInputError(
                f"min_silence_duration_s must be between 0 and {LIVE_MAX_MIN_SILENCE_S:g} s, "
                f"got {self.min_silence_duration_s}"
            )


@dataclass(frozen=True)
class LiveUpdate:
    """What one block of live audio changed."""

    # Offsets (s) where speech began in the block.
    speech_starts: tuple[float, ...]
    # Speech that ended in the block: its start to its first silent frame.
    speech_ends: tuple[TimeRange, ...]
    # Audio analysed so far, whole frames.
    analysed_s: float
    # Whether speech goes on at the end of the analysed audio.
    in_speech: bool
    # While in speech, how long the end of the audio has been silent.
    trailing_silence_s: float


class LiveSpeechDetection:
    """Speech detection of a live stream, block by block, with the silero
    state carried across blocks; memory stays flat however long it runs (the
    scorer keeps less than one frame of audio). The state machine is
    `get_speech_timestamps`'s without its padding and splitting: speech starts
    at a frame at or above the threshold and ends at the first of enough
    silent frames. Not thread-safe: feed one block at a time."""

    def __init__(self, session: onnxruntime.InferenceSession, options: LiveVadOptions) -> None:
        self._scorer = _FrameScorer(session)
        self._threshold = np.float32(options.threshold)
        self._neg_threshold = np.float32(max(options.threshold - _NEG_THRESHOLD_MARGIN, 0.01))
        self._min_silence_samples = _to_samples(options.min_silence_duration_s)
        self._frame_index = 0
        self._in_speech = False
        self._start = 0
        self._silence_since: int | None = None

    def feed(self, block: npt.ArrayLike) -> LiveUpdate:
        samples = np.asarray(block, dtype=np.float32)
        if samples.ndim != 1:
            raise InvalidInputError(f"audio must be one channel (1-D), got shape {samples.shape}")
        probabilities = self._scorer.score(samples)
        starts: list[float] = []
        ends: list[TimeRange] = []
        for probability in probabilities.tolist():
            position = self._frame_index * VAD_FRAME_SAMPLES
            self._frame_index += 1
            if probability >= self._threshold:
                if not self._in_speech:
                    self._in_speech = True
                    self._start = position
                    starts.append(position / SAMPLE_RATE_HERTZ)
                self._silence_since = None
            elif probability < self._neg_threshold and self._in_speech:
                if self._silence_since is None:
                    self._silence_since = position
                if position + VAD_FRAME_SAMPLES - self._silence_since >= self._min_silence_samples:
                    ends.append(TimeRange(self._start / SAMPLE_RATE_HERTZ, self._silence_since / SAMPLE_RATE_HERTZ))
                    self._in_speech = False
                    self._silence_since = None
        analysed = self._frame_index * VAD_FRAME_SAMPLES
        trailing = analysed - self._silence_since if self._in_speech and self._silence_since is not None else 0
        return LiveUpdate(
            speech_starts=tuple(starts),
            speech_ends=tuple(ends),
            analysed_s=analysed / SAMPLE_RATE_HERTZ,
            in_speech=self._in_speech,
            trailing_silence_s=trailing / SAMPLE_RATE_HERTZ,
        )


class SpeechDetector:
    """Finds speech in 16 kHz mono float32 audio with silero VAD (ONNX).

    The ONNX session is created on first use (or by `load`) and shared by every
    detection; onnxruntime sessions are safe to run from several threads, and
    each detection carries its own LSTM state.
    """

    def __init__(
        self,
        model_path: Path,
        *,
        intra_op_threads: int = 1,
        block_duration_s: float = 15.0,
        session_options: onnxruntime.SessionOptions | None = None,
    ) -> None:
        """`model_path`: a silero VAD ONNX model taking frame sequences
        (`input` [frames, 576], `h`, `c`), such as `bundled_model_path()`.
        `intra_op_threads`: onnxruntime threads per detection (ignored when
        `session_options` is given). `block_duration_s`: audio scored per step;
        each step yields the chunks it completed, or a progress event."""
        if intra_op_threads < 1:
            raise ValueError(f"intra_op_threads must be at least 1, got {intra_op_threads}")
        if not block_duration_s > 0:
            raise ValueError(f"block_duration_s must be positive, got {block_duration_s}")
        self.model_path = model_path
        self._intra_op_threads = intra_op_threads
        self._session_options = session_options
        # A whole number of frames, so blocks start on frame boundaries.
        self._block_samples = max(1, round(block_duration_s / VAD_FRAME_S)) * VAD_FRAME_SAMPLES
        self._session: onnxruntime.InferenceSession | None = None
        self._load_lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        return self._session is not None

    def load(self) -> None:
        """Creates the ONNX session if not done yet (idempotent, thread-safe)."""
        self._loaded_session()

    def _loaded_session(self) -> onnxruntime.InferenceSession:
        with self._load_lock:
            if self._session is None:
                import onnxruntime

                if not self.model_path.is_file():
                    raise NotFoundError(f"VAD model {self.model_path} does not exist")
                options = self._session_options
                if options is None:
                    options = onnxruntime.SessionOptions()
                    options.intra_op_num_threads = self._intra_op_threads
                    options.inter_op_num_threads = 1
                    options.log_severity_level = 3
                self._session = onnxruntime.InferenceSession(
                    str(self.model_path), sess_options=options, providers=["CPUExecutionProvider"]
                )
                logger.info("loaded VAD model %s", self.model_path)
            return self._session

    def detect(self, audio: npt.ArrayLike, options: VadOptions | None = None) -> Iterator[DetectionEvent]:
        """Streams the speech chunks of `audio` (1-D, 16 kHz), block by block.

        Yields each `SpeechChunk` as soon as it can no longer grow, and a
        `DetectionProgress` after every block that completed no chunk. The last
        event always reports the whole audio as analysed. Silence and empty
        audio yield no chunk. Works on read-only and memory-mapped arrays
        without copying them whole.
        """
        samples = np.asarray(audio)
        if samples.ndim != 1:
            raise InvalidInputError(f"audio must be one channel (1-D), got shape {samples.shape}")
        blocks = (
            samples[start : start + self._block_samples] for start in range(0, samples.shape[0], self._block_samples)
        )
        return self.detect_blocks(blocks, options)

    def detect_blocks(
        self, blocks: Iterable[npt.ArrayLike], options: VadOptions | None = None
    ) -> Iterator[DetectionEvent]:
        """Like `detect`, for audio that arrives in consecutive blocks of any
        size; one step per block."""
        return self._stream(self.start(options), blocks)

    def start(self, options: VadOptions | None = None) -> StreamingDetection:
        """A detection to feed block by block (loads the model if needed)."""
        return StreamingDetection(self._loaded_session(), options or VadOptions())

    def start_live(self, options: LiveVadOptions | None = None) -> LiveSpeechDetection:
        """A live detection to feed block by block (loads the model if needed)."""
        return LiveSpeechDetection(self._loaded_session(), options or LiveVadOptions())

    @property
    def block_samples(self) -> int:
        """Samples per step of `detect`: a whole number of 32 ms frames."""
        return self._block_samples

    @staticmethod
    def _stream(detection: StreamingDetection, blocks: Iterable[npt.ArrayLike]) -> Iterator[DetectionEvent]:
        for block in blocks:
            yield from detection.feed(block)
        yield from detection.finish()

    def calibrate(self, duration_s: float = CALIBRATION_AUDIO_S) -> float:
        """Seconds one detection takes over `duration_s` of audio, block by
        block as a request's (the warm-up's measure, `common.machine.capacity`).
        Noise will do: silero scores every frame alike, whatever it holds
        (60 s took 0.12 s of noise, 0.10 s of speech and 0.10 s of silence
        on one core). The first second is detected untimed, to warm the
        session's buffers."""
        noise = np.random.default_rng(0).normal(0.0, 0.05, _to_samples(duration_s)).astype(np.float32)
        for _ in self.detect(noise[:SAMPLE_RATE_HERTZ]):
            pass
        started = time.perf_counter()
        for _ in self.detect(noise):
            pass
        return time.perf_counter() - started

    def speech_chunks(self, audio: npt.ArrayLike, options: VadOptions | None = None) -> list[SpeechChunk]:
        """All the chunks of `audio` at once (the chunks `detect` streams)."""
        return [event for event in self.detect(audio, options) if isinstance(event, SpeechChunk)]

    def speech_probabilities(self, audio: npt.ArrayLike) -> npt.NDArray[np.float32]:
        """Speech probability of every 32 ms frame of `audio`, including the
        zero-padded frame at the end (as faster-whisper's `SileroVADModel`)."""
        samples = np.asarray(audio, dtype=np.float32)
        scorer = _FrameScorer(self._loaded_session())
        parts = [
            scorer.score(samples[start : start + self._block_samples])
            for start in range(0, samples.shape[0], self._block_samples)
        ]
        return np.concatenate([*parts, scorer.finish()])

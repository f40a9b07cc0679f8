"""How close word start times come to real word onsets: Whisper's
cross-attention word timestamps as they are, the same snapped out of
silence (`common.speech.silence_snap`), and, for English, pocketsphinx forced
alignment of the transcript.

The reference (`tests.word_reference`) strings real single-word recordings
(Asterisk's spoken digits, English and Canadian French; `make test-data`)
into sentences of 5-10 digits, so every word's true start is known to the
sample. Each sentence is transcribed as one chunk through the ASR engine
(English: embedded:tiny.en, French: embedded:base; CPU) with
`TranscriptionOptions(word_timestamps=True)`, its own snapping turned off
(`raw_word_timestamps`) so the raw times can be scored and snapped here.
Recognised words are matched to reference words after spelling digits out
("5" -> "five", "cinq"; a number written as one token, "551", counts only
for its first digit), by position when the counts agree, else by text.

Printed per language and method: words matched, matched words with
interpolated times, median and 90th percentile of |start - true start|, the
median signed error (negative: early), the time from audio to timed words and
the time of the step after the transcription (snapping, alignment) alone.

::

    python -m bench.word_timing --duration-s 60 --seed 1 --cpu-threads 1

`--verbose` prints every sentence's word starts by method.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from faster_whisper import WhisperModel

from bench.machine import print_machine_line
from common.speech.silence_snap import SnapOptions, snap_words_to_sound
from common.speech.whisper_models import EMBEDDED_BASE, EMBEDDED_TINY_EN, ModelCache, ModelLoadOptions
from common.transcript import Segment
from services.align.cross_attention import CrossAttentionAligner
from services.align.engine import AlignEngine, AlignMethod
from services.align.phonetic import PhoneticAligner
from services.asr.engine import ChunkTranscript, Transcriber
from services.asr.options import TranscriptionOptions
from tests.speech import SAMPLE_RATE_HERTZ
from tests.word_reference import (
    ReferenceSentence,
    WordReference,
    build_word_reference,
    raw_word_timestamps,
    spoken_words,
    start_errors_s,
    timed_tokens,
)

MODELS = {"en": EMBEDDED_TINY_EN, "fr": EMBEDDED_BASE, "es": EMBEDDED_BASE, "it": EMBEDDED_BASE, "ru": EMBEDDED_BASE}


@dataclass
class MethodResult:
    """Start errors of one method over the words matched, and the time it took."""

    name: str
    # From audio to timed words: the transcription and any step after it.
    total_s: float
    # The step after the transcription alone (None: none, the words come with it).
    step_s: float | None
    audio_s: float
    errors_s: list[float] = field(default_factory=list)
    # Matched words whose times were interpolated rather than placed.
    interpolated: int = 0

    def score(self, sentence: ReferenceSentence, segments: Sequence[Segment], language_code: str) -> None:
        """Adds the start errors of one sentence's transcript."""
        for error_s, token in start_errors_s(sentence, timed_tokens(segments, language_code)):
            self.errors_s.append(error_s)
            self.interpolated += token.interpolated


def spelled_out(segments: Sequence[Segment], language_code: str) -> list[Segment]:
    """`segments` with their text as reference words and no words, for a
    forced aligner whose dictionary has no numbers."""
    return [
        replace(
            segment,
            text=" ".join(text for word in segment.words for text in spoken_words(word.text, language_code)),
            words=(),
        )
        for segment in segments
    ]


def percentile(values: Sequence[float], fraction: float) -> float:
    ordered = sorted(values)
    return ordered[round(fraction * (len(ordered) - 1))]


@dataclass(frozen=True)
class Transcripts:
    """One language's reference, its transcripts and what they cost."""

    reference: WordReference
    model: str
    chunks: list[ChunkTranscript]
    # Transcribing the sentences with and without word timestamps.
    with_words_s: float
    without_words_s: float


def transcribe(cache: ModelCache, reference: WordReference, model: str) -> Transcripts:
    """Every sentence of `reference` transcribed as one chunk, with word
    timestamps (and once without, to time what they add)."""
    transcriber = Transcriber(cache)
    sentences = [sentence.time_range for sentence in reference.sentences]
    plain = TranscriptionOptions(model=model, language_code=reference.language_code)
    list(transcriber.transcribe(reference.samples, sentences[:1], plain))  # loads the model
    elapsed_s = {}
    chunks: list[ChunkTranscript] = []
    for word_timestamps in (False, True):
        started = time.perf_counter()
        with raw_word_timestamps():
            chunks = list(
                transcriber.transcribe(reference.samples, sentences, replace(plain, word_timestamps=word_timestamps))
            )
        elapsed_s[word_timestamps] = time.perf_counter() - started
    return Transcripts(reference, model, chunks, elapsed_s[True], elapsed_s[False])


def snap(transcripts: Transcripts, options: SnapOptions) -> tuple[list[tuple[Segment, ...]], float]:
    """Every chunk's segments snapped to its own samples, and the time that took."""
    samples = transcripts.reference.samples
    started = time.perf_counter()
    snapped = []
    for chunk in transcripts.chunks:
        first = round(chunk.time_range.start_s * SAMPLE_RATE_HERTZ)
        stop = round(chunk.time_range.end_s * SAMPLE_RATE_HERTZ)
        snapped.append(snap_words_to_sound(chunk.segments, samples[first:stop], first / SAMPLE_RATE_HERTZ, options))
    return snapped, time.perf_counter() - started


def align_phonetic(cache: ModelCache, transcripts: Transcripts) -> tuple[list[tuple[Segment, ...]], float]:
    """Every chunk's transcript (digits spelled out) aligned by pocketsphinx, and the time that took."""

    def whisper_model(name: str) -> WhisperModel:
        return cache.get(name or transcripts.model).whisper

    engine = AlignEngine(CrossAttentionAligner(whisper_model), PhoneticAligner())
    samples = transcripts.reference.samples
    engine.align([Segment("one", 0.0, 1.0)], samples, language_code="en", method=AlignMethod.PHONETIC)  # loads it
    started = time.perf_counter()
    aligned = [
        engine.align(
            spelled_out(chunk.segments, "en"), samples, language_code="en", method=AlignMethod.PHONETIC
        ).segments
        for chunk in transcripts.chunks
    ]
    return aligned, time.perf_counter() - started


def bench_language(
    cache: ModelCache, language_code: str, duration_s: float, seed: int, options: SnapOptions, verbose: bool
) -> list[tuple[str, str, MethodResult, int]]:
    """Rows of the table for one language: (language, model, result, reference word count)."""
    model = MODELS[language_code]
    reference = build_word_reference(language_code, duration_s, seed=seed)
    transcripts = transcribe(cache, reference, model)
    print(
        f"{language_code}: {reference.duration_s:.1f} s of audio, {len(reference.sentences)} sentences, "
        f"{len(reference.words)} words; {model} transcribes it in {transcripts.without_words_s:.2f} s, "
        f"{transcripts.with_words_s:.2f} s with word timestamps"
    )
    # name: (each sentence's segments, total time, time of the step after the transcription)
    methods: dict[str, tuple[list[Sequence[Segment]], float, float | None]] = {
        "cross-attention": ([chunk.segments for chunk in transcripts.chunks], transcripts.with_words_s, None),
    }
    snapped, snap_s = snap(transcripts, options)
    methods["cross-attention + snap"] = (list(snapped), transcripts.with_words_s + snap_s, snap_s)
    if language_code == "en":
        aligned, align_s = align_phonetic(cache, transcripts)
        methods["pocketsphinx"] = (list(aligned), transcripts.without_words_s + align_s, align_s)

    results = []
    for name, (transcript, total_s, step_s) in methods.items():
        result = MethodResult(name, total_s, step_s, reference.duration_s)
        for sentence, segments in zip(reference.sentences, transcript, strict=True):
            result.score(sentence, segments, language_code)
        results.append((language_code, model, result, len(reference.words)))
    if verbose:
        for position, sentence in enumerate(reference.sentences):
            print(f"  {'reference':24s} {[(word.text, round(word.start_s, 3)) for word in sentence.words]}")
            for name, (transcript, _, _) in methods.items():
                starts = [
                    (token.text, None if token.start_s is None else round(token.start_s, 3))
                    for token in timed_tokens(transcript[position], language_code)
                ]
                print(f"  {name:24s} {starts}")
    return results


def print_table(rows: Sequence[tuple[str, str, MethodResult, int]]) -> None:
    print(
        f"{'lang':4s}  {'model':16s}  {'method':22s}  {'matched':>7s}  {'interp':>6s}  {'median':>6s}  "
        f"{'p90':>6s}  {'signed':>6s}  {'total_s':>7s}  {'step_ms':>8s}  {'ms/audio_s':>10s}"
    )
    for language_code, model, result, word_count in rows:
        absolute = [abs(error) for error in result.errors_s]
        figures = (
            f"{statistics.median(absolute) * 1000:6.0f}  {percentile(absolute, 0.9) * 1000:6.0f}  "
            f"{statistics.median(result.errors_s) * 1000:+6.0f}"
            if absolute
            else f"{'-':>6s}  {'-':>6s}  {'-':>6s}"
        )
        step = (
            f"{'-':>8s}  {'-':>10s}"
            if result.step_s is None
            else f"{result.step_s * 1000:8.1f}  {result.step_s * 1000 / result.audio_s:10.3f}"
        )
        print(
            f"{language_code:4s}  {model:16s}  {result.name:22s}  {len(absolute):>3d}/{word_count:<3d}  "
            f"{result.interpolated:6d}  {figures}  {result.total_s:7.2f}  {step}"
        )
    print(
        "median, p90: |start - true start| in ms; signed: median of (start - true start), negative: early.\n"
        "total_s: from audio to timed words (cross-attention: transcription with word timestamps; + snap:\n"
        "the same, then snapping; pocketsphinx: transcription without word timestamps, then alignment);\n"
        "step_ms: the step after the transcription alone, and per second of audio."
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--duration-s", type=float, default=60.0, help="length of each language's reference")
    parser.add_argument("--seed", type=int, default=1, help="seed of the reference's word order and gaps")
    parser.add_argument("--languages", nargs="+", default=list(MODELS), choices=list(MODELS))
    parser.add_argument("--cpu-threads", type=int, default=1)
    parser.add_argument("--verbose", action="store_true", help="print every sentence's word starts")
    args = parser.parse_args()
    print_machine_line()
    logging.basicConfig(level=logging.ERROR)

    cache = ModelCache(ModelLoadOptions(device="cpu", cpu_threads=args.cpu_threads))
    print(f"{args.cpu_threads} CPU thread(s), reference seed {args.seed}, {SnapOptions()}")
    rows = []
    for language_code in args.languages:
        rows += bench_language(cache, language_code, args.duration_s, args.seed, SnapOptions(), args.verbose)
    print_table(rows)


if __name__ == "__main__":
    main()

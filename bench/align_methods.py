"""Compares the two word aligners on real speech: speed (real-time factor)
and how close their word starts are.

Uses the asterisk core sounds (human recordings; `tools/ensure_test_data.sh`)
whose transcripts are what is said (`tests.speech.clear_prompts`), in two
scenarios:

* prompts: each recording alone as one segment (longest transcripts first);
* recording: prompts in random order strung together with silence between
  them, one segment per prompt, as the gateway sends a transcript; cross-attention is timed
  with consecutive segments packed into one encoder window (the default) and
  with one window per segment.

::

    python -m bench.align_methods --limit 60 --recording-s 240 --cpu-threads 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
from collections.abc import Sequence

from faster_whisper import WhisperModel

from bench.machine import print_machine_line
from common.limits import SAMPLE_RATE_HERTZ
from common.speech.whisper_models import DEFAULT_MODEL, ModelCache, ModelLoadOptions
from common.transcript import Segment, Word
from services.align.cross_attention import CrossAttentionAligner
from services.align.engine import AlignEngine, AlignMethod, AlignOptions
from services.align.phonetic import PhoneticAligner
from services.align.placement import Samples
from tests.speech import build_long_recording, clear_prompts, load_pcm16k

# Longest prompt used alone (one encoder window).
MAX_PROMPT_S = 30.0


class Tally:
    """Time spent and words placed by one way of aligning."""

    def __init__(self) -> None:
        self.elapsed_s = 0.0
        self.words: list[Word] = []

    def run(self, engine: AlignEngine, segments: Sequence[Segment], samples: Samples, method: AlignMethod) -> None:
        started = time.perf_counter()
        result = engine.align(segments, samples, language_code="en", method=method)
        self.elapsed_s += time.perf_counter() - started
        self.words += [word for segment in result.segments for word in segment.words]


def report(title: str, audio_s: float, reference: Tally, others: dict[str, Tally]) -> None:
    print(f"{title}: {audio_s:.1f} s of audio, {len(reference.words)} words")
    print(
        f"  {'phonetic':28s} {reference.elapsed_s:7.2f} s  RTF {reference.elapsed_s / audio_s:.4f}  "
        f"interpolated {sum(word.interpolated for word in reference.words)}"
    )
    for name, tally in others.items():
        pairs = [
            (ref, word)
            for ref, word in zip(reference.words, tally.words, strict=True)
            if not ref.interpolated and not word.interpolated
        ]
        absolute = sorted(abs(word.start_s - ref.start_s) for ref, word in pairs)
        signed = [word.start_s - ref.start_s for ref, word in pairs]
        print(
            f"  {name:28s} {tally.elapsed_s:7.2f} s  RTF {tally.elapsed_s / audio_s:.4f}  "
            f"|start - phonetic start| over {len(absolute)} words: median {statistics.median(absolute) * 1000:.0f} ms, "
            f"p90 {absolute[int(0.9 * (len(absolute) - 1))] * 1000:.0f} ms, "
            f"<=0.1 s {sum(d <= 0.1 for d in absolute) / len(absolute):.0%}, "
            f"<=0.3 s {sum(d <= 0.3 for d in absolute) / len(absolute):.0%}, "
            f"median signed {statistics.median(signed) * 1000:+.0f} ms"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=60, help="prompts aligned alone (longest transcripts first)")
    parser.add_argument("--recording-s", type=float, default=240.0, help="length of the multi-segment recording")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    print_machine_line()
    logging.basicConfig(level=logging.ERROR)

    cache = ModelCache(ModelLoadOptions(device="cpu", cpu_threads=args.cpu_threads))
    cache.pin(args.model)

    def whisper_model(name: str) -> WhisperModel:
        return cache.get(name or args.model).whisper

    phonetic = AlignEngine(CrossAttentionAligner(whisper_model), PhoneticAligner())
    packed = AlignEngine(CrossAttentionAligner(whisper_model))
    alone = AlignEngine(CrossAttentionAligner(whisper_model), options=AlignOptions(pack_window_s=0.0))
    print(f"model {args.model}, {args.cpu_threads} CPU threads")

    prompts = [
        (prompt, samples)
        for prompt in sorted(clear_prompts(), key=lambda prompt: -len(prompt.text))[: args.limit]
        if len(samples := load_pcm16k(prompt.path)) <= MAX_PROMPT_S * SAMPLE_RATE_HERTZ
    ]
    # Warm-up: loads the decoder and fills caches.
    for engine, method in ((phonetic, AlignMethod.PHONETIC), (packed, AlignMethod.CROSS_ATTENTION)):
        prompt, samples = prompts[-1]
        engine.align([Segment(prompt.text, 0.0, len(samples) / SAMPLE_RATE_HERTZ)], samples, method=method)
    reference, cross = Tally(), Tally()
    for prompt, samples in prompts:
        segment = Segment(prompt.text, 0.0, len(samples) / SAMPLE_RATE_HERTZ)
        reference.run(phonetic, [segment], samples, AlignMethod.PHONETIC)
        cross.run(packed, [segment], samples, AlignMethod.CROSS_ATTENTION)
    audio_s = sum(len(samples) for _, samples in prompts) / SAMPLE_RATE_HERTZ
    report(f"{len(prompts)} prompts alone", audio_s, reference, {"cross-attention": cross})

    # The prompts are 8 kHz 16-bit WAV files: 16 000 bytes a second.
    short = [prompt for prompt in clear_prompts() if prompt.path.stat().st_size < MAX_PROMPT_S * 16_000]
    recording = build_long_recording(args.recording_s, gap_s=0.8, prompts=short, shuffle_seed=1)
    segments = [Segment(utterance.text, utterance.start_s, utterance.end_s) for utterance in recording.utterances]
    reference, cross_packed, cross_alone = Tally(), Tally(), Tally()
    reference.run(phonetic, segments, recording.samples, AlignMethod.PHONETIC)
    cross_packed.run(packed, segments, recording.samples, AlignMethod.CROSS_ATTENTION)
    cross_alone.run(alone, segments, recording.samples, AlignMethod.CROSS_ATTENTION)
    report(
        f"recording of {len(segments)} segments",
        len(recording.samples) / SAMPLE_RATE_HERTZ,
        reference,
        {"cross-attention, packed 30 s": cross_packed, "cross-attention, per segment": cross_alone},
    )


if __name__ == "__main__":
    main()

"""Compares the two word aligners on real speech: speed (real-time factor)
and how close their word starts are.

Uses the asterisk core sounds (human recordings; `tools/ensure_test_data.sh`)
whose transcripts are what is said (`tests.speech.clear_prompts`), one
segment per recording, longest transcripts first::

    python -m bench.align_methods --limit 60 --cpu-threads 2
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time

from common.transcript import Segment
from services.align.cross_attention import CrossAttentionAligner
from services.align.engine import AlignEngine, AlignMethod
from services.align.phonetic import PhoneticAligner
from services.align.placement import SAMPLE_RATE_HERTZ
from services.asr.models import DEFAULT_MODEL, ModelCache, ModelLoadOptions
from tests.speech import clear_prompts, load_pcm16k


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--limit", type=int, default=60, help="recordings to use (longest transcripts first)")
    parser.add_argument("--cpu-threads", type=int, default=2)
    parser.add_argument("--model", default=DEFAULT_MODEL)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)

    cache = ModelCache(ModelLoadOptions(device="cpu", cpu_threads=args.cpu_threads))
    cache.pin(args.model)
    engine = AlignEngine(CrossAttentionAligner(lambda name: cache.get(name or args.model).whisper), PhoneticAligner())
    prompts = sorted(clear_prompts(), key=lambda prompt: -len(prompt.text))[: args.limit]
    elapsed_s = {method: 0.0 for method in AlignMethod}
    audio_s = 0.0
    differences_s: list[float] = []
    signed_s: list[float] = []
    interpolated = {method: 0 for method in AlignMethod}
    word_count = 0
    used = 0
    # Warm-up: the first call loads the decoder and fills caches.
    warm = load_pcm16k(prompts[-1].path)
    for method in AlignMethod:
        engine.align([Segment(prompts[-1].text, 0.0, len(warm) / SAMPLE_RATE_HERTZ)], warm, method=method)
    for prompt in prompts:
        samples = load_pcm16k(prompt.path)
        duration_s = len(samples) / SAMPLE_RATE_HERTZ
        if duration_s > 30.0:
            continue
        audio_s += duration_s
        used += 1
        segment = Segment(prompt.text, 0.0, duration_s)
        words = {}
        for method in AlignMethod:
            started = time.perf_counter()
            result = engine.align([segment], samples, language_code="en", method=method)
            elapsed_s[method] += time.perf_counter() - started
            words[method] = result.segments[0].words
            interpolated[method] += sum(word.interpolated for word in words[method])
        word_count += len(words[AlignMethod.PHONETIC])
        for phonetic, cross in zip(words[AlignMethod.PHONETIC], words[AlignMethod.CROSS_ATTENTION], strict=True):
            if not phonetic.interpolated and not cross.interpolated:
                differences_s.append(abs(phonetic.start_s - cross.start_s))
                signed_s.append(cross.start_s - phonetic.start_s)

    print(
        f"{len(prompts)} recordings, {audio_s:.1f} s of audio, {word_count} words, model {args.model}, "
        f"{args.cpu_threads} CPU threads"
    )
    for method in AlignMethod:
        print(
            f"  {method.value:16s} {elapsed_s[method]:6.2f} s  RTF {elapsed_s[method] / audio_s:.3f}  "
            f"interpolated words {interpolated[method]}"
        )
    ordered = sorted(differences_s)
    print(
        f"  |start difference| over {len(ordered)} words placed by both: "
        f"median {statistics.median(ordered) * 1000:.0f} ms, "
        f"mean {statistics.fmean(ordered) * 1000:.0f} ms, "
        f"p90 {ordered[int(0.9 * (len(ordered) - 1))] * 1000:.0f} ms, "
        f"within 0.1 s {sum(d <= 0.1 for d in ordered) / len(ordered):.0%}, "
        f"within 0.3 s {sum(d <= 0.3 for d in ordered) / len(ordered):.0%}; "
        f"cross-attention minus phonetic: median {statistics.median(signed_s) * 1000:+.0f} ms"
    )


if __name__ == "__main__":
    main()

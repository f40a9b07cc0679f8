"""Diarization: how well and how fast the diarize engine tells speakers
apart, and what it adds to a job.

The reference dialogue (`tests.voices`) alternates Allison (the asterisk
recordings) and piper's joe, repeated to about `--minutes` of audio, with
1-3 speakers. Printed per recording: speakers found, the diarization error rate (missed
speech, false alarms and confusion over the reference speech, 0.25 s collar;
the reference turns are whole utterances, pauses inside them included, so
part of the "missed" is silence), the share of speech time found with the
right speaker (after the best mapping of labels) and of the utterances found
as speech, and the engine's real-time factor on `--threads` threads.

With `--job` it also runs the whole suite on the dialogue, once without and
once with diarization, and prints the wall time of each: diarization runs
beside transcription, so the difference is what it costs a job.

::

    python -m bench.diarization --minutes 5 --threads 1 --job
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from bench.machine import print_machine_line
from services.diarize.engine import Diarizer
from services.diarize.weights import build_models
from tests.speech import SAMPLE_RATE_HERTZ, LongRecording, clear_prompts, join_with_silence, load_pcm16k, write_wav
from tests.voices import (
    JOE_LINES,
    Dialogue,
    diarization_error_rate,
    joe_says,
    parse_rttm,
    reference_rttm,
    speaker_accuracy,
)


def long_dialogue(minutes: float, voices: int) -> Dialogue:
    """`voices` speakers in turn (Allison, joe, joe slowed down a little: a
    third, lower voice) until `minutes` of audio."""
    prompts = clear_prompts()
    joe = [joe_says(line) for line in JOE_LINES]
    spoken: list[tuple[np.ndarray, str]] = []
    speakers: list[str] = []
    total_s = 0.0
    turn = 0
    while total_s < minutes * 60:
        who = turn % voices
        if who == 0:
            prompt = prompts[turn % len(prompts)]
            samples, text = load_pcm16k(prompt.path), prompt.text
        else:
            samples, text = joe[turn % len(joe)], JOE_LINES[turn % len(JOE_LINES)]
            if who == 2:  # a lower, slower voice: resampled by 0.85
                import soxr

                samples = np.asarray(soxr.resample(samples, SAMPLE_RATE_HERTZ, SAMPLE_RATE_HERTZ / 0.85), np.float32)
        spoken.append((samples, text))
        speakers.append(["allison", "joe", "low joe"][who])
        total_s += samples.size / SAMPLE_RATE_HERTZ + 0.8
        turn += 1
    recording: LongRecording = join_with_silence(spoken, 0.8)
    return Dialogue(recording, speakers)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--job", action="store_true", help="also time a suite job with and without diarization")
    options = parser.parse_args()
    print_machine_line()
    with tempfile.TemporaryDirectory() as cache:
        models = build_models(Path(cache))
        diarizer = Diarizer(models.segmentation, models.embedding, threads=options.threads)
        print("| voices | audio | speakers found | DER (0.25 s collar) | right speaker | found as speech | RTF |")
        print("|---|---|---|---|---|---|---|")
        for voices in (1, 2, 3):
            reference = long_dialogue(options.minutes, voices)
            samples = reference.recording.samples
            started = time.perf_counter()
            turns = diarizer.diarize(samples)
            elapsed = time.perf_counter() - started
            found = [(turn.start_s, turn.end_s, turn.speaker) for turn in turns]
            accuracy, coverage = speaker_accuracy(reference, found)
            der = diarization_error_rate(parse_rttm(reference_rttm(reference)), found)
            audio_s = samples.size / SAMPLE_RATE_HERTZ
            print(
                f"| {voices} | {audio_s:.0f} s | {len({t.speaker for t in turns})} | {der:.1%} | {accuracy:.1%} "
                f"| {coverage:.1%} | {elapsed / audio_s:.4f} |"
            )
    if options.job:
        job_cost(long_dialogue(options.minutes, 2))


def job_cost(reference: Dialogue) -> None:
    from bench.end_to_end import start_suite
    from subtitler.asr.v1 import asr_pb2
    from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc

    with tempfile.TemporaryDirectory() as root:
        media = Path(root) / "media"
        media.mkdir()
        write_wav(media / "dialogue.wav", reference.recording.samples)
        suite = start_suite(Path(root), media)
        try:
            with suite.channel("gateway") as channel:
                gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
                for diarize in (False, True, False, True):
                    config = gateway_pb2.JobConfig(
                        transcription=asr_pb2.TranscriptionOptions(language_code="en"),
                        diarization=gateway_pb2.DiarizationOptions(enabled=diarize),
                    )
                    started = time.perf_counter()
                    job = gateway.CreateJob(gateway_pb2.CreateJobRequest(path="dialogue.wav", config=config))
                    for _ in gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), timeout=1800):
                        pass
                    finished = gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id))
                    label = "with diarization" if diarize else "without"
                    print(
                        f"job {label}: {time.perf_counter() - started:.1f} s "
                        f"({gateway_pb2.JobState.Name(finished.state)})"
                    )
        finally:
            suite.stop()


if __name__ == "__main__":
    main()

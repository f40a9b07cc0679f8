"""Live-caption benchmark (part of `make bench`).

Real speech (Asterisk prompts with pauses between them, a different order
per stream) is streamed to the gateway's StreamingTranscribe at real-time
pace by N clients at once, with interim results, through a suite started on
free ports with the embedded tiny.en int8. Prints:

- latency of finals: from the end of an utterance's audio (the final's end
  offset, where the VAD heard speech end) to the final's arrival on the
  client's clock, median and p95 (targets: at most 1.0 s and 2.0 s with 4
  streams); sentences made final inside long speech, which wait for two
  steps to agree on them, are reported apart;
- first result after speech starts: from the speech-begin offset to the
  first interim (or final) of that utterance (target: at most 1.5 s);
- WER of the finals against the reference, and against the same audio
  transcribed as a file by the suite (target: at most 1.15x);
- with --ramp, the most streams held in real time: each count runs for
  --ramp-s and is held when the p95 stays under 2 s and the latency of the
  second half is not above the first half's by more than 0.5 s;
- with --memory-s, the gateway's RSS over one long stream sent as fast as
  the server takes it (flat memory per stream).

    python -m bench.streaming --streams 4 --duration-s 300 --ramp 2,4,6,8 --memory-s 600

Five minutes a stream by default: with two, a single misheard acronym moved
the WER ratio by 0.2, and whole utterances lost near the end of a stream
went unseen.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import psutil

from bench.end_to_end import machine_line, start_suite
from common.convert import duration_to_seconds, seconds_to_duration
from gateway.cli import upload_requests
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from subtitler.vad.v1 import vad_pb2
from tests.speech import SAMPLE_RATE_HERTZ, LongRecording, build_long_recording, write_wav
from tests.wer import word_error_rate

BLOCK_S = 0.1


@dataclass
class StreamRun:
    finals: list[tuple[float, float, str]] = field(default_factory=list)  # (end_s, received_s, text)
    first_results: list[float] = field(default_factory=list)
    speech_ends: list[float] = field(default_factory=list)
    error: str = ""

    def ends_speech(self, end_s: float) -> bool:
        """Whether a final ends an utterance (the VAD's end of speech is at
        its end), rather than a sentence inside long speech."""
        return any(end_s - 0.6 <= offset <= end_s + 0.6 for offset in self.speech_ends)

    @property
    def final_latencies(self) -> list[float]:
        """From the end of each utterance's audio to its final."""
        return [received - end for end, received, _ in self.finals if self.ends_speech(end)]

    @property
    def sentence_latencies(self) -> list[float]:
        """From the end of a sentence inside long speech to its final."""
        return [received - end for end, received, _ in self.finals if not self.ends_speech(end)]

    @property
    def text(self) -> str:
        return " ".join(text for _, _, text in self.finals)


def recording(seed: int, duration_s: float) -> LongRecording:
    return build_long_recording(min_duration_s=duration_s, gap_s=1.2, shuffle_seed=seed)


def stream(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    samples: np.ndarray,
    *,
    fast: bool = False,
    interim: bool = True,
    min_silence_s: float = 0.0,
) -> StreamRun:
    """Streams `samples` (16 kHz float) as LINEAR16 at real-time pace (or as fast as taken)."""
    run = StreamRun()
    pcm = (np.clip(samples, -1.0, 1.0) * 32767).astype("<i2").tobytes()
    block_bytes = round(BLOCK_S * SAMPLE_RATE_HERTZ) * 2
    started: list[float] = []

    def requests() -> Iterator[gateway_pb2.StreamingTranscribeRequest]:
        yield gateway_pb2.StreamingTranscribeRequest(
            config=gateway_pb2.StreamingConfig(
                transcription=asr_pb2.TranscriptionOptions(language_code="en"),
                encoding=gateway_pb2.AUDIO_ENCODING_LINEAR16,
                sample_rate_hertz=SAMPLE_RATE_HERTZ,
                channel_count=1,
                interim_results=interim,
                speech_detection=vad_pb2.LiveVadOptions(min_silence_duration=seconds_to_duration(min_silence_s)),
            )
        )
        started.append(time.monotonic())
        for position, offset in enumerate(range(0, len(pcm), block_bytes)):
            if not fast:
                delay = position * BLOCK_S - (time.monotonic() - started[0])
                if delay > 0:
                    time.sleep(delay)
            yield gateway_pb2.StreamingTranscribeRequest(audio=pcm[offset : offset + block_bytes])

    speech_starts: list[float] = []
    seen: set[int] = set()
    try:
        for response in gateway.StreamingTranscribe(requests(), timeout=3600):
            received = time.monotonic() - started[0]
            kind = response.WhichOneof("response")
            if kind == "speech_begin":
                speech_starts.append(duration_to_seconds(response.speech_begin.offset))
            elif kind == "speech_end":
                run.speech_ends.append(duration_to_seconds(response.speech_end.offset))
            elif kind in ("interim", "final"):
                result = getattr(response, kind)
                # The speech start of the utterance: the last one before its audio starts (plus the pre-roll).
                start_s = duration_to_seconds(result.start_offset) + 0.25
                # (None for the rest of an utterance cut at its maximum length.)
                begun = [offset for offset in speech_starts if start_s - 1.0 <= offset <= start_s]
                if result.utterance_index not in seen and begun:
                    seen.add(result.utterance_index)
                    run.first_results.append(received - begun[-1])
                if kind == "final":
                    run.finals.append((duration_to_seconds(result.end_offset), received, result.text))
    except grpc.RpcError as error:
        run.error = f"{error.code().name}: {error.details()}"
    return run


def run_streams(
    gateway: gateway_pb2_grpc.GatewayServiceStub, recordings: list[LongRecording], **kwargs: float
) -> list[StreamRun]:
    runs: list[StreamRun] = [StreamRun() for _ in recordings]

    def one(position: int) -> None:
        runs[position] = stream(gateway, recordings[position].samples, **kwargs)  # type: ignore[arg-type]

    threads = [threading.Thread(target=one, args=(position,)) for position in range(len(recordings))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for run in runs:
        if run.error:
            raise RuntimeError(f"a stream failed: {run.error}")
    return runs


def percentile(values: list[float], share: float) -> float:
    return float(np.percentile(values, share * 100)) if values else float("nan")


def file_text(gateway: gateway_pb2_grpc.GatewayServiceStub, path: Path) -> str:
    config = gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(language_code="en"))
    job = gateway.UploadMedia(upload_requests(path, config), timeout=600)
    for _ in gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), timeout=600):
        pass
    return gateway.GetResult(
        gateway_pb2.GetResultRequest(job_id=job.job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
    ).content


def report(label: str, runs: list[StreamRun]) -> tuple[float, float]:
    latencies = [latency for run in runs for latency in run.final_latencies]
    firsts = [latency for run in runs for latency in run.first_results]
    sentences = [latency for run in runs for latency in run.sentence_latencies]
    median, p95 = statistics.median(latencies), percentile(latencies, 0.95)
    print(
        f"{label}: {len(latencies)} utterances; end of speech to final: median {median:.2f} s, p95 {p95:.2f} s "
        f"(targets 1.0 / 2.0); speech start to first result: median {statistics.median(firsts):.2f} s, "
        f"p95 {percentile(firsts, 0.95):.2f} s (target 1.5)"
    )
    if sentences:
        print(
            f"  and {len(sentences)} sentences made final inside long speech: end of the sentence to its final "
            f"median {statistics.median(sentences):.2f} s, p95 {percentile(sentences, 0.95):.2f} s"
        )
    return median, p95


def held(runs: list[StreamRun]) -> bool:
    """Real time held: p95 under 2 s and no growth from the first half of the run to the second."""
    first: list[float] = []
    second: list[float] = []
    for run in runs:
        if not run.finals:
            continue
        middle = run.finals[-1][0] / 2
        for end, received, _ in run.finals:
            if run.ends_speech(end):
                (first if end < middle else second).append(received - end)
    everything = first + second
    if not first or not second:
        return False
    return percentile(everything, 0.95) <= 2.0 and statistics.median(second) <= statistics.median(first) + 0.5


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--duration-s", type=float, default=300.0, help="audio per stream")
    parser.add_argument("--ramp", default="", help="stream counts to try for the most held in real time, e.g. 2,4,6")
    parser.add_argument("--ramp-s", type=float, default=60.0, help="audio per stream at each count of the ramp")
    parser.add_argument("--memory-s", type=float, default=0.0, help="length of the fast stream for the memory check")
    parser.add_argument(
        "--min-silence-s",
        default="",
        help="VAD silences that end an utterance to compare, e.g. 0.5,0.4 (default: the server's)",
    )
    parser.add_argument("--gateway", default="", help="use a running suite's gateway instead of starting one")
    parser.add_argument("--texts", default="", help="folder to write each stream's reference, live and file text to")
    options = parser.parse_args()
    print(f"machine: {machine_line()}")
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as workdir_name:
        workdir = Path(workdir_name)
        media = workdir / "media"
        media.mkdir()
        suite = None
        if options.gateway:
            target = options.gateway
        else:
            suite = start_suite(workdir, media, {"SUBTITLER_GATEWAY_MAX_STREAMS": "64"})
            target = suite.target("gateway")
        try:
            with grpc.insecure_channel(target) as channel:
                gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
                recordings = [recording(200 + number, options.duration_s) for number in range(options.streams)]
                for silence_s in [float(item) for item in options.min_silence_s.split(",") if item.strip()]:
                    compared = run_streams(gateway, recordings, min_silence_s=silence_s)
                    report(f"{options.streams} streams, utterances ended by {silence_s:g} s of silence", compared)
                runs = run_streams(gateway, recordings)
                report(f"{options.streams} streams of {options.duration_s:g} s at real-time pace", runs)
                live_wers = [
                    word_error_rate(rec.reference_text, run.text) for rec, run in zip(recordings, runs, strict=True)
                ]
                file_wers = []
                for number, rec in enumerate(recordings):
                    path = write_wav(media / f"stream-{number}.wav", rec.samples)
                    text = file_text(gateway, path)
                    file_wers.append(word_error_rate(rec.reference_text, text))
                    if options.texts:
                        folder = Path(options.texts)
                        folder.mkdir(parents=True, exist_ok=True)
                        for kind, content in (
                            ("reference", rec.reference_text),
                            ("live", runs[number].text),
                            ("file", text),
                        ):
                            (folder / f"stream-{number}.{kind}.txt").write_text(content + "\n", encoding="utf-8")
                        # Each final on its own line: where it ended, and whether speech ended there.
                        (folder / f"stream-{number}.finals.txt").write_text(
                            "".join(
                                f"{end:8.2f} {'pause   ' if runs[number].ends_speech(end) else 'sentence'} {line}\n"
                                for end, _, line in runs[number].finals
                            ),
                            encoding="utf-8",
                        )
                live_wer, file_wer = statistics.mean(live_wers), statistics.mean(file_wers)
                print(
                    f"WER: live finals {live_wer:.3f}, the same audio as files {file_wer:.3f}: "
                    f"{live_wer / file_wer if file_wer else float('inf'):.2f}x (target <= 1.15x)"
                )
                if options.ramp:
                    most = 0
                    for count in [int(item) for item in options.ramp.split(",") if item.strip()]:
                        ramp_runs = run_streams(
                            gateway, [recording(300 + number, options.ramp_s) for number in range(count)]
                        )
                        ok = held(ramp_runs)
                        report(f"ramp: {count} streams ({'held' if ok else 'NOT held'})", ramp_runs)
                        if not ok:
                            break
                        most = count
                    print(f"most streams held in real time: {most}")
                if options.memory_s and suite is not None:
                    memory_check(gateway, suite.processes["gateway"].pid, options.memory_s)
        finally:
            if suite is not None:
                suite.stop()


def memory_check(gateway: gateway_pb2_grpc.GatewayServiceStub, pid: int, duration_s: float) -> None:
    process = psutil.Process(pid)
    samples: list[tuple[float, int]] = []
    done = threading.Event()

    def watch() -> None:
        started = time.monotonic()
        while not done.wait(2.0):
            samples.append((time.monotonic() - started, process.memory_info().rss))

    watcher = threading.Thread(target=watch)
    watcher.start()
    started = time.monotonic()
    run = stream(gateway, recording(400, duration_s).samples, fast=True, interim=False)
    done.set()
    watcher.join()
    if run.error:
        raise RuntimeError(run.error)
    quarter = max(1, len(samples) // 4)
    early = statistics.median(rss for _, rss in samples[:quarter]) / 2**20
    late = statistics.median(rss for _, rss in samples[-quarter:]) / 2**20
    print(
        f"memory: one {duration_s:g} s stream sent as fast as taken ({time.monotonic() - started:.0f} s, "
        f"{len(run.finals)} finals): gateway RSS {early:.0f} MiB in its first quarter, {late:.0f} MiB in its last"
    )


if __name__ == "__main__":
    main()

"""Live-caption benchmark (part of `make bench`).

Real speech (Asterisk prompts with pauses between them, a different order
per stream; with --media realistic, stretches of bench.media's continuous
speech of two voices, with music and noise) is streamed to the gateway's StreamingTranscribe at real-time
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
- whether latency drifts: the p95 of the finals of the first minute and of
  the last (target: the last at most the first + 0.5 s);
- the live streams the gateway holds, as it measured them
  (gateway.live.admission: from the ASR's measured live decode time);
- with --overload, twice as many streams as the gateway holds offered at
  once: how many it admitted, their latencies (the same targets), and how
  fast the others were refused (RESOURCE_EXHAUSTED with a retry hint within
  a second);
- with --ramp, the most streams held in real time (with --max-streams 64,
  beyond what the gateway admits by its measure): each count runs for --ramp-s and is
  held when the p95 stays under 2 s and the latency of the second half is
  not above the first half's by more than 0.5 s;
- with --memory-s, the gateway's RSS over one long stream sent as fast as
  the server takes it (flat memory per stream).

    python -m bench.streaming --counts 1,2 --streams 4 --duration-s 300 --overload --memory-s 600
    python -m bench.streaming --max-streams 64 --streams 4 --duration-s 60 --ramp 4,6,8,10,12

Run it twice, as the machine is and with AVX2 forced
(CT2_FORCE_CPU_ISA=AVX2 ONEDNN_MAX_CPU_ISA=AVX2 MKL_ENABLE_INSTRUCTIONS=AVX2):
the first line says which instruction set CTranslate2 dispatched.

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

from bench.end_to_end import Suite, start_suite
from bench.machine import print_machine_line
from bench.media import realistic_media
from common.rpc.convert import duration_to_seconds, seconds_to_duration
from gateway.cli.connection import upload_requests
from gateway.cli.live import BLOCK_S
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from subtitler.status.v1 import status_pb2, status_pb2_grpc
from subtitler.vad.v1 import vad_pb2
from tests.speech import SAMPLE_RATE_HERTZ, LongRecording, Utterance, build_long_recording, write_wav
from tests.wer import word_error_rate


@dataclass
class StreamRun:
    finals: list[tuple[float, float, str]] = field(default_factory=list)  # (end_s, received_s, text)
    first_results: list[float] = field(default_factory=list)
    speech_ends: list[float] = field(default_factory=list)
    error: str = ""
    # A stream the gateway refused: after how long, and the retry delay it suggested.
    refused_after_s: float | None = None
    retry_after_s: str = ""

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


def recording(seed: int, duration_s: float, media: str) -> LongRecording:
    """A stream's audio: `duration_s` of `media`, a different stretch for
    each seed: "prompts" (Asterisk prompts, 1.2 s apart) or "realistic"
    (bench.media: continuous speech of two voices, music, noise)."""
    if media == "realistic":
        return realistic_stretch(seed, duration_s)
    return build_long_recording(min_duration_s=duration_s, gap_s=1.2, shuffle_seed=seed)


def realistic_stretch(seed: int, duration_s: float) -> LongRecording:
    """About `duration_s` of the realistic recording from a point the seed
    picks (going round it past its end), cut between utterances, with the
    utterances it holds as its reference."""
    media = realistic_media()
    samples = media.samples()
    utterances = list(media.utterances)
    first = (seed * 7919) % len(utterances)
    spoken: list[Utterance] = []
    pieces: list[np.ndarray] = []
    length_s = 0.0
    position = first
    while length_s < duration_s:
        utterance = utterances[position % len(utterances)]
        following = utterances[(position + 1) % len(utterances)]
        # From this utterance's start to the next one's (its gap and any music after it).
        end_s = following.start_s if following.start_s > utterance.start_s else media.duration_s
        piece = samples[round(utterance.start_s * SAMPLE_RATE_HERTZ) : round(end_s * SAMPLE_RATE_HERTZ)]
        spoken.append(Utterance(length_s, length_s + utterance.end_s - utterance.start_s, utterance.text))
        pieces.append(piece)
        length_s += piece.size / SAMPLE_RATE_HERTZ
        position += 1
    pieces.append(np.zeros(SAMPLE_RATE_HERTZ, dtype=np.float32))  # a second of silence ends the last
    return LongRecording(np.concatenate(pieces), " ".join(item.text for item in spoken), spoken)


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
    opened = time.monotonic()
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
        if error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and not run.finals:
            run.refused_after_s = time.monotonic() - opened
            trailers = dict(error.trailing_metadata() or ())
            run.retry_after_s = str(trailers.get("retry-after-s", ""))
        else:
            run.error = f"{error.code().name}: {error.details()}"
    return run


def run_streams(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    recordings: list[LongRecording],
    *,
    allow_refusals: bool = False,
    **kwargs: float,
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
        if run.refused_after_s is not None and not allow_refusals:
            raise RuntimeError(
                "a stream was refused (RESOURCE_EXHAUSTED): the gateway holds fewer streams on this machine "
                "than asked; see its measured capacity above, or lift it with --max-streams"
            )
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


def minute_p95s(runs: list[StreamRun]) -> tuple[float, float]:
    """The p95 of the utterances' final latencies in the first minute of the
    streams and in their last."""
    first: list[float] = []
    last: list[float] = []
    for run in runs:
        if not run.finals:
            continue
        end_of_stream = run.finals[-1][0]
        for end, received, _ in run.finals:
            if run.ends_speech(end):
                if end <= 60.0:
                    first.append(received - end)
                if end >= end_of_stream - 60.0:
                    last.append(received - end)
    return percentile(first, 0.95), percentile(last, 0.95)


def measured_streams(channel: grpc.Channel, wait_s: float = 30.0) -> tuple[int, float]:
    """The live streams the gateway holds and the ASR's live decode time, as
    measured (waiting up to `wait_s` for the gateway to have the ASR's measure)."""
    stub = status_pb2_grpc.StatusServiceStub(channel)
    deadline = time.monotonic() + wait_s
    while True:
        measured = stub.GetStatus(status_pb2.GetStatusRequest(), timeout=10).measured_capacity
        if measured.live_decode_s or time.monotonic() > deadline:
            return measured.live_streams, measured.live_decode_s
        time.sleep(0.5)


def overload(gateway: gateway_pb2_grpc.GatewayServiceStub, held_streams: int, duration_s: float, media: str) -> None:
    """Twice the streams the gateway holds, offered at once."""
    offered = max(2, 2 * held_streams)
    runs = run_streams(
        gateway, [recording(500 + number, duration_s, media) for number in range(offered)], allow_refusals=True
    )
    admitted = [run for run in runs if run.refused_after_s is None]
    refused = [run for run in runs if run.refused_after_s is not None]
    slowest = max((run.refused_after_s or 0.0 for run in refused), default=float("nan"))
    hints = sorted({run.retry_after_s for run in refused})
    print(
        f"overload: {offered} streams offered at once, {len(admitted)} admitted, {len(refused)} refused "
        f"(RESOURCE_EXHAUSTED within {slowest:.2f} s at most, target 1 s; retry hints {', '.join(hints) or 'none'} s)"
    )
    if admitted:
        report(f"overload: the {len(admitted)} admitted streams", admitted)


def held(runs: list[StreamRun]) -> bool:
    """Real time held: the latency targets (finals median 1.0 s and p95 2.0 s,
    first results p95 1.5 s) and no growth from the first half of the run to the second."""
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
    firsts = [latency for run in runs for latency in run.first_results]
    return (
        statistics.median(everything) <= 1.0
        and percentile(everything, 0.95) <= 2.0
        and percentile(firsts, 0.95) <= 1.5
        and statistics.median(second) <= statistics.median(first) + 0.5
    )


def main() -> None:
    options = arguments()
    print_machine_line()
    with tempfile.TemporaryDirectory(prefix="bench-streaming-") as workdir_name:
        workdir = Path(workdir_name)
        media = workdir / "media"
        media.mkdir()
        suite = None
        if options.gateway:
            target = options.gateway
        else:
            limit = {"SUBTITLER_GATEWAY_MAX_STREAMS": str(options.max_streams)} if options.max_streams else {}
            suite = start_suite(workdir, media, limit)
            target = suite.target("gateway")
        try:
            with grpc.insecure_channel(target) as channel:
                measure(channel, options, media, suite)
        finally:
            if suite is not None:
                suite.stop()


def arguments() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=4)
    parser.add_argument("--duration-s", type=float, default=300.0, help="audio per stream")
    parser.add_argument("--ramp", default="", help="stream counts to try for the most held in real time, e.g. 2,4,6")
    parser.add_argument("--ramp-s", type=float, default=60.0, help="audio per stream at each count of the ramp")
    parser.add_argument(
        "--counts", default="", help="fewer streams to report first, --ramp-s each, e.g. 1,2 (latency by load)"
    )
    parser.add_argument("--memory-s", type=float, default=0.0, help="length of the fast stream for the memory check")
    parser.add_argument(
        "--min-silence-s",
        default="",
        help="VAD silences that end an utterance to compare, e.g. 0.5,0.4 (default: the server's)",
    )
    parser.add_argument(
        "--media",
        choices=["prompts", "realistic"],
        default="prompts",
        help="Asterisk prompts 1.2 s apart, or continuous speech, music and noise (bench.media)",
    )
    parser.add_argument("--gateway", default="", help="use a running suite's gateway instead of starting one")
    parser.add_argument(
        "--max-streams", type=int, default=0, help="the gateway's SUBTITLER_GATEWAY_MAX_STREAMS (default: measured)"
    )
    parser.add_argument(
        "--overload", action="store_true", help="offer twice the streams the gateway holds: refusals and latencies"
    )
    parser.add_argument("--texts", default="", help="folder to write each stream's reference, live and file text to")
    return parser.parse_args()


def measure(channel: grpc.Channel, options: argparse.Namespace, media: Path, suite: Suite | None) -> None:
    """What the options ask for, in turn: latency by load, the streams at
    real-time pace (with drift and WER against the same audio as files),
    overload, the ramp and the memory check (only of a suite started here)."""
    gateway = gateway_pb2_grpc.GatewayServiceStub(channel)
    held_streams, decode_s = measured_streams(channel)
    print(
        f"the gateway holds {held_streams} live streams on this machine "
        f"({'SUBTITLER_GATEWAY_MAX_STREAMS' if options.max_streams else 'measured'}; "
        f"the ASR measured {decode_s:.3f} s a live decode)"
    )
    latency_by_load(gateway, options)
    recordings = [recording(200 + number, options.duration_s, options.media) for number in range(options.streams)]
    for silence_s in [float(item) for item in options.min_silence_s.split(",") if item.strip()]:
        compared = run_streams(gateway, recordings, min_silence_s=silence_s)
        report(f"{options.streams} streams, utterances ended by {silence_s:g} s of silence", compared)
    runs = run_streams(gateway, recordings)
    report(f"{options.streams} streams of {options.duration_s:g} s at real-time pace", runs)
    first_p95, last_p95 = minute_p95s(runs)
    print(
        f"  drift: p95 of the first minute's finals {first_p95:.2f} s, of the last minute's "
        f"{last_p95:.2f} s (target: at most the first + 0.5 s)"
    )
    compare_with_files(gateway, options, recordings, runs, media)
    if options.overload:
        overload(gateway, measured_streams(channel)[0], options.ramp_s, options.media)
    if options.ramp:
        ramp(gateway, options)
    if options.memory_s and suite is not None:
        memory_check(gateway, suite.processes["gateway"].pid, options.memory_s, options.media)


def latency_by_load(gateway: gateway_pb2_grpc.GatewayServiceStub, options: argparse.Namespace) -> None:
    """The --counts: fewer streams first, --ramp-s each, each count's latencies."""
    for count in [int(item) for item in options.counts.split(",") if item.strip()]:
        few = run_streams(gateway, [recording(100 + number, options.ramp_s, options.media) for number in range(count)])
        report(f"{count} streams of {options.ramp_s:g} s at real-time pace", few)


def compare_with_files(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    options: argparse.Namespace,
    recordings: list[LongRecording],
    runs: list[StreamRun],
    media: Path,
) -> None:
    """WER of the live finals against that of the same audio sent as files;
    with --texts, each stream's texts written out."""
    live_wers = [word_error_rate(rec.reference_text, run.text) for rec, run in zip(recordings, runs, strict=True)]
    file_wers = []
    for number, rec in enumerate(recordings):
        path = write_wav(media / f"stream-{number}.wav", rec.samples)
        text = file_text(gateway, path)
        file_wers.append(word_error_rate(rec.reference_text, text))
        if options.texts:
            write_texts(Path(options.texts), number, rec, runs[number], text)
    live_wer, file_wer = statistics.mean(live_wers), statistics.mean(file_wers)
    print(
        f"WER: live finals {live_wer:.3f}, the same audio as files {file_wer:.3f}: "
        f"{live_wer / file_wer if file_wer else float('inf'):.2f}x (target <= 1.15x)"
    )


def write_texts(folder: Path, number: int, rec: LongRecording, run: StreamRun, text: str) -> None:
    """Stream `number`'s reference, live and file texts, and its finals, into `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    for kind, content in (
        ("reference", rec.reference_text),
        ("live", run.text),
        ("file", text),
    ):
        (folder / f"stream-{number}.{kind}.txt").write_text(content + "\n", encoding="utf-8")
    # Each final on its own line: where it ended, and whether speech ended there.
    (folder / f"stream-{number}.finals.txt").write_text(
        "".join(
            f"{end:8.2f} {'pause   ' if run.ends_speech(end) else 'sentence'} {line}\n" for end, _, line in run.finals
        ),
        encoding="utf-8",
    )


def ramp(gateway: gateway_pb2_grpc.GatewayServiceStub, options: argparse.Namespace) -> None:
    """The --ramp: more streams at each count until one is refused or not held; the most held."""
    most = 0
    for count in [int(item) for item in options.ramp.split(",") if item.strip()]:
        ramp_runs = run_streams(
            gateway,
            [recording(300 + number, options.ramp_s, options.media) for number in range(count)],
            allow_refusals=True,
        )
        refused = sum(run.refused_after_s is not None for run in ramp_runs)
        if refused:
            print(f"ramp: {count} streams: {refused} refused by the gateway's admission")
            break
        ok = held(ramp_runs)
        report(f"ramp: {count} streams ({'held' if ok else 'NOT held'})", ramp_runs)
        if not ok:
            break
        most = count
    print(f"most streams held in real time: {most}")


def memory_check(gateway: gateway_pb2_grpc.GatewayServiceStub, pid: int, duration_s: float, media: str) -> None:
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
    run = stream(gateway, recording(400, duration_s, media).samples, fast=True, interim=False)
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

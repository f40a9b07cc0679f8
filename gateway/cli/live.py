"""`subtitler live`: stream a media file or raw PCM from stdin to the
gateway's StreamingTranscribe and print captions as they come.

    subtitler live talk.mp4                    # at real-time pace
    subtitler live talk.mp4 --fast -o talk.srt # as fast as the server takes it
    ffmpeg -i URL -f s16le -ac 1 -ar 16000 - | subtitler live -
    subtitler live talk.wav --format jsonl     # one JSON object a line per response
    subtitler live https://tv.example/live/index.m3u8  # opened by the audio service
"""

from __future__ import annotations

import argparse
import itertools
import json
import shutil
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, BinaryIO, TextIO

from common.limits import SAMPLE_RATE_HERTZ
from common.rpc.convert import duration_to_seconds, seconds_to_duration
from gateway.output.subtitles import timestamp
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from subtitler.vad.v1 import vad_pb2

# Audio sent per message.
BLOCK_S = 0.1
ENCODINGS = {"s16le": gateway_pb2.AUDIO_ENCODING_LINEAR16, "f32le": gateway_pb2.AUDIO_ENCODING_FLOAT32}
_SAMPLE_BYTES = {"s16le": 2, "f32le": 4}


class LiveError(Exception):
    """A problem with the command's input, shown as one line."""


def add_parser(commands: Any) -> None:
    live = commands.add_parser(
        "live",
        help="caption a media file at real-time pace, or raw PCM from stdin ('-'), as it plays",
        description=__doc__.split("\n\n")[0],
    )
    live.add_argument(
        "source",
        help="media file (decoded here with PyAV), '-' for raw PCM on stdin, or an http(s):// or rtsp:// URL "
        "(HLS when it ends in .m3u8) that the audio service opens itself, if SUBTITLER_AUDIO_LIVE_SOURCES allows",
    )
    live.add_argument("--fast", action="store_true", help="send as fast as the server takes it, not at real time")
    live.add_argument("-f", "--format", choices=("text", "jsonl"), default="text", help="(default: %(default)s)")
    live.add_argument("-o", "--output", help="also write the final cues to this SRT file as they come")
    live.add_argument("--no-interim", action="store_true", help="finals only")
    live.add_argument("--encoding", choices=sorted(ENCODINGS), default="s16le", help="stdin PCM (default: %(default)s)")
    live.add_argument("--rate", type=int, default=16_000, help="stdin sample rate (default: %(default)s)")
    live.add_argument("--channels", type=int, default=1, help="stdin channels (default: %(default)s)")
    live.add_argument("--language", help="BCP-47 language code (default: detected on the first utterance)")
    live.add_argument("--model", help="Whisper model (default: the ASR service's)")
    live.add_argument("--beam-size", type=int)
    live.add_argument("--max-utterance-s", type=float, help="longest utterance before it is made final (2-28 s)")
    live.add_argument("--min-silence-s", type=float, help="silence that ends an utterance (default 0.4)")


@dataclass
class _Clock:
    """The client's clock: seconds since the first audio was sent."""

    started: float | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mark(self) -> None:
        with self.lock:
            if self.started is None:
                self.started = time.monotonic()

    def now(self) -> float:
        with self.lock:
            return 0.0 if self.started is None else time.monotonic() - self.started


def _file_blocks(path: str, fast: bool) -> Iterator[bytes]:
    """16 kHz mono s16le blocks of a media file, paced at real time unless `fast`."""
    try:
        import av
    except ImportError:
        raise LiveError(
            "decoding a media file needs PyAV (pip install av); or pipe raw PCM: "
            "ffmpeg -i FILE -f s16le -ac 1 -ar 16000 - | subtitler live -"
        ) from None
    block_bytes = round(BLOCK_S * SAMPLE_RATE_HERTZ) * 2
    try:
        container = av.open(path)
    except (OSError, av.error.FFmpegError) as error:
        raise LiveError(f"cannot open {path}: {error}") from None
    with container:
        if not container.streams.audio:
            raise LiveError(f"{path} has no audio track")
        resampler = av.AudioResampler(format="s16", layout="mono", rate=SAMPLE_RATE_HERTZ)
        pending = b""
        sent_s = 0.0
        started = time.monotonic()

        def pace(data: bytes) -> Iterator[bytes]:
            nonlocal sent_s
            if not fast:
                delay = sent_s - (time.monotonic() - started)
                if delay > 0:
                    time.sleep(delay)
            sent_s += len(data) / 2 / SAMPLE_RATE_HERTZ
            yield data

        frames = (frame for packet in container.demux(container.streams.audio[0]) for frame in packet.decode())
        for frame in frames:
            for converted in resampler.resample(frame):
                pending += bytes(converted.planes[0])[: converted.samples * 2]
                while len(pending) >= block_bytes:
                    yield from pace(pending[:block_bytes])
                    pending = pending[block_bytes:]
        for converted in resampler.resample(None):
            pending += bytes(converted.planes[0])[: converted.samples * 2]
        if pending:
            yield from pace(pending)


def _stdin_blocks(stream: BinaryIO, options: argparse.Namespace) -> Iterator[bytes]:
    frame_bytes = _SAMPLE_BYTES[options.encoding] * options.channels
    block_bytes = max(1, round(BLOCK_S * options.rate)) * frame_bytes
    pending = b""
    while chunk := stream.read(block_bytes):
        pending += chunk
        whole = len(pending) - len(pending) % frame_bytes
        if whole:
            yield pending[:whole]
            pending = pending[whole:]


def is_url(source: str) -> bool:
    return source.split("://", 1)[0].lower() in ("http", "https", "rtsp") and "://" in source


def _config(options: argparse.Namespace) -> gateway_pb2.StreamingConfig:
    from_stdin = options.source == "-"
    config = gateway_pb2.StreamingConfig(
        transcription=asr_pb2.TranscriptionOptions(
            model=options.model or "", language_code=options.language or "", beam_size=options.beam_size or 0
        ),
        encoding=ENCODINGS[options.encoding] if from_stdin else gateway_pb2.AUDIO_ENCODING_LINEAR16,
        sample_rate_hertz=options.rate if from_stdin else SAMPLE_RATE_HERTZ,
        channel_count=options.channels if from_stdin else 1,
        interim_results=not options.no_interim,
        speech_detection=vad_pb2.LiveVadOptions(),
    )
    if is_url(options.source):
        config.source_uri = options.source
    if options.min_silence_s is not None:
        config.speech_detection.min_silence_duration.CopyFrom(seconds_to_duration(options.min_silence_s))
    if options.max_utterance_s is not None:
        config.max_utterance_duration.CopyFrom(seconds_to_duration(options.max_utterance_s))
    return config


class _Printer:
    """Shows responses: interim text redrawn in place on a terminal, finals
    with their times, or one JSON object a line."""

    def __init__(self, out: TextIO, fmt: str, clock: _Clock, srt: TextIO | None) -> None:
        self._out = out
        self._fmt = fmt
        self._clock = clock
        self._srt = srt
        self._cues = 0
        self._tty = out.isatty()
        self._drawn = False

    def show(self, response: gateway_pb2.StreamingTranscribeResponse) -> None:
        kind = response.WhichOneof("response")
        received_s = round(self._clock.now(), 3)
        if kind == "final":
            self._write_cue(response.final)
        if self._fmt == "jsonl":
            self._out.write(json.dumps(_as_json(response, received_s), ensure_ascii=False) + "\n")
            self._out.flush()
            return
        if kind == "interim" and self._tty:
            width = shutil.get_terminal_size((80, 24)).columns - 1
            text = "… " + response.interim.text
            if len(text) > width:
                text = "… " + text[-(width - 2) :].split(" ", 1)[-1]
            self._out.write("\r\x1b[K" + text)
            self._drawn = True
        elif kind == "final":
            result = response.final
            start_s = duration_to_seconds(result.start_offset)
            end_s = duration_to_seconds(result.end_offset)
            self._clear()
            self._out.write(f"[{timestamp(start_s, '.')[:-4]} → {timestamp(end_s, '.')[:-4]}] {result.text}\n")
        elif kind == "summary":
            self._clear()
            summary = response.summary
            print(
                f"{duration_to_seconds(summary.audio_duration):.1f} s of audio, {summary.utterance_count} utterances",
                file=sys.stderr,
            )
        self._out.flush()

    def _clear(self) -> None:
        if self._drawn:
            self._out.write("\r\x1b[K")
            self._drawn = False

    def _write_cue(self, result: gateway_pb2.StreamingResult) -> None:
        if self._srt is None:
            return
        self._cues += 1
        start_s = duration_to_seconds(result.start_offset)
        end_s = duration_to_seconds(result.end_offset)
        self._srt.write(f"{self._cues}\n{timestamp(start_s, ',')} --> {timestamp(end_s, ',')}\n{result.text}\n\n")
        self._srt.flush()


def _as_json(response: gateway_pb2.StreamingTranscribeResponse, received_s: float) -> dict[str, Any]:
    kind = response.WhichOneof("response")
    line: dict[str, Any] = {"type": kind, "received_s": received_s}
    if kind in ("interim", "final"):
        result = getattr(response, kind)
        line |= {
            "text": result.text,
            "start_s": round(duration_to_seconds(result.start_offset), 3),
            "end_s": round(duration_to_seconds(result.end_offset), 3),
            "utterance_index": result.utterance_index,
            "stability": round(result.stability, 3),
            "language": result.language_code,
        }
        if kind == "final":
            line["words"] = [
                {
                    "text": word.text,
                    "start_s": round(duration_to_seconds(word.start_offset), 3),
                    "end_s": round(duration_to_seconds(word.end_offset), 3),
                }
                for word in result.words
            ]
        else:
            line["stable_text"] = result.stable_text
    elif kind in ("speech_begin", "speech_end"):
        offset_s = round(duration_to_seconds(getattr(response, kind).offset), 3)
        line |= {"text": "", "start_s": offset_s, "end_s": offset_s}
    elif kind == "summary":
        audio_s = round(duration_to_seconds(response.summary.audio_duration), 3)
        line |= {
            "text": "",
            "start_s": 0.0,
            "end_s": audio_s,
            "audio_s": audio_s,
            "utterances": response.summary.utterance_count,
            "decodes": response.summary.decode_count,
        }
    return line


def run_live(stub: gateway_pb2_grpc.GatewayServiceStub, options: argparse.Namespace) -> int:
    if options.source != "-" and options.output == "-":
        raise LiveError("-o - is not supported: captions already go to stdout")
    config = _config(options)
    if is_url(options.source):
        source: Iterator[bytes] = iter(())
    elif options.source == "-":
        source = _stdin_blocks(sys.stdin.buffer, options)
    else:
        source = _file_blocks(options.source, options.fast)
    # The first block is read now: a file that cannot be read fails before anything is sent.
    first_block = next(source, None)
    blocks = itertools.chain([first_block] if first_block is not None else [], source)
    # Open the file first: a bad -o fails before anything is sent.
    srt = None
    if options.output:
        try:
            srt = open(options.output, "w", encoding="utf-8")  # noqa: SIM115 - closed below
        except OSError as error:
            raise LiveError(f"cannot write {options.output}: {error.strerror}") from None
    clock = _Clock()
    failure: list[BaseException] = []

    def requests() -> Iterator[gateway_pb2.StreamingTranscribeRequest]:
        yield gateway_pb2.StreamingTranscribeRequest(config=config)
        try:
            for block in blocks:
                clock.mark()
                yield gateway_pb2.StreamingTranscribeRequest(audio=block)
        except LiveError as error:
            failure.append(error)

    printer = _Printer(sys.stdout, options.format, clock, srt)
    try:
        for response in stub.StreamingTranscribe(requests()):
            printer.show(response)
    finally:
        if srt is not None:
            srt.close()
    if failure:
        raise failure[0]
    return 0

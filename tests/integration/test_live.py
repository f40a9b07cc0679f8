"""Live captions through the gateway's StreamingTranscribe: real services,
real speech, the embedded tiny.en."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import numpy as np
import pytest

from common.rpc.convert import duration_to_seconds
from gateway.cli.connection import upload_requests
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from subtitler.status.v1 import status_pb2, status_pb2_grpc
from tests.integration.suite_fixtures import RunningSuite, our_segments, start_suite
from tests.speech import SAMPLE_RATE_HERTZ, LongRecording, join_prompts, write_wav
from tests.wer import word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

MAX_STREAMS = 3
MAX_STREAM_DURATION_S = 40
IDLE_TIMEOUT_S = 3
PROMPTS = ["agent-loginok", "conf-getconfno", "vm-password", "agent-incorrect"]
BLOCK_S = 0.1


class HlsServer:
    """A local HTTP server with an HLS source under /allowed/ whose live
    playlist grows by one 2 s segment every 2 s, and files under /secret/
    the audio service may not fetch."""

    def __init__(self, root: Path) -> None:
        import functools
        import http.server

        self.root = root
        self.requests: list[str] = []
        self.first_request: float | None = None
        recording = join_prompts(PROMPTS[:2], gap_s=1.0)
        self.reference_text = recording.reference_text
        allowed = root / "allowed"
        allowed.mkdir(parents=True)
        (root / "secret").mkdir()
        self.segments = write_hls(allowed, recording.samples)
        (root / "secret" / "seg.ts").write_bytes((allowed / self.segments[0]).read_bytes())
        (allowed / "evil.m3u8").write_text(
            "#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.0,\n../secret/seg.ts\n#EXT-X-ENDLIST\n"
        )
        server = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                server.requests.append(self.path)

            def do_GET(self) -> None:
                if self.path == "/allowed/live.m3u8":
                    body = server.live_playlist().encode()
                    self.send_response(200)
                    self.send_header("Content-Type", "application/vnd.apple.mpegurl")
                    self.send_header("Content-Length", str(len(body)))
                    self.end_headers()
                    self.wfile.write(body)
                    server.requests.append(self.path)
                    return
                super().do_GET()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def live_playlist(self) -> str:
        """The segments out so far (one every 2 s from the first request), ENDLIST after the last."""
        if self.first_request is None:
            self.first_request = time.monotonic()
        out = 1 + int((time.monotonic() - self.first_request) / 2.0)
        lines = ["#EXTM3U", "#EXT-X-VERSION:3", "#EXT-X-TARGETDURATION:2", "#EXT-X-MEDIA-SEQUENCE:0"]
        for name in self.segments[:out]:
            lines += ["#EXTINF:2.0,", name]
        if out >= len(self.segments):
            lines.append("#EXT-X-ENDLIST")
        return "\n".join(lines) + "\n"

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


def write_hls(directory: Path, samples: np.ndarray) -> list[str]:
    """An HLS rendition of `samples` (AAC in MPEG-TS segments of 2 s) in `directory`; the segment names."""
    import av

    output = av.open(
        str(directory / "vod.m3u8"),
        "w",
        format="hls",
        options={"hls_time": "2", "hls_list_size": "0", "hls_segment_type": "mpegts"},
    )
    stream = output.add_stream("aac", rate=SAMPLE_RATE_HERTZ)
    stream.layout = "mono"  # type: ignore[union-attr]
    pcm = (np.clip(samples, -1, 1) * 32767).astype(np.int16)
    for start in range(0, pcm.size, 1024):
        frame = av.AudioFrame.from_ndarray(pcm[None, start : start + 1024], format="s16", layout="mono")
        frame.sample_rate = SAMPLE_RATE_HERTZ
        frame.pts = start
        for packet in stream.encode(frame):  # type: ignore[union-attr]
            output.mux(packet)
    for packet in stream.encode(None):  # type: ignore[union-attr]
        output.mux(packet)
    output.close()
    return sorted(path.name for path in directory.glob("*.ts"))


@pytest.fixture(scope="module")
def hls(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HlsServer]:
    server = HlsServer(tmp_path_factory.mktemp("hls"))
    yield server
    server.close()


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory, hls: HlsServer) -> Iterator[RunningSuite]:
    before = our_segments()
    yield from start_suite(
        tmp_path_factory.mktemp("live"),
        {
            "SUBTITLER_AUDIO_LIVE_SOURCES": f"{hls.base}/allowed/",
            "SUBTITLER_GATEWAY_MAX_STREAMS": str(MAX_STREAMS),
            "SUBTITLER_GATEWAY_MAX_STREAM_DURATION_S": str(MAX_STREAM_DURATION_S),
            "SUBTITLER_GATEWAY_STREAM_IDLE_TIMEOUT_S": str(IDLE_TIMEOUT_S),
        },
    )
    assert not our_segments() - before


@pytest.fixture(scope="module")
def speech() -> LongRecording:
    return join_prompts(PROMPTS, gap_s=1.0)


def config(**fields: object) -> gateway_pb2.StreamingConfig:
    values: dict[str, object] = {
        "encoding": gateway_pb2.AUDIO_ENCODING_LINEAR16,
        "sample_rate_hertz": SAMPLE_RATE_HERTZ,
        "channel_count": 1,
        "interim_results": True,
    }
    values.update(fields)
    return gateway_pb2.StreamingConfig(**values)  # type: ignore[arg-type]


def linear16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


@dataclass
class Received:
    responses: list[tuple[float, gateway_pb2.StreamingTranscribeResponse]] = field(default_factory=list)
    last_sent_s: float = 0.0
    error: grpc.RpcError | None = None

    def of(self, kind: str) -> list[gateway_pb2.StreamingResult]:
        return [getattr(r, kind) for _, r in self.responses if r.WhichOneof("response") == kind]

    @property
    def final_text(self) -> str:
        return " ".join(result.text for result in self.of("final"))


def run_stream(
    gateway: gateway_pb2_grpc.GatewayServiceStub,
    first: gateway_pb2.StreamingConfig,
    data: bytes,
    *,
    block_bytes: int = round(BLOCK_S * SAMPLE_RATE_HERTZ) * 2,
    speed: float | None = None,
) -> Received:
    """Streams `data` after the config, at `speed` times real time (None: as fast as taken)."""
    received = Received()
    started = time.monotonic()
    bytes_per_s = (
        first.sample_rate_hertz
        * (first.channel_count or 1)
        * (2 if first.encoding == gateway_pb2.AUDIO_ENCODING_LINEAR16 else 4)
    )

    def requests() -> Iterator[gateway_pb2.StreamingTranscribeRequest]:
        yield gateway_pb2.StreamingTranscribeRequest(config=first)
        for offset in range(0, len(data), block_bytes):
            if speed:
                delay = offset / bytes_per_s / speed - (time.monotonic() - started)
                if delay > 0:
                    time.sleep(delay)
            yield gateway_pb2.StreamingTranscribeRequest(audio=data[offset : offset + block_bytes])
        received.last_sent_s = time.monotonic() - started

    try:
        for response in gateway.StreamingTranscribe(requests(), timeout=300):
            received.responses.append((time.monotonic() - started, response))
    except grpc.RpcError as error:
        received.error = error
    return received


def file_text(live: RunningSuite, samples: np.ndarray, tmp_path: Path) -> str:
    path = write_wav(tmp_path / "same.wav", samples)
    job_config = gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(language_code="en"))
    job = live.gateway.UploadMedia(upload_requests(path, job_config), timeout=300)
    assert live.wait_finished(job.job_id).state == gateway_pb2.JOB_STATE_SUCCEEDED
    return live.gateway.GetResult(
        gateway_pb2.GetResultRequest(job_id=job.job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
    ).content


def test_a_stream_gets_interim_results_then_finals_as_good_as_file_mode(
    live: RunningSuite, speech: LongRecording, tmp_path: Path
) -> None:
    received = run_stream(live.gateway, config(), linear16(speech.samples), speed=2.0)
    assert received.error is None, received.error
    kinds = [response.WhichOneof("response") for _, response in received.responses]
    assert kinds[-1] == "summary"
    assert kinds.count("speech_begin") >= len(PROMPTS) - 1
    # Interim results come while the audio is still being sent.
    interim_times = [at for at, response in received.responses if response.WhichOneof("response") == "interim"]
    assert interim_times and interim_times[0] < received.last_sent_s
    assert all(0.0 <= result.stability <= 1.0 for result in received.of("interim"))
    finals = received.of("final")
    live_wer = word_error_rate(speech.reference_text, received.final_text)
    file_wer = word_error_rate(speech.reference_text, file_text(live, speech.samples, tmp_path))
    assert live_wer <= file_wer + 0.05, (received.final_text, live_wer, file_wer)
    # Offsets increase and stay inside the stream; words are timed inside their utterance.
    duration_s = speech.samples.size / SAMPLE_RATE_HERTZ
    ends = [duration_to_seconds(result.end_offset) for result in finals]
    assert ends == sorted(ends) and ends[-1] <= duration_s + 0.01
    for result in finals:
        start_s, end_s = duration_to_seconds(result.start_offset), duration_to_seconds(result.end_offset)
        assert 0 <= start_s < end_s
        assert result.words and result.stability == 1.0 and result.language_code == "en"
        assert " ".join(word.text for word in result.words) == result.text
        for word in result.words:
            assert start_s - 0.01 <= duration_to_seconds(word.start_offset) <= end_s + 0.01
    # Each final lies on the utterance it transcribes.
    for utterance, result in zip(speech.utterances, finals, strict=False):
        assert abs(duration_to_seconds(result.start_offset) - utterance.start_s) < 1.0
    summary = received.responses[-1][1].summary
    assert abs(duration_to_seconds(summary.audio_duration) - duration_s) < 0.01
    assert summary.utterance_count == len(finals)


def test_two_streams_at_once_in_other_formats_are_both_right(live: RunningSuite, speech: LongRecording) -> None:
    # The second stream: 44.1 kHz stereo float32, resampled and mixed down by the gateway.
    import soxr

    stereo = soxr.resample(speech.samples, SAMPLE_RATE_HERTZ, 44_100).astype(np.float32)
    stereo_bytes = np.stack([stereo, stereo * 0.5], axis=1).astype("<f4").tobytes()
    results: dict[str, Received] = {}

    def one(name: str, first: gateway_pb2.StreamingConfig, data: bytes, block: int) -> None:
        results[name] = run_stream(live.gateway, first, data, block_bytes=block)

    threads = [
        threading.Thread(target=one, args=("pcm16", config(interim_results=False), linear16(speech.samples), 3200)),
        threading.Thread(
            target=one,
            args=(
                "float-stereo",
                config(
                    encoding=gateway_pb2.AUDIO_ENCODING_FLOAT32,
                    sample_rate_hertz=44_100,
                    channel_count=2,
                    interim_results=False,
                ),
                stereo_bytes,
                4410 * 8,
            ),
        ),
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for name, received in results.items():
        assert received.error is None, (name, received.error)
        assert not received.of("interim"), "interim results were not asked for"
        wer = word_error_rate(speech.reference_text, received.final_text)
        assert wer <= 0.15, (name, received.final_text, wer)


def expect_refused(
    live: RunningSuite, requests: list[gateway_pb2.StreamingTranscribeRequest], code: grpc.StatusCode, text: str
) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        list(live.gateway.StreamingTranscribe(iter(requests), timeout=60))
    assert caught.value.code() == code, caught.value.details()
    assert text in caught.value.details()
    assert "Traceback" not in caught.value.details()


def test_bad_streams_are_refused_before_any_work(live: RunningSuite) -> None:
    audio = gateway_pb2.StreamingTranscribeRequest(audio=b"\x00\x00" * 1600)
    first = gateway_pb2.StreamingTranscribeRequest(config=config())
    invalid = grpc.StatusCode.INVALID_ARGUMENT
    expect_refused(live, [audio], invalid, "first message")
    expect_refused(live, [first, gateway_pb2.StreamingTranscribeRequest(config=config())], invalid, "comes once")
    expect_refused(live, [first, gateway_pb2.StreamingTranscribeRequest(audio=b"\x00" * 3)], invalid, "whole frames")
    expect_refused(
        live,
        [gateway_pb2.StreamingTranscribeRequest(config=config(encoding=gateway_pb2.AUDIO_ENCODING_UNSPECIFIED))],
        invalid,
        "encoding",
    )
    expect_refused(
        live, [gateway_pb2.StreamingTranscribeRequest(config=config(sample_rate_hertz=100))], invalid, "sample_rate"
    )
    expect_refused(
        live, [gateway_pb2.StreamingTranscribeRequest(config=config(channel_count=99))], invalid, "channel_count"
    )
    unknown_model = config(transcription=asr_pb2.TranscriptionOptions(model="no-such-model"))
    expect_refused(
        live, [gateway_pb2.StreamingTranscribeRequest(config=unknown_model)], grpc.StatusCode.NOT_FOUND, "no-such-model"
    )
    french = config(transcription=asr_pb2.TranscriptionOptions(language_code="fr"))
    expect_refused(
        live, [gateway_pb2.StreamingTranscribeRequest(config=french)], grpc.StatusCode.NOT_FOUND, "English-only"
    )
    klingon = config(transcription=asr_pb2.TranscriptionOptions(language_code="tlh"))
    expect_refused(live, [gateway_pb2.StreamingTranscribeRequest(config=klingon)], grpc.StatusCode.NOT_FOUND, "tlh")
    long_lead_in = config()
    long_lead_in.context_audio_duration.FromSeconds(25)
    expect_refused(
        live, [gateway_pb2.StreamingTranscribeRequest(config=long_lead_in)], invalid, "context_audio_duration"
    )


def silence_stream(stop: threading.Event, sent: threading.Event) -> Iterator[gateway_pb2.StreamingTranscribeRequest]:
    yield gateway_pb2.StreamingTranscribeRequest(config=config())
    while not stop.is_set():
        yield gateway_pb2.StreamingTranscribeRequest(audio=b"\x00\x00" * 1600)
        sent.set()
        time.sleep(BLOCK_S)


def live_figures(live: RunningSuite) -> tuple[int, int, int]:
    """(gateway streams, samples they hold, VAD streams)."""
    reply = status_pb2_grpc.StatusServiceStub(live.channel).GetStatus(
        status_pb2.GetStatusRequest(include_peers=True), timeout=10
    )
    vad = [peer for peer in reply.peers if "vad" in peer.service_name.lower()]
    return reply.live_streams, reply.live_buffered_samples, vad[0].live_streams if vad else -1


def wait_for_no_streams(live: RunningSuite, timeout_s: float = 10.0) -> None:
    """Waits until the gateway and the VAD service hold no live stream and no audio."""
    deadline = time.monotonic() + timeout_s
    while (figures := live_figures(live)) != (0, 0, 0):
        if time.monotonic() > deadline:
            raise AssertionError(f"live streams still held (gateway streams, samples, VAD streams): {figures}")
        time.sleep(0.1)


def test_streams_beyond_the_maximum_are_refused_with_a_retry_hint(live: RunningSuite) -> None:
    stop = threading.Event()
    calls = []
    try:
        for _ in range(MAX_STREAMS):
            sent = threading.Event()
            call = live.gateway.StreamingTranscribe(silence_stream(stop, sent), timeout=60)
            calls.append(call)
            assert sent.wait(10)
        deadline = time.monotonic() + 10
        while live_figures(live)[0] < MAX_STREAMS and time.monotonic() < deadline:
            time.sleep(0.1)
        with pytest.raises(grpc.RpcError) as caught:
            list(live.gateway.StreamingTranscribe(iter([gateway_pb2.StreamingTranscribeRequest(config=config())])))
        assert caught.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert "SUBTITLER_GATEWAY_MAX_STREAMS" in caught.value.details()
        assert dict(caught.value.trailing_metadata() or ()).get("retry-after-s")
    finally:
        stop.set()
        for call in calls:
            call.cancel()
    wait_for_no_streams(live)


def test_a_client_that_disconnects_leaves_nothing_behind(live: RunningSuite, speech: LongRecording) -> None:
    before = our_segments()
    data = linear16(speech.samples)
    got_interim = threading.Event()

    def requests() -> Iterator[gateway_pb2.StreamingTranscribeRequest]:
        yield gateway_pb2.StreamingTranscribeRequest(config=config())
        for offset in range(0, len(data), 3200):
            time.sleep(BLOCK_S / 4)
            yield gateway_pb2.StreamingTranscribeRequest(audio=data[offset : offset + 3200])
        got_interim.wait(60)

    call = live.gateway.StreamingTranscribe(requests(), timeout=120)
    for response in call:
        if response.WhichOneof("response") in ("interim", "final"):
            streams, buffered, vad_streams = live_figures(live)
            assert streams == 1 and buffered > 0 and vad_streams == 1
            break
    call.cancel()
    got_interim.set()
    wait_for_no_streams(live)
    # (Other suites' jobs may free segments meanwhile; none may appear.)
    assert not our_segments() - before
    # The gateway serves the next stream as before.
    received = run_stream(live.gateway, config(interim_results=False), data)
    assert received.error is None and received.of("final")


def test_a_stream_past_the_maximum_duration_ends_with_what_was_said(live: RunningSuite, speech: LongRecording) -> None:
    repeats = int(MAX_STREAM_DURATION_S / (speech.samples.size / SAMPLE_RATE_HERTZ)) + 2
    data = linear16(np.tile(speech.samples, repeats))
    received = run_stream(live.gateway, config(interim_results=False), data, block_bytes=32000)
    assert received.error is not None and received.error.code() == grpc.StatusCode.OUT_OF_RANGE
    assert "SUBTITLER_GATEWAY_MAX_STREAM_DURATION_S" in received.error.details()
    finals = received.of("final")
    assert len(finals) >= len(PROMPTS)
    assert duration_to_seconds(finals[-1].end_offset) <= MAX_STREAM_DURATION_S + 0.01


def test_a_silent_client_is_ended_after_the_idle_timeout(live: RunningSuite) -> None:
    def requests() -> Iterator[gateway_pb2.StreamingTranscribeRequest]:
        yield gateway_pb2.StreamingTranscribeRequest(config=config())
        yield gateway_pb2.StreamingTranscribeRequest(audio=b"\x00\x00" * 1600)
        time.sleep(IDLE_TIMEOUT_S + 3)

    started = time.monotonic()
    with pytest.raises(grpc.RpcError) as caught:
        list(live.gateway.StreamingTranscribe(requests(), timeout=60))
    assert caught.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "SUBTITLER_GATEWAY_STREAM_IDLE_TIMEOUT_S" in caught.value.details()
    assert time.monotonic() - started < IDLE_TIMEOUT_S + 3
    wait_for_no_streams(live)


def test_the_cli_streams_a_file_and_raw_pcm_from_stdin(
    live: RunningSuite,
    speech: LongRecording,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import io
    import json
    import sys

    from gateway.cli import main as cli

    target = live.suite.target("gateway")
    media = write_wav(tmp_path / "talk.wav", speech.samples)
    srt = tmp_path / "talk.srt"
    assert cli.main(["--gateway", target, "live", str(media), "--fast", "--format", "jsonl", "-o", str(srt)]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert lines[-1]["type"] == "summary"
    assert {"speech_begin", "speech_end", "final"} <= {line["type"] for line in lines}
    for line in lines:
        assert {"type", "text", "start_s", "end_s", "received_s"} <= set(line)
    finals = [line for line in lines if line["type"] == "final"]
    assert word_error_rate(speech.reference_text, " ".join(line["text"] for line in finals)) <= 0.15
    cues = srt.read_text().strip().split("\n\n")
    assert len(cues) == len(finals) and " --> " in cues[0]

    # Raw PCM on stdin, as `ffmpeg ... -f s16le - | subtitler live -` sends it (8 kHz here).
    import soxr

    pcm = (soxr.resample(speech.samples, SAMPLE_RATE_HERTZ, 8000) * 32767).astype("<i2").tobytes()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(io.BytesIO(pcm)))
    assert cli.main(["--gateway", target, "live", "-", "--rate", "8000", "--no-interim"]) == 0
    printed = capsys.readouterr().out
    assert "→" in printed and word_error_rate(speech.reference_text, printed) < 0.6

    # A file that cannot be read fails at once, with one line and no traceback.
    assert cli.main(["--gateway", target, "live", str(tmp_path / "missing.wav")]) == 1
    error = capsys.readouterr().err
    assert "missing.wav" in error and "Traceback" not in error


def test_a_live_hls_source_is_captioned_and_only_allowed_urls_are_fetched(live: RunningSuite, hls: HlsServer) -> None:
    source = config(source_uri=f"{hls.base}/allowed/live.m3u8", interim_results=False)
    started = time.monotonic()
    responses = list(live.gateway.StreamingTranscribe(iter([gateway_pb2.StreamingTranscribeRequest(config=source)])))
    # The playlist was live: its segments came out over time, and were followed.
    assert time.monotonic() - started >= 2.0 * (len(hls.segments) - 2)
    assert hls.requests.count("/allowed/live.m3u8") >= 2
    finals = [response.final.text for response in responses if response.WhichOneof("response") == "final"]
    assert word_error_rate(hls.reference_text, " ".join(finals)) <= 0.15, finals
    assert responses[-1].WhichOneof("response") == "summary"

    denied = grpc.StatusCode.PERMISSION_DENIED
    for url in (f"{hls.base}/secret/seg.ts", f"{hls.base}/allowed/evil.m3u8", "http://169.254.169.254/latest"):
        expect_refused(
            live,
            [gateway_pb2.StreamingTranscribeRequest(config=config(source_uri=url))],
            denied,
            "live source",
        )
    assert not [path for path in hls.requests if path.startswith("/secret/")]
    wait_for_no_streams(live)

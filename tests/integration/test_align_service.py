"""The align service as a real gRPC server on a free port, called through the
real stub, with the real default model (tiny.en), pocketsphinx, and real
speech in shared memory, as the audio service would hand it over."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from common.rpc.convert import segment_from_proto, segment_to_proto
from common.rpc.server import ServerConfig
from common.speech.whisper_models import ModelLoadOptions, WhisperModelConfig
from common.transcript import Segment
from services.align.config import AlignConfig
from services.align.server import create
from services.align.servicer import SERVICE_NAME
from subtitler.align.v1 import align_pb2, align_pb2_grpc
from subtitler.common.v1 import common_pb2
from subtitler.status.v1 import status_pb2, status_pb2_grpc
from tests.integration.inprocess import ServerLoop, audio_in_shared_memory, wait_serving
from tests.speech import join_prompts, speech_available

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not speech_available(), reason="asterisk-core-sounds-en-wav is not installed"),
]

PROMPTS = ("agent-pass", "conf-getconfno")
GAP_S = 0.5


@dataclass
class Speech:
    handle: common_pb2.AudioHandle
    # One segment per prompt, as a recogniser would give them.
    segments: list[Segment]


@pytest.fixture(scope="module")
def channel() -> Iterator[grpc.Channel]:
    """A channel to the align service, once it serves."""
    config = AlignConfig(
        server=ServerConfig(port=0),
        audio_target="",
        whisper=WhisperModelConfig(load_options=ModelLoadOptions(device="cpu", cpu_threads=2)),
        max_concurrent_alignments=1,
    )
    servers = ServerLoop("align-server")
    try:
        running = servers.start(create(config))
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            wait_serving(health_pb2_grpc.HealthStub(channel), SERVICE_NAME)
            yield channel
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> align_pb2_grpc.AlignServiceStub:
    return align_pb2_grpc.AlignServiceStub(channel)


@pytest.fixture(scope="module")
def speech() -> Iterator[Speech]:
    """Two prompts with silence around them, in shared memory."""
    recording = join_prompts(PROMPTS, GAP_S)
    with audio_in_shared_memory(recording.samples) as handle:
        yield Speech(handle, [Segment(text, start_s, end_s) for start_s, end_s, text in recording.utterances])


def align(
    stub: align_pb2_grpc.AlignServiceStub, speech: Speech, segments: list[Segment], **fields: object
) -> align_pb2.AlignWordsResponse:
    request = align_pb2.AlignWordsRequest(
        audio=speech.handle,
        segments=[segment_to_proto(segment) for segment in segments],
        **fields,  # type: ignore[arg-type]
    )
    response: align_pb2.AlignWordsResponse = stub.AlignWords(request, timeout=60)
    return response


@pytest.mark.parametrize(
    ("language_code", "method", "used"),
    [
        ("en-US", align_pb2.ALIGN_METHOD_UNSPECIFIED, align_pb2.ALIGN_METHOD_PHONETIC),
        ("en", align_pb2.ALIGN_METHOD_CROSS_ATTENTION, align_pb2.ALIGN_METHOD_CROSS_ATTENTION),
        ("de", align_pb2.ALIGN_METHOD_PHONETIC, align_pb2.ALIGN_METHOD_CROSS_ATTENTION),
    ],
    ids=["english-phonetic", "cross-attention", "phonetic-falls-back"],
)
def test_every_word_gets_its_time(
    stub: align_pb2_grpc.AlignServiceStub, speech: Speech, language_code: str, method: int, used: int
) -> None:
    with_empty = [*speech.segments, Segment("", 0.0, 0.2, avg_logprob=-0.5, chunk_index=3)]
    response = align(stub, speech, with_empty, language_code=language_code, method=method)
    assert response.method == used
    *aligned, empty = [segment_from_proto(message) for message in response.segments]
    assert empty == with_empty[-1]  # no text: returned unchanged
    for given, segment in zip(speech.segments, aligned, strict=True):
        assert [word.text for word in segment.words] == given.text.split()
        assert given.start_s <= segment.start_s < segment.end_s <= given.end_s + 1e-6
        starts = [word.start_s for word in segment.words]
        assert starts == sorted(starts)
        assert all(given.start_s <= w.start_s <= w.end_s <= given.end_s + 1e-6 for w in segment.words)


@pytest.mark.parametrize(
    ("segment", "fields", "code"),
    [
        (Segment("hello", 3.0, 2.0), {}, grpc.StatusCode.INVALID_ARGUMENT),
        (Segment("hello", 2.0, 500.0), {}, grpc.StatusCode.INVALID_ARGUMENT),
        (Segment("hello", 1.0, 2.0), {"method": 7}, grpc.StatusCode.INVALID_ARGUMENT),
        (Segment("hello", 1.0, 2.0), {"model": "no-such-model", "language_code": "fr"}, grpc.StatusCode.NOT_FOUND),
    ],
    ids=["reversed", "outside-audio", "unknown-method", "unknown-model"],
)
def test_bad_requests_get_their_status(
    stub: align_pb2_grpc.AlignServiceStub,
    speech: Speech,
    segment: Segment,
    fields: dict[str, object],
    code: grpc.StatusCode,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        align(stub, speech, [segment], **fields)
    assert raised.value.code() == code, raised.value.details()


def test_audio_outside_shared_memory_without_an_audio_service_is_unavailable(
    stub: align_pb2_grpc.AlignServiceStub, speech: Speech
) -> None:
    gone = common_pb2.AudioHandle()
    gone.CopyFrom(speech.handle)
    gone.segment_name = "subtitler-no-such-segment"
    with pytest.raises(grpc.RpcError) as raised:
        stub.AlignWords(
            align_pb2.AlignWordsRequest(audio=gone, segments=[segment_to_proto(speech.segments[0])]), timeout=60
        )
    # Not mapped here and no audio service configured to read it from.
    assert raised.value.code() == grpc.StatusCode.UNAVAILABLE, raised.value.details()


def test_status_reports_what_its_slots_get_through(
    channel: grpc.Channel, stub: align_pb2_grpc.AlignServiceStub, speech: Speech
) -> None:
    status = status_pb2_grpc.StatusServiceStub(channel)
    # Timed at start: 30 s of speech aligned with each method (0.2 s and 0.5 s on one core).
    measured = status.GetStatus(status_pb2.GetStatusRequest(), timeout=10).measured_capacity
    assert measured.audio_seconds_per_second > 2.0 and measured.source.startswith("warm-up")
    align(stub, speech, speech.segments, language_code="en")
    measured = status.GetStatus(status_pb2.GetStatusRequest(), timeout=10).measured_capacity
    assert measured.audio_seconds_per_second > 2.0 and measured.source == "warm-up and work"

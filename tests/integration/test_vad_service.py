"""The VAD service as a real gRPC server on a free port, called through the
real stub, with real speech decoded by the real audio service (in the same
process, on its own free port) into shared memory."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2_grpc

from common.audio.shm import attach_samples, host_id
from common.limits import SAMPLE_RATE_HERTZ
from common.rpc.convert import duration_to_seconds, seconds_to_duration, time_range_from_proto
from common.rpc.server import ServerConfig
from services.audio.config import AudioConfig
from services.audio.server import create as create_audio
from services.vad.config import VadConfig
from services.vad.engine import SpeechDetector, VadOptions, bundled_model_path
from services.vad.server import create as create_vad
from services.vad.servicer import SERVICE_NAME, vad_options_from_proto
from subtitler.audio.v1 import audio_pb2, audio_pb2_grpc
from subtitler.common.v1 import common_pb2
from subtitler.status.v1 import status_pb2, status_pb2_grpc
from subtitler.vad.v1 import vad_pb2, vad_pb2_grpc
from tests.integration.inprocess import ServerLoop, wait_serving
from tests.speech import build_long_recording, speech_available, write_wav

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not speech_available(), reason="asterisk-core-sounds-en-wav is not installed"),
]

BLOCK_DURATION_S = 5.0


@dataclass
class Services:
    audio: audio_pb2_grpc.AudioServiceStub
    vad: vad_pb2_grpc.VadServiceStub
    health: health_pb2_grpc.HealthStub
    audio_target: str
    media_root: Path
    vad_target: str = ""


@pytest.fixture(scope="module")
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Services]:
    media_root = tmp_path_factory.mktemp("media")
    servers = ServerLoop()
    try:
        audio = servers.start(create_audio(AudioConfig(server=ServerConfig(port=0), media_root=media_root)))
        audio_target = f"127.0.0.1:{audio.port}"
        vad_config = VadConfig(
            server=ServerConfig(port=0),
            audio_target=audio_target,
            max_concurrent_detections=1,
            block_duration_s=BLOCK_DURATION_S,
        )
        vad = servers.start(create_vad(vad_config))
        with (
            grpc.insecure_channel(audio_target) as audio_channel,
            grpc.insecure_channel(f"127.0.0.1:{vad.port}") as vad_channel,
        ):
            yield Services(
                audio_pb2_grpc.AudioServiceStub(audio_channel),
                vad_pb2_grpc.VadServiceStub(vad_channel),
                health_pb2_grpc.HealthStub(vad_channel),
                audio_target,
                media_root,
                f"127.0.0.1:{vad.port}",
            )
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def decoded(services: Services) -> Iterator[common_pb2.AudioHandle]:
    """About 40 s of prompts, written as a WAV and decoded by the audio service."""
    recording = build_long_recording(40.0, gap_s=1.5)
    path = write_wav(services.media_root / "speech.wav", recording.samples)
    response = services.audio.DecodeFile(audio_pb2.DecodeFileRequest(path=path.name), timeout=60)
    yield response.audio
    services.audio.ReleaseAudio(audio_pb2.ReleaseAudioRequest(audio_id=response.audio.audio_id), timeout=10)


def wait_vad_serving(health: health_pb2_grpc.HealthStub) -> None:
    wait_serving(health, SERVICE_NAME, timeout_s=60.0)


def detect(services: Services, handle: common_pb2.AudioHandle, **options: object) -> list[vad_pb2.DetectSpeechResponse]:
    wait_vad_serving(services.health)
    request = vad_pb2.DetectSpeechRequest(audio=handle, options=vad_pb2.VadOptions(**options))  # type: ignore[arg-type]
    return list(services.vad.DetectSpeech(request, timeout=60))


def chunk_times(responses: list[vad_pb2.DetectSpeechResponse]) -> list[tuple[tuple[float, float], ...]]:
    """Each chunk as its range followed by its speech ranges, in seconds."""
    times = []
    for response in responses:
        if response.HasField("chunk"):
            ranges = [time_range_from_proto(response.chunk), *map(time_range_from_proto, response.speech_ranges)]
            times.append(tuple((r.start_s, r.end_s) for r in ranges))
    return times


def test_streams_the_chunks_the_engine_finds(services: Services, decoded: common_pb2.AudioHandle) -> None:
    responses = detect(services, decoded, max_chunk_duration=seconds_to_duration(10.0))
    chunks = [response for response in responses if response.HasField("chunk")]
    assert [chunk.chunk_index for chunk in chunks] == list(range(len(chunks)))
    assert len(chunks) >= 4
    analysed_s = [duration_to_seconds(response.analysed_duration) for response in responses]
    assert analysed_s == sorted(analysed_s)
    assert analysed_s[-1] == pytest.approx(duration_to_seconds(decoded.duration), abs=1e-6)
    # Streamed: the first chunk comes before the whole audio was analysed,
    # and progress-only messages in between.
    assert duration_to_seconds(chunks[0].analysed_duration) < analysed_s[-1] / 2
    assert any(not response.HasField("chunk") for response in responses)
    for chunk in chunks:
        chunk_range = time_range_from_proto(chunk.chunk)
        assert 0 < chunk_range.duration_s <= 10.0
        speech = [time_range_from_proto(message) for message in chunk.speech_ranges]
        assert (speech[0].start_s, speech[-1].end_s) == pytest.approx((chunk_range.start_s, chunk_range.end_s))

    # The same chunks as the engine on the very samples in shared memory.
    detector = SpeechDetector(bundled_model_path())
    with attach_samples(decoded.segment_name, decoded.sample_count) as samples:
        expected = detector.speech_chunks(samples, VadOptions(max_chunk_duration_s=10.0))
    expected_times = [tuple((r.start_s, r.end_s) for r in (chunk.range, *chunk.speech_ranges)) for chunk in expected]
    assert chunk_times(responses) == [
        tuple(pytest.approx(pair, abs=1e-6) for pair in chunk) for chunk in expected_times
    ]


def test_reads_over_grpc_when_the_audio_is_on_another_host(services: Services, decoded: common_pb2.AudioHandle) -> None:
    remote = common_pb2.AudioHandle()
    remote.CopyFrom(decoded)
    remote.host_id = "another-host"
    assert chunk_times(detect(services, remote)) == chunk_times(detect(services, decoded))


def test_silence_and_empty_audio_give_progress_only(services: Services) -> None:
    for sample_count in (0, 8 * SAMPLE_RATE_HERTZ):
        path = write_wav(services.media_root / f"silence-{sample_count}.wav", np.zeros(sample_count, np.float32))
        handle = services.audio.DecodeFile(audio_pb2.DecodeFileRequest(path=path.name), timeout=60).audio
        try:
            responses = detect(services, handle)
        finally:
            services.audio.ReleaseAudio(audio_pb2.ReleaseAudioRequest(audio_id=handle.audio_id), timeout=10)
        assert all(not response.HasField("chunk") for response in responses)
        assert duration_to_seconds(responses[-1].analysed_duration) == sample_count / SAMPLE_RATE_HERTZ


@pytest.mark.parametrize(
    "options",
    [
        {"threshold": 1.5},
        {"threshold": -0.2},
        {"max_chunk_duration": seconds_to_duration(31.0)},
        {"speech_pad": seconds_to_duration(-1.0)},
        {"speech_pad": seconds_to_duration(2.0), "max_chunk_duration": seconds_to_duration(3.0)},
        {"chunking": 7},
    ],
    ids=["threshold-over-1", "negative-threshold", "chunk-over-30s", "negative-pad", "pad-fills-chunk", "chunking"],
)
def test_bad_options_are_invalid_argument(
    services: Services, decoded: common_pb2.AudioHandle, options: dict[str, object]
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        detect(services, decoded, **options)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()


def test_bad_handles_get_their_status(services: Services) -> None:
    unknown = common_pb2.AudioHandle(
        audio_id="never-decoded",
        segment_name="subtitler-never-decoded",
        sample_count=SAMPLE_RATE_HERTZ,
        sample_rate_hertz=SAMPLE_RATE_HERTZ,
        host_id=host_id(),
        audio_service_target=services.audio_target,
    )
    with pytest.raises(grpc.RpcError) as raised:
        detect(services, unknown)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND, raised.value.details()

    wrong_rate = common_pb2.AudioHandle()
    wrong_rate.CopyFrom(unknown)
    wrong_rate.sample_rate_hertz = 8000
    with pytest.raises(grpc.RpcError) as raised:
        detect(services, wrong_rate)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()

    with pytest.raises(grpc.RpcError) as raised:
        detect(services, common_pb2.AudioHandle())
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()


def test_health_turns_serving_once_the_model_is_loaded(services: Services) -> None:
    wait_vad_serving(services.health)


def test_status_reports_what_its_slots_get_through(services: Services, decoded: common_pb2.AudioHandle) -> None:
    wait_vad_serving(services.health)
    with grpc.insecure_channel(services.vad_target) as channel:
        status = status_pb2_grpc.StatusServiceStub(channel)
        # Timed at start: a minute of audio on every slot at once (0.1 s on one core).
        measured = status.GetStatus(status_pb2.GetStatusRequest(), timeout=10).measured_capacity
        assert measured.audio_seconds_per_second > 20.0 and measured.source.startswith("warm-up")
        assert measured.live_decode_s == 0.0 and measured.live_streams == 0
        detect(services, decoded)
        measured = status.GetStatus(status_pb2.GetStatusRequest(), timeout=10).measured_capacity
    assert measured.audio_seconds_per_second > 20.0 and measured.source == "warm-up and work"


def test_zero_option_fields_take_the_documented_defaults() -> None:
    assert vad_options_from_proto(vad_pb2.VadOptions()) == VadOptions()
    options = vad_options_from_proto(
        vad_pb2.VadOptions(
            threshold=0.3, speech_pad=seconds_to_duration(0.1), max_chunk_duration=seconds_to_duration(8)
        )
    )
    assert options == VadOptions(threshold=0.3, speech_pad_s=0.1, max_chunk_duration_s=8.0)


def test_a_cancelled_detection_frees_its_slot(services: Services, decoded: common_pb2.AudioHandle) -> None:
    # The fixture allows one detection at a time: a slot kept by the cancelled
    # call would make the next one wait until its deadline.
    wait_vad_serving(services.health)
    running = services.vad.DetectSpeech(vad_pb2.DetectSpeechRequest(audio=decoded), timeout=60)
    next(running)
    running.cancel()
    responses = list(services.vad.DetectSpeech(vad_pb2.DetectSpeechRequest(audio=decoded), timeout=10))
    assert any(response.HasField("chunk") for response in responses)


@pytest.mark.parametrize(
    ("change", "code"),
    [
        ({"audio_service_target": "127.0.0.1:9"}, grpc.StatusCode.PERMISSION_DENIED),
        ({"segment_name": "../../etc/passwd"}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"sample_count": 10}, grpc.StatusCode.PERMISSION_DENIED),
    ],
    ids=["foreign-audio-service", "segment-outside-the-suite", "tampered"],
)
def test_forged_handles_are_refused(
    services: Services, decoded: common_pb2.AudioHandle, change: dict[str, object], code: grpc.StatusCode
) -> None:
    forged = common_pb2.AudioHandle()
    forged.CopyFrom(decoded)
    for name, value in change.items():
        setattr(forged, name, value)
    with pytest.raises(grpc.RpcError) as raised:
        list(services.vad.DetectSpeech(vad_pb2.DetectSpeechRequest(audio=forged), timeout=30))
    assert raised.value.code() == code, raised.value.details()


@pytest.mark.parametrize("version", ["v1", "v1alpha"])
def test_server_reflection_answers_as_v1_and_v1alpha(services: Services, version: str) -> None:
    from grpc_reflection.v1alpha import reflection_pb2

    with grpc.insecure_channel(services.vad_target) as channel:
        call = channel.stream_stream(
            f"/grpc.reflection.{version}.ServerReflection/ServerReflectionInfo",
            request_serializer=reflection_pb2.ServerReflectionRequest.SerializeToString,
            response_deserializer=reflection_pb2.ServerReflectionResponse.FromString,
        )
        requests = [
            reflection_pb2.ServerReflectionRequest(list_services=""),
            reflection_pb2.ServerReflectionRequest(file_containing_symbol="subtitler.vad.v1.VadService"),
        ]
        listed, described = list(call(iter(requests), timeout=10))
    names = {service.name for service in listed.list_services_response.service}
    assert {"subtitler.vad.v1.VadService", "grpc.health.v1.Health"} <= names
    assert described.file_descriptor_response.file_descriptor_proto

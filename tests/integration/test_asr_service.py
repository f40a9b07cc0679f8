"""The ASR service as a real gRPC server on a free port, called through the
real stub, with the real default model (tiny.en) and real speech in shared
memory, as the audio service would hand it over."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2_grpc

from common.rpc.convert import duration_to_seconds, time_range_to_proto
from common.rpc.server import RETRY_AFTER_KEY, ServerConfig
from common.speech.whisper_models import ModelLoadOptions, WhisperModelConfig
from common.transcript import TimeRange
from services.asr.config import AsrConfig
from services.asr.server import create
from services.asr.servicer import SERVICE_NAME
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc
from subtitler.common.v1 import common_pb2
from subtitler.status.v1 import status_pb2, status_pb2_grpc
from tests.integration.inprocess import ServerLoop, audio_in_shared_memory, wait_serving
from tests.speech import join_prompts, speech_available
from tests.wer import word_error_rate

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not speech_available(), reason="asterisk-core-sounds-en-wav is not installed"),
]

PROMPTS = ("conf-onlyperson", "conf-getconfno", "conf-full")
GAP_S = 0.5


@dataclass
class Speech:
    handle: common_pb2.AudioHandle
    chunks: list[TimeRange]
    texts: list[str]


@pytest.fixture(scope="module")
def channel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[grpc.Channel]:
    config = AsrConfig(
        server=ServerConfig(port=0),
        audio_target="",
        whisper=WhisperModelConfig(load_options=ModelLoadOptions(cache_dir=tmp_path_factory.mktemp("models"))),
        max_concurrent_transcriptions=1,
        max_queued_transcriptions=0,
        retry_after_s=2.0,
    )
    servers = ServerLoop("asr-server")
    try:
        running = servers.start(create(config))
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield channel
    finally:
        servers.stop()


@pytest.fixture(scope="module")
def stub(channel: grpc.Channel) -> asr_pb2_grpc.AsrServiceStub:
    wait_serving(health_pb2_grpc.HealthStub(channel), SERVICE_NAME)
    return asr_pb2_grpc.AsrServiceStub(channel)


@pytest.fixture(scope="module")
def speech() -> Iterator[Speech]:
    """Three prompts with silence around them, in shared memory."""
    recording = join_prompts(PROMPTS, GAP_S)
    with audio_in_shared_memory(recording.samples) as handle:
        yield Speech(
            handle,
            [TimeRange(start_s, end_s) for start_s, end_s, _ in recording.utterances],
            [text for _, _, text in recording.utterances],
        )


def transcribe_request(speech: Speech, chunks: list[TimeRange], **options: object) -> asr_pb2.TranscribeRequest:
    return asr_pb2.TranscribeRequest(
        audio=speech.handle,
        chunks=[time_range_to_proto(chunk) for chunk in chunks],
        first_chunk_index=4,
        options=asr_pb2.TranscriptionOptions(**options),  # type: ignore[arg-type]
    )


def test_transcribe_streams_one_response_per_chunk(stub: asr_pb2_grpc.AsrServiceStub, speech: Speech) -> None:
    responses = list(stub.Transcribe(transcribe_request(speech, speech.chunks, batch_size=2), timeout=120))
    assert [response.chunk_index for response in responses] == [4, 5, 6]
    for response, chunk, reference in zip(responses, speech.chunks, speech.texts, strict=True):
        assert (response.model, response.language_code, response.language_probability) == (
            "embedded:tiny.en",
            "en",
            1.0,
        )
        assert duration_to_seconds(response.chunk_duration) == pytest.approx(chunk.duration_s, abs=1e-3)
        text = " ".join(segment.text for segment in response.segments)
        assert word_error_rate(reference, text) <= 0.2, (reference, text)
        assert all(segment.chunk_index == response.chunk_index for segment in response.segments)
        assert duration_to_seconds(response.segments[0].start_offset) == pytest.approx(chunk.start_s, abs=1e-3)


def test_a_packed_chunk_through_grpc_and_its_bad_parts(stub: asr_pb2_grpc.AsrServiceStub, speech: Speech) -> None:
    """The first and last prompts as one chunk, the one between cut out."""
    first, _, last = speech.chunks
    request = transcribe_request(speech, [TimeRange(first.start_s, last.end_s)])
    request.chunk_speech.append(asr_pb2.ChunkParts(ranges=[time_range_to_proto(first), time_range_to_proto(last)]))
    (response,) = stub.Transcribe(request, timeout=120)
    text = " ".join(segment.text for segment in response.segments)
    assert word_error_rate(f"{speech.texts[0]} {speech.texts[2]}", text) <= 0.2, text
    assert duration_to_seconds(response.segments[-1].end_offset) > last.start_s
    del request.chunk_speech[0].ranges[:]
    request.chunk_speech[0].ranges.extend([time_range_to_proto(last), time_range_to_proto(first)])
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.Transcribe(request, timeout=60))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "not inside it after the part before it" in str(raised.value.details())


def test_detect_language_with_the_english_only_default(stub: asr_pb2_grpc.AsrServiceStub, speech: Speech) -> None:
    response = stub.DetectLanguage(asr_pb2.DetectLanguageRequest(audio=speech.handle), timeout=60)
    assert (response.language_code, response.probability) == ("en", 1.0)
    assert [candidate.language_code for candidate in response.candidates] == ["en"]


@pytest.mark.parametrize(
    ("chunk", "options", "code"),
    [
        (TimeRange(0.0, 1.0), {"model": "embedded:nope"}, grpc.StatusCode.NOT_FOUND),
        (TimeRange(0.0, 1.0), {"language_code": "xx"}, grpc.StatusCode.NOT_FOUND),
        (TimeRange(0.0, 1.0), {"beam_size": -1}, grpc.StatusCode.INVALID_ARGUMENT),
        (TimeRange(1.0, 0.5), {}, grpc.StatusCode.INVALID_ARGUMENT),
        (TimeRange(5.0, 500.0), {}, grpc.StatusCode.INVALID_ARGUMENT),
    ],
    ids=["unknown-model", "unknown-language", "bad-beam", "reversed-range", "outside-audio"],
)
def test_bad_requests_get_their_status(
    stub: asr_pb2_grpc.AsrServiceStub,
    speech: Speech,
    chunk: TimeRange,
    options: dict[str, object],
    code: grpc.StatusCode,
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.Transcribe(transcribe_request(speech, [chunk], **options), timeout=60))
    assert raised.value.code() == code, raised.value.details()


def test_chunk_contexts_reach_the_model_and_a_wrong_count_is_refused(
    stub: asr_pb2_grpc.AsrServiceStub, speech: Speech
) -> None:
    request = transcribe_request(speech, speech.chunks, batch_size=3)
    request.chunk_contexts.extend(["one two", "three four", "five six"])
    texts = [
        " ".join(segment.text for segment in response.segments) for response in stub.Transcribe(request, timeout=120)
    ]
    # The model follows the previous text's style: no capitals, no punctuation.
    assert len(texts) == 3 and all(text == text.lower() and not text.endswith(".") for text in texts), texts
    del request.chunk_contexts[1:]
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.Transcribe(request, timeout=60))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "one per chunk" in (raised.value.details() or "")


def test_a_chunk_prefix_is_continued_and_left_out(stub: asr_pb2_grpc.AsrServiceStub, speech: Speech) -> None:
    """A chunk spanning two prompts whose first prompt's text is its prefix
    answers the second prompt alone, its words timed in the second's audio;
    a wrong count of prefixes is refused."""
    first, second = speech.chunks[0], speech.chunks[1]
    request = transcribe_request(speech, [TimeRange(first.start_s, second.end_s)], word_timestamps=True)
    request.chunk_prefixes.append(speech.texts[0])
    (response,) = stub.Transcribe(request, timeout=120)
    text = " ".join(segment.text for segment in response.segments)
    assert word_error_rate(speech.texts[1], text) <= 0.2, (speech.texts[1], text)
    words = [word for segment in response.segments for word in segment.words]
    assert duration_to_seconds(words[0].start_offset) >= second.start_s - 0.3, words[0]
    request.chunk_prefixes.append("one too many")
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.Transcribe(request, timeout=60))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "one per chunk" in (raised.value.details() or "")


def test_busy_service_refuses_with_retry_delay(stub: asr_pb2_grpc.AsrServiceStub, speech: Speech) -> None:
    running = stub.Transcribe(transcribe_request(speech, speech.chunks, batch_size=1), timeout=120)
    try:
        next(running)  # the first call now holds the only slot
        with pytest.raises(grpc.RpcError) as raised:
            list(stub.Transcribe(transcribe_request(speech, speech.chunks[:1]), timeout=60))
        assert raised.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert dict(raised.value.trailing_metadata() or ())[RETRY_AFTER_KEY] == "2"
    finally:
        running.cancel()
    # Once the cancelled call has let go of its slot, the service takes requests again.
    deadline = time.monotonic() + 60
    while True:
        try:
            (response,) = stub.Transcribe(transcribe_request(speech, speech.chunks[:1]), timeout=60)
            break
        except grpc.RpcError as error:
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and time.monotonic() < deadline
            time.sleep(0.2)
    assert response.chunk_index == 4


def test_status_reports_workers_batch_and_the_machine(channel: grpc.Channel, stub: asr_pb2_grpc.AsrServiceStub) -> None:
    status = status_pb2_grpc.StatusServiceStub(channel).GetStatus(status_pb2.GetStatusRequest(), timeout=10)
    assert status.service_name == "asr"
    assert status.preferred_batch_size >= 1
    assert "cpus.usable" in status.hardware and "memory.total" in status.hardware
    settings = {setting.name: setting for setting in status.settings}
    # In model workers, whatever the number of requests it holds at once (max_concurrent_transcriptions).
    assert status.capacity == int(settings["SUBTITLER_ASR_NUM_WORKERS"].value)
    assert settings["SUBTITLER_ASR_MAX_CONCURRENT_TRANSCRIPTIONS"].source == "environment"
    assert settings["SUBTITLER_ASR_NUM_WORKERS"].source.startswith("auto: ")
    assert "embedded:tiny.en" in status.loaded_models
    # What its workers get through on this machine, timed at start (or since, with work).
    measured = status.measured_capacity
    assert measured.audio_seconds_per_second > 1.0 and 0.0 < measured.live_decode_s < 10.0
    assert measured.source.startswith("warm-up")


def test_models_are_listed_loaded_and_unloaded(stub: asr_pb2_grpc.AsrServiceStub) -> None:
    listed = {model.name: model for model in stub.ListModels(asr_pb2.ListModelsRequest(), timeout=10).models}
    default = listed["embedded:tiny.en"]
    assert default.state == asr_pb2.MODEL_STATE_READY and default.pinned and default.memory_bytes > 0
    with pytest.raises(grpc.RpcError) as raised:
        stub.UnloadModel(asr_pb2.UnloadModelRequest(model="embedded:tiny.en"), timeout=10)
    assert raised.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    # A failed load is reported with its reason and leaves the service serving.
    with pytest.raises(grpc.RpcError) as raised:
        stub.LoadModel(asr_pb2.LoadModelRequest(model="embedded:nope"), timeout=60)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    listed = {model.name: model for model in stub.ListModels(asr_pb2.ListModelsRequest(), timeout=10).models}
    assert listed["embedded:nope"].state == asr_pb2.MODEL_STATE_FAILED
    assert "unknown embedded model" in listed["embedded:nope"].reason
    loaded = stub.LoadModel(asr_pb2.LoadModelRequest(model="embedded:base"), timeout=300)
    assert loaded.state == asr_pb2.MODEL_STATE_READY and not loaded.pinned
    unloaded = stub.UnloadModel(asr_pb2.UnloadModelRequest(model="embedded:base"), timeout=10)
    assert unloaded.state == asr_pb2.MODEL_STATE_UNLOADED and unloaded.memory_bytes == 0


def test_one_request_carries_a_bounded_number_of_chunks(stub: asr_pb2_grpc.AsrServiceStub, speech: Speech) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        list(stub.Transcribe(transcribe_request(speech, [TimeRange(0.0, 1.0)] * 33), timeout=60))
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "at most 32: send them in several" in (raised.value.details() or "")


def test_requests_that_arrive_together_are_decoded_in_one_batch(
    speech: Speech, stub: asr_pb2_grpc.AsrServiceStub, caplog: pytest.LogCaptureFixture
) -> None:
    """One-chunk requests (short jobs) sent at once to one model worker share
    batches, and each gets the text it gets alone."""

    def text_of(transcribe: Any, chunk: TimeRange) -> str:
        (response,) = transcribe(transcribe_request(speech, [chunk]), timeout=60)
        return " ".join(segment.text for segment in response.segments)

    chunks = speech.chunks * 2
    alone = [text_of(stub.Transcribe, chunk) for chunk in chunks]
    config = AsrConfig(
        server=ServerConfig(port=0),
        audio_target="",
        whisper=WhisperModelConfig(load_options=ModelLoadOptions(num_workers=1, cpu_threads=2)),
        batch_size=4,
    )
    servers = ServerLoop("asr-batching")
    try:
        running = servers.start(create(config))
        with grpc.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            wait_serving(health_pb2_grpc.HealthStub(channel), SERVICE_NAME)
            shared = asr_pb2_grpc.AsrServiceStub(channel)
            caplog.set_level(logging.INFO, logger="services.asr.batcher")
            with ThreadPoolExecutor(len(chunks)) as senders:
                together = list(senders.map(lambda chunk: text_of(shared.Transcribe, chunk), chunks))
    finally:
        servers.stop()
    assert together == alone
    assert any("requests in one batch" in record.getMessage() for record in caplog.records)

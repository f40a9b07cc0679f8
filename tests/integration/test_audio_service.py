"""The audio service through real stubs: an in-process server on a free port,
every container/codec written with PyAV, shared memory checked directly."""

from __future__ import annotations

import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.audio.access import AUDIO_SERVICE_NAME, AudioReader, audio_ref_from_proto
from common.audio.shm import SEGMENT_NAME_PREFIX, SHM_DIR, attach_samples, host_id, segment_exists
from common.errors import MAX_MESSAGE_BYTES, InvalidInputError, NotFoundError, PermissionDeniedError
from common.rpc.convert import duration_to_seconds, time_range_to_proto, timestamp_to_epoch
from common.rpc.server import RunningServer, ServerConfig
from common.transcript import TimeRange
from services.audio.config import AudioConfig
from services.audio.decode import decode_file
from services.audio.server import create
from subtitler.audio.v1 import audio_pb2, audio_pb2_grpc
from subtitler.common.v1 import common_pb2
from tests.integration.inprocess import ServerLoop
from tests.media import MEDIA_SPECS, TONE_DURATION_S, write_media
from tests.speech import asterisk_recording, write_video_only, write_wav

pytestmark = pytest.mark.integration

MAX_DURATION_S = 20.0
MAX_UPLOAD_BYTES = 1024 * 1024
LEASE_S = 600.0
CHUNK_BYTES = 32 * 1024


class Fixture:
    """The running service (on `servers`, at `target`), a stub, its media and
    every segment it handed out."""

    def __init__(self, servers: ServerLoop, running: RunningServer, media_root: Path, spool_dir: Path) -> None:
        self.servers = servers
        self.target = f"localhost:{running.port}"
        self.media_root = media_root
        self.spool_dir = spool_dir
        self.channel = grpc.insecure_channel(self.target)
        self.stub = audio_pb2_grpc.AudioServiceStub(self.channel)
        self.segment_names: set[str] = set()

    def decode(self, path: str, lease_s: float | None = None) -> audio_pb2.DecodeResponse:
        request = audio_pb2.DecodeFileRequest(path=path)
        if lease_s is not None:
            request.lease_duration.CopyFrom(Duration(seconds=int(lease_s), nanos=int(lease_s % 1 * 1e9)))
        response: audio_pb2.DecodeResponse = self.stub.DecodeFile(request, timeout=60)
        self.segment_names.add(response.audio.segment_name)
        return response

    def read(self, audio_id: str, time_range: TimeRange | None = None) -> tuple[np.ndarray, list[int]]:
        request = audio_pb2.ReadSamplesRequest(audio_id=audio_id)
        if time_range is not None:
            request.range.CopyFrom(time_range_to_proto(time_range))
        responses = list(self.stub.ReadSamples(request, timeout=60))
        joined = b"".join(response.samples_f32le for response in responses)
        return np.frombuffer(joined, dtype="<f4"), [response.offset_samples for response in responses]

    def release(self, audio_id: str) -> bool:
        released: bool = self.stub.ReleaseAudio(audio_pb2.ReleaseAudioRequest(audio_id=audio_id)).released
        return released


@pytest.fixture(scope="module")
def audio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fixture]:
    root = tmp_path_factory.mktemp("audio-service")
    media_root = root / "media"
    spool_dir = root / "spool"
    media_root.mkdir()
    for spec in MEDIA_SPECS:
        write_media(media_root / spec.file_name, spec)
    write_video_only(media_root / "video-only.mp4")
    write_media(media_root / "long-surround.wav", MEDIA_SPECS[-1], duration_s=MAX_DURATION_S - 1)
    (media_root / "corrupt.mp4").write_bytes(np.random.default_rng(3).bytes(50_000))
    whole = (media_root / "video.mp4").read_bytes()
    (media_root / "truncated.mp4").write_bytes(whole[: len(whole) // 2])
    write_wav(media_root / "too-long.wav", np.zeros(int(16_000 * (MAX_DURATION_S + 1)), dtype=np.float32), 16_000)
    (root / "secret.wav").write_bytes((media_root / "audio.wav").read_bytes())
    (media_root / "escape.wav").symlink_to(root / "secret.wav")
    # Symbolic links that lead back to themselves.
    (media_root / "loop-a.wav").symlink_to("loop-b.wav")
    (media_root / "loop-b.wav").symlink_to("loop-a.wav")
    (media_root / "loop-dir").symlink_to("loop-dir")
    # Playlists that would read outside the media root, or themselves for ever.
    for name, segment in (
        ("file.m3u8", f"file:{root / 'secret.wav'}"),
        ("up.m3u8", "../secret.wav"),
        ("self.m3u8", "self.m3u8"),
    ):
        (media_root / name).write_text(f"#EXTM3U\n#EXT-X-TARGETDURATION:1\n#EXTINF:1.0,\n{segment}\n")
    recording = asterisk_recording("tt-monkeys")
    if recording is not None:
        shutil.copy(recording, media_root / "asterisk.wav")
    config = AudioConfig(
        server=ServerConfig(port=0, grace_period_s=1.0),
        media_root=media_root,
        max_duration_s=MAX_DURATION_S,
        max_upload_bytes=MAX_UPLOAD_BYTES,
        spool_dir=spool_dir,
        lease_s=LEASE_S,
        lease_sweep_interval_s=0.05,
        decode_workers=2,
    )
    servers = ServerLoop("audio-service-loop")
    fixture = Fixture(servers, servers.start(create(config)), media_root, spool_dir)
    try:
        yield fixture
    finally:
        # Audio still held when the service stops is released by the stop.
        fixture.decode("audio.flac")
        fixture.channel.close()
        servers.stop(grace_s=1.0)
        left = sorted(name for name in fixture.segment_names if segment_exists(name))
        assert not left, f"segments left in /dev/shm after the service stopped: {left}"
        assert list(spool_dir.iterdir()) == []


def assert_status(error: pytest.ExceptionInfo[grpc.RpcError], code: grpc.StatusCode, text: str) -> None:
    assert error.value.code() == code, error.value.details()
    assert text in (error.value.details() or ""), error.value.details()


def test_health_is_serving(audio: Fixture) -> None:
    health = health_pb2_grpc.HealthStub(audio.channel)
    for service in ("", AUDIO_SERVICE_NAME):
        response = health.Check(health_pb2.HealthCheckRequest(service=service), timeout=10)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


@pytest.mark.parametrize("file_name", [spec.file_name for spec in MEDIA_SPECS])
def test_decode_file_every_format(audio: Fixture, file_name: str) -> None:
    spec = next(spec for spec in MEDIA_SPECS if spec.file_name == file_name)
    before_s = time.time()
    response = audio.decode(file_name)
    handle = response.audio
    assert handle.audio_id and handle.segment_name.startswith(SEGMENT_NAME_PREFIX)
    assert handle.sample_rate_hertz == 16_000
    assert handle.host_id == host_id()
    assert handle.audio_service_target == audio.target
    assert duration_to_seconds(handle.duration) == pytest.approx(handle.sample_count / 16_000, abs=1e-6)
    assert handle.sample_count == pytest.approx(TONE_DURATION_S * 16_000, abs=0.05 * 16_000)
    assert before_s + LEASE_S - 1 <= timestamp_to_epoch(handle.lease_expire_time) <= time.time() + LEASE_S + 1
    assert response.source.source_sample_rate_hertz == spec.sample_rate_hertz
    assert response.source.source_channel_count == spec.channel_count
    assert response.source.size_bytes == (audio.media_root / file_name).stat().st_size
    assert response.source.codec and response.source.container_format
    assert duration_to_seconds(response.decode_duration) > 0
    expected = decode_file(audio.media_root / file_name).samples()
    with attach_samples(handle.segment_name, handle.sample_count) as samples:
        assert np.array_equal(samples, expected)
    assert audio.release(handle.audio_id) is True
    assert not segment_exists(handle.segment_name)
    assert audio.release(handle.audio_id) is False


def test_absolute_path_under_the_root(audio: Fixture) -> None:
    response = audio.decode(str(audio.media_root / "audio.wav"))
    assert response.audio.sample_count == 24_000
    audio.release(response.audio.audio_id)


def test_telephone_recording_and_read_samples_equal_shared_memory(audio: Fixture) -> None:
    if not (audio.media_root / "asterisk.wav").exists():
        pytest.skip("asterisk-core-sounds-en-wav is not installed (make test-data)")
    response = audio.decode("asterisk.wav")
    handle = response.audio
    assert response.source.source_sample_rate_hertz == 8000
    assert response.source.codec == "pcm_s16le"
    with attach_samples(handle.segment_name, handle.sample_count) as mapped:
        shared = np.array(mapped)
    whole, offsets = audio.read(handle.audio_id)
    assert np.array_equal(whole, shared)
    assert offsets == list(range(0, handle.sample_count, 16_000))
    part, offsets = audio.read(handle.audio_id, TimeRange(1.25, 3.5))
    assert np.array_equal(part, shared[20_000:56_000])
    assert offsets == [20_000, 36_000, 52_000]
    beyond, _ = audio.read(handle.audio_id, TimeRange(1000.0, 2000.0))
    assert beyond.size == 0
    audio.release(handle.audio_id)


def test_error_statuses(audio: Fixture) -> None:
    cases = [
        ("video-only.mp4", grpc.StatusCode.INVALID_ARGUMENT, "no audio stream"),
        ("corrupt.mp4", grpc.StatusCode.INVALID_ARGUMENT, "not a readable media file"),
        ("truncated.mp4", grpc.StatusCode.INVALID_ARGUMENT, "truncated.mp4 is not a readable media file"),
        ("missing.wav", grpc.StatusCode.NOT_FOUND, "no such file"),
        ("../secret.wav", grpc.StatusCode.PERMISSION_DENIED, "outside the media root"),
        ("/etc/hostname", grpc.StatusCode.PERMISSION_DENIED, "outside the media root"),
        ("escape.wav", grpc.StatusCode.PERMISSION_DENIED, "outside the media root"),
        ("~no-such-user/audio.wav", grpc.StatusCode.PERMISSION_DENIED, "outside the media root"),
        ("loop-a.wav", grpc.StatusCode.INVALID_ARGUMENT, "loop-a.wav cannot be opened: Too many levels of symbolic"),
        ("loop-dir/audio.wav", grpc.StatusCode.INVALID_ARGUMENT, "Too many levels of symbolic links"),
        ("n" * 300 + ".wav", grpc.StatusCode.INVALID_ARGUMENT, "cannot be opened: File name too long"),
        ("audio.wav/inside.wav", grpc.StatusCode.NOT_FOUND, "a part of its path is a file, not a folder"),
        ("too-long.wav", grpc.StatusCode.RESOURCE_EXHAUSTED, "maximum duration of audio this service decodes is 20 s"),
        ("", grpc.StatusCode.INVALID_ARGUMENT, "path is empty"),
        ("file.m3u8", grpc.StatusCode.INVALID_ARGUMENT, "a playlist or a list of other files is not"),
        ("up.m3u8", grpc.StatusCode.INVALID_ARGUMENT, "a playlist or a list of other files is not"),
        ("self.m3u8", grpc.StatusCode.INVALID_ARGUMENT, "a playlist or a list of other files is not"),
    ]
    for path, code, text in cases:
        with pytest.raises(grpc.RpcError) as error:
            audio.decode(path)
        assert_status(error, code, text)


def test_bad_lease_is_invalid(audio: Fixture) -> None:
    with pytest.raises(grpc.RpcError) as error:
        audio.decode("audio.wav", lease_s=10 * 24 * 3600)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "over the maximum")


def upload_messages(path: Path, *, size_bytes: int | None = None) -> Iterator[audio_pb2.UploadAudioRequest]:
    data = path.read_bytes()
    yield audio_pb2.UploadAudioRequest(
        metadata=audio_pb2.UploadMetadata(
            file_name=f"client/dir/{path.name}", size_bytes=len(data) if size_bytes is None else size_bytes
        )
    )
    for start in range(0, len(data), CHUNK_BYTES):
        yield audio_pb2.UploadAudioRequest(chunk=data[start : start + CHUNK_BYTES])


@pytest.mark.parametrize("file_name", ["video.mp4", "audio.mp3", "audio.ogg", "telephone.wav"])
def test_upload_decodes_like_decode_file(audio: Fixture, file_name: str) -> None:
    response = audio.stub.UploadAudio(upload_messages(audio.media_root / file_name), timeout=60)
    audio.segment_names.add(response.audio.segment_name)
    expected = decode_file(audio.media_root / file_name).samples()
    samples, _ = audio.read(response.audio.audio_id)
    assert np.array_equal(samples, expected)
    assert response.source.size_bytes == (audio.media_root / file_name).stat().st_size
    assert list(audio.spool_dir.iterdir()) == []
    audio.release(response.audio.audio_id)


def test_upload_errors_leave_nothing_behind(audio: Fixture) -> None:
    before = set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*"))
    big = audio.media_root / "surround.wav"  # 864 KB, under the limit
    oversize = audio.media_root.parent / "oversize.wav"
    oversize.write_bytes(big.read_bytes() * 2)
    # Announced over the limit: refused before any byte is stored.
    with pytest.raises(grpc.RpcError) as error:
        audio.stub.UploadAudio(upload_messages(oversize), timeout=60)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, f"maximum of {MAX_UPLOAD_BYTES} bytes")
    # Size not announced: refused when the bytes pass the limit.
    with pytest.raises(grpc.RpcError) as error:
        audio.stub.UploadAudio(upload_messages(oversize, size_bytes=0), timeout=60)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, f"maximum of {MAX_UPLOAD_BYTES} bytes")
    # No metadata first.
    with pytest.raises(grpc.RpcError) as error:
        audio.stub.UploadAudio(iter([audio_pb2.UploadAudioRequest(chunk=b"RIFF")]), timeout=60)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "first message")
    # Not media: the client's file name is in the message.
    not_media = audio.media_root.parent / "notes.txt.mp3"
    not_media.write_bytes(np.random.default_rng(4).bytes(10_000))
    with pytest.raises(grpc.RpcError) as error:
        audio.stub.UploadAudio(upload_messages(not_media), timeout=60)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "notes.txt.mp3 is not a readable media file")
    assert list(audio.spool_dir.iterdir()) == []
    assert set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*")) <= before


@pytest.mark.parametrize("file_name", ["a\x00b.wav", "two\nlines.wav", "colour\x1b[31m.wav", "del\x7f.wav"])
def test_upload_file_name_with_a_control_character_is_invalid(audio: Fixture, file_name: str) -> None:
    messages = [
        audio_pb2.UploadAudioRequest(metadata=audio_pb2.UploadMetadata(file_name=file_name)),
        audio_pb2.UploadAudioRequest(chunk=(audio.media_root / "audio.wav").read_bytes()),
    ]
    with pytest.raises(grpc.RpcError) as error:
        audio.stub.UploadAudio(iter(messages), timeout=60)
    assert_status(error, grpc.StatusCode.INVALID_ARGUMENT, "the file name has a control character")
    assert list(audio.spool_dir.iterdir()) == []


def test_messages_echo_a_huge_request_value_in_part(audio: Fixture) -> None:
    """A message that names what the request held stays under the bound
    (the client refuses a status message over 8 KiB), its advice kept."""
    huge = "x" * 1_000_000
    calls = [
        (lambda: audio.read(huge), grpc.StatusCode.NOT_FOUND, "decode the media again"),
        (
            lambda: audio.stub.GetAudio(audio_pb2.GetAudioRequest(audio_id=huge), timeout=60),
            grpc.StatusCode.NOT_FOUND,
            "decode the media again",
        ),
        (lambda: audio.decode(huge), grpc.StatusCode.INVALID_ARGUMENT, "File name too long"),
        (lambda: audio.decode("../" + huge), grpc.StatusCode.PERMISSION_DENIED, "or upload the file instead"),
    ]
    for call, code, advice in calls:
        with pytest.raises(grpc.RpcError) as error:
            call()
        assert_status(error, code, advice)
        details = error.value.details() or ""
        assert len(details.encode()) <= MAX_MESSAGE_BYTES and " … " in details


def test_upload_cut_off_midway_leaves_nothing_behind(audio: Fixture) -> None:
    before = set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*"))
    resume = threading.Event()

    def stalled_upload() -> Iterator[audio_pb2.UploadAudioRequest]:
        messages = upload_messages(audio.media_root / "surround.wav")
        for _ in range(4):  # metadata and three chunks, then the client stalls
            yield next(messages)
        resume.wait(30)

    call = audio.stub.UploadAudio.future(stalled_upload(), timeout=60)
    deadline = time.monotonic() + 20
    while not list(audio.spool_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert len(list(audio.spool_dir.iterdir())) == 1, "the upload never reached the spool"
    call.cancel()
    resume.set()
    deadline = time.monotonic() + 20
    while list(audio.spool_dir.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert list(audio.spool_dir.iterdir()) == []
    assert set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*")) <= before


def test_decode_abandoned_by_its_caller_leaves_nothing_behind(audio: Fixture) -> None:
    """A caller whose deadline passes mid-decode gets no handle; the decode
    stops or what it stored is released."""
    before = set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*"))
    for timeout_s in (0.005, 0.02, 0.05):
        with pytest.raises(grpc.RpcError) as error:
            audio.stub.DecodeFile(audio_pb2.DecodeFileRequest(path="long-surround.wav"), timeout=timeout_s)
        assert error.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    deadline = time.monotonic() + 10
    while set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*")) - before and time.monotonic() < deadline:
        time.sleep(0.05)
    assert set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*")) <= before


def test_read_samples_of_unknown_or_released_audio(audio: Fixture) -> None:
    with pytest.raises(grpc.RpcError) as error:
        audio.read("no-such-audio")
    assert_status(error, grpc.StatusCode.NOT_FOUND, "unknown or was released")
    handle = audio.decode("audio.wav").audio
    audio.release(handle.audio_id)
    with pytest.raises(grpc.RpcError) as error:
        audio.read(handle.audio_id)
    assert_status(error, grpc.StatusCode.NOT_FOUND, "unknown or was released")


def test_renew_lease(audio: Fixture) -> None:
    handle = audio.decode("audio.wav", lease_s=30).audio
    first_expiry_s = timestamp_to_epoch(handle.lease_expire_time)
    renewed = audio.stub.RenewLease(
        audio_pb2.RenewLeaseRequest(audio_id=handle.audio_id, lease_duration=Duration(seconds=120))
    )
    assert timestamp_to_epoch(renewed.lease_expire_time) == pytest.approx(first_expiry_s + 90, abs=5)
    default = audio.stub.RenewLease(audio_pb2.RenewLeaseRequest(audio_id=handle.audio_id))
    assert timestamp_to_epoch(default.lease_expire_time) == pytest.approx(time.time() + LEASE_S, abs=5)
    audio.release(handle.audio_id)
    with pytest.raises(grpc.RpcError) as error:
        audio.stub.RenewLease(audio_pb2.RenewLeaseRequest(audio_id=handle.audio_id))
    assert_status(error, grpc.StatusCode.NOT_FOUND, "unknown or was released")


def test_lease_expiry_releases_the_segment(audio: Fixture) -> None:
    handle = audio.decode("audio.wav", lease_s=0.3).audio
    assert segment_exists(handle.segment_name)
    deadline = time.monotonic() + 10
    while segment_exists(handle.segment_name) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not segment_exists(handle.segment_name)
    with pytest.raises(grpc.RpcError) as error:
        audio.read(handle.audio_id)
    assert_status(error, grpc.StatusCode.NOT_FOUND, "unknown or was released")
    assert audio.release(handle.audio_id) is False


def test_audio_reader_maps_locally_and_reads_remotely(audio: Fixture) -> None:
    handle = audio.decode("audio.flac").audio
    time_range = TimeRange(0.25, 1.0)

    async def read_all() -> tuple[np.ndarray, bool, np.ndarray, np.ndarray, np.ndarray]:
        local = AudioReader(audio.target)
        remote = AudioReader(audio.target, local_host_id="another-host")
        try:
            async with local.open(handle, time_range) as mapped:
                zero_copy = not mapped.flags.writeable and not mapped.flags.owndata
                mapped_copy = np.array(mapped)
            async with remote.open(handle, time_range) as streamed:
                streamed_copy = np.array(streamed)
            whole_local = await local.read(audio_ref_from_proto(handle))
            whole_remote = await remote.read(handle)
            return mapped_copy, zero_copy, streamed_copy, whole_local, whole_remote
        finally:
            await local.close()
            await remote.close()

    mapped, zero_copy, streamed, whole_local, whole_remote = audio.servers.call(read_all())
    assert zero_copy
    assert mapped.size == 12_000
    assert np.array_equal(mapped, streamed)
    assert np.array_equal(whole_local, whole_remote)
    assert np.array_equal(whole_local[4000:16_000], mapped)
    audio.release(handle.audio_id)


def test_audio_reader_reports_released_audio_as_not_found(audio: Fixture) -> None:
    handle = audio.decode("audio.wav").audio
    audio.release(handle.audio_id)

    async def read_released() -> None:
        reader = AudioReader(audio.target)
        try:
            await reader.read(handle)
        finally:
            await reader.close()

    with pytest.raises(NotFoundError, match="decode the media again"):
        audio.servers.call(read_released())


def test_audio_reader_reads_only_from_the_configured_audio_service(audio: Fixture) -> None:
    handle = common_pb2.AudioHandle()
    handle.CopyFrom(audio.decode("audio.wav").audio)
    handle.host_id = "elsewhere"  # not mapped here: read over gRPC
    opened: list[str] = []

    def channel_factory(target: str) -> grpc.aio.Channel:
        opened.append(target)
        return grpc.aio.insecure_channel(target)

    async def read(configured: str) -> np.ndarray:
        reader = AudioReader(configured, channel_factory=channel_factory)
        try:
            return await reader.read(handle)
        finally:
            await reader.close()

    # A handle naming an address the consumer is not configured with opens no connection to it.
    with pytest.raises(PermissionDeniedError, match="not the one this service is configured to read from"):
        audio.servers.call(read("localhost:1"))
    assert opened == []
    samples = audio.servers.call(read(audio.target))
    assert samples.size == handle.sample_count
    assert opened == [audio.target]
    audio.release(handle.audio_id)


def test_forged_handles_map_no_memory(audio: Fixture) -> None:
    issued = audio.decode("audio.wav").audio
    other = audio.decode("audio.wav").audio  # another job's audio, in its own segment

    async def read(handle: common_pb2.AudioHandle) -> np.ndarray:
        reader = AudioReader(audio.target)
        try:
            return await reader.read(handle)
        finally:
            await reader.close()

    forged = common_pb2.AudioHandle()
    forged.CopyFrom(issued)
    forged.segment_name = other.segment_name  # a real segment, not this audio's
    with pytest.raises(PermissionDeniedError, match="not the one the audio service issued"):
        audio.servers.call(read(forged))
    forged.segment_name = "../../etc/passwd"
    with pytest.raises(InvalidInputError, match="never issues"):
        audio.servers.call(read(forged))
    forged.segment_name = issued.segment_name
    forged.audio_id = "made-up"
    with pytest.raises(NotFoundError):
        audio.servers.call(read(forged))
    assert audio.servers.call(read(issued)).size == issued.sample_count
    audio.release(issued.audio_id)
    audio.release(other.audio_id)

"""The audio service's engine parts without gRPC: the segment store and its
leases, upload spooling, the media-root check, the configuration."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest

from common.audio.access import sample_range
from common.audio.shm import SEGMENT_NAME_PREFIX, SHM_DIR, SharedSamples, attach_samples, segment_exists
from common.config import ConfigError
from common.errors import InvalidInputError, NotFoundError, PermissionDeniedError, ResourceExhaustedError
from common.transcript import TimeRange
from services.audio.config import AudioConfig
from services.audio.decode import DecodeOptions
from services.audio.engine import AudioEngine, resolve_media_path
from services.audio.segments import LeaseOptions, SegmentStore
from services.audio.spool import SpoolFile
from tests.speech import write_wav


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def make_store(clock: FakeClock | None = None, **lease: float) -> SegmentStore:
    clock = clock or FakeClock()
    return SegmentStore(
        host_id="host-a",
        audio_service_target="localhost:1",
        options=LeaseOptions(**lease),
        monotonic=clock,
        wall_clock=lambda: 1_700_000_000.0 + clock.now_s,
    )


def test_store_allocates_exact_length_and_describes() -> None:
    store = make_store()
    chunks = [np.full(100, 0.25, dtype=np.float32), np.full(50, -0.5, dtype=np.float32)]
    ref = store.store(chunks, 16_000)
    try:
        assert ref.sample_count == 150 and ref.sample_rate_hertz == 16_000
        assert ref.host_id == "host-a" and ref.audio_service_target == "localhost:1"
        assert ref.lease_expire_time == datetime.fromtimestamp(1_700_000_000.0 + 1000.0 + 3600.0, tz=UTC)
        with attach_samples(ref.segment_name, ref.sample_count) as samples:
            assert np.array_equal(samples, np.concatenate(chunks))
        assert store.describe(ref.audio_id) == ref
        assert np.frombuffer(store.read_bytes(ref.audio_id, 99, 101), dtype="<f4").tolist() == [0.25, -0.5]
        assert len(store) == 1
    finally:
        assert store.close() == 1
    assert not segment_exists(ref.segment_name)


def test_zero_samples_are_stored() -> None:
    store = make_store()
    ref = store.store([], 16_000)
    assert ref.sample_count == 0 and ref.duration_s == 0.0
    assert store.read_bytes(ref.audio_id, 0, 0) == b""
    assert store.release(ref.audio_id)
    assert not segment_exists(ref.segment_name)


def test_release_is_idempotent_and_frees_the_segment() -> None:
    store = make_store()
    ref = store.store([np.zeros(10, dtype=np.float32)], 16_000)
    assert store.release(ref.audio_id) is True
    assert store.release(ref.audio_id) is False
    assert store.release("never-existed") is False
    assert not segment_exists(ref.segment_name)
    with pytest.raises(NotFoundError, match="unknown or was released"):
        store.describe(ref.audio_id)
    with pytest.raises(NotFoundError):
        store.renew(ref.audio_id)


def test_leases_expire_and_renew() -> None:
    clock = FakeClock()
    store = make_store(clock, default_lease_s=10.0)
    short = store.store([np.zeros(10, dtype=np.float32)], 16_000, lease_s=5.0)
    default = store.store([np.zeros(10, dtype=np.float32)], 16_000)
    clock.now_s += 4.0
    assert store.release_expired() == []
    expire_time = store.renew(short.audio_id, 20.0)
    assert expire_time == datetime.fromtimestamp(1_700_000_000.0 + clock.now_s + 20.0, tz=UTC)
    clock.now_s += 6.0  # default: 10 s reached; short: renewed to 24 s
    assert store.release_expired() == [default.audio_id]
    assert not segment_exists(default.segment_name)
    assert segment_exists(short.segment_name)
    clock.now_s += 14.0
    assert store.release_expired() == [short.audio_id]
    assert len(store) == 0


@pytest.mark.parametrize("lease_s", [0.0, -1.0, float("nan"), float("inf"), 100_000.0])
def test_bad_leases_are_refused(lease_s: float) -> None:
    store = make_store(max_lease_s=3600.0)
    with pytest.raises(InvalidInputError, match="lease duration"):
        store.store([np.zeros(1, dtype=np.float32)], 16_000, lease_s=lease_s)
    assert len(store) == 0


def test_background_sweeper_releases_expired_audio() -> None:
    store = SegmentStore(
        host_id="h",
        audio_service_target="t",
        options=LeaseOptions(default_lease_s=0.2, sweep_interval_s=0.05),
    )
    store.start()
    try:
        ref = store.store([np.zeros(10, dtype=np.float32)], 16_000)
        deadline = time.monotonic() + 5
        while segment_exists(ref.segment_name) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not segment_exists(ref.segment_name)
        assert len(store) == 0
    finally:
        store.close()


def test_store_is_thread_safe() -> None:
    store = make_store()
    refs = []
    lock = threading.Lock()

    def work() -> None:
        for _ in range(20):
            ref = store.store([np.ones(100, dtype=np.float32)], 16_000)
            store.read_bytes(ref.audio_id, 0, 100)
            with lock:
                refs.append(ref)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(store) == 80 == len({ref.audio_id for ref in refs})
    assert store.close() == 80
    assert not any(segment_exists(ref.segment_name) for ref in refs)


def test_closed_store_refuses_and_leaves_nothing() -> None:
    store = make_store()
    store.close()
    with pytest.raises(RuntimeError, match="closed"):
        store.store([np.zeros(10, dtype=np.float32)], 16_000)


def test_sample_range_rounds_and_clamps() -> None:
    assert sample_range(None, 16_000, 100) == (0, 100)
    assert sample_range(TimeRange(0.0, 0.001), 16_000, 100) == (0, 16)
    assert sample_range(TimeRange(-1.0, 100.0), 16_000, 100) == (0, 100)
    assert sample_range(TimeRange(5.0, 6.0), 16_000, 100) == (100, 100)
    with pytest.raises(InvalidInputError, match="before it starts"):
        sample_range(TimeRange(2.0, 1.0), 16_000, 100)


def test_media_root_check(tmp_path: Path) -> None:
    root = tmp_path / "media"
    (root / "sub").mkdir(parents=True)
    (root / "sub" / "a.wav").write_bytes(b"")
    outside = tmp_path / "secret.wav"
    outside.write_bytes(b"")
    (root / "link-out.wav").symlink_to(outside)
    (root / "link-in.wav").symlink_to(root / "sub" / "a.wav")
    assert resolve_media_path(root, "sub/a.wav") == (root / "sub" / "a.wav").resolve()
    assert resolve_media_path(root, str(root / "sub" / "a.wav")) == (root / "sub" / "a.wav").resolve()
    assert resolve_media_path(root, "link-in.wav") == (root / "sub" / "a.wav").resolve()
    assert resolve_media_path(root, "missing.wav") == (root / "missing.wav").resolve()
    for bad in ("../secret.wav", str(outside), "link-out.wav", "sub/../../secret.wav", "/etc/passwd", "/nope"):
        with pytest.raises(PermissionDeniedError, match="outside the media root"):
            resolve_media_path(root, bad)
    with pytest.raises(InvalidInputError):
        resolve_media_path(root, "")


def test_spool_file_is_deleted_on_success_error_and_limit(tmp_path: Path) -> None:
    with SpoolFile(tmp_path, "talk.MP4", max_upload_bytes=10) as spool:
        assert spool.path.parent == tmp_path and spool.path.suffix == ".MP4"
        spool.write(b"12345")
        assert spool.finish().read_bytes() == b"12345"
    assert not spool.path.exists()
    with pytest.raises(InvalidInputError, match="maximum of 10 bytes"), SpoolFile(tmp_path, "x", 10) as spool:
        spool.write(b"123456")
        spool.write(b"123456")
    assert list(tmp_path.iterdir()) == []
    with SpoolFile(tmp_path, "evil/../../name.$(rm)", 10) as spool:
        assert spool.path.parent == tmp_path and spool.path.suffix == ""
    spool.write(b"late")  # a write after deletion (cancelled upload) is dropped
    assert list(tmp_path.iterdir()) == []


def test_engine_decodes_into_the_store(tmp_path: Path) -> None:
    store = make_store()
    engine = AudioEngine(store, media_root=tmp_path, spool_dir=tmp_path, max_upload_bytes=1000)
    samples = np.linspace(-0.5, 0.5, 16_000 * 2, dtype=np.float32)
    write_wav(tmp_path / "ramp.wav", samples, 16_000)
    result = engine.decode_file(engine.resolve_media_path("ramp.wav"), lease_s=60.0)
    try:
        assert result.audio.sample_count == samples.size
        assert result.source.codec == "pcm_s16le"
        pieces = list(engine.sample_chunks(result.audio.audio_id, TimeRange(0.5, 2.0), chunk_samples=10_000))
        assert [offset for offset, _ in pieces] == [8000, 18_000, 28_000]
        joined = np.frombuffer(b"".join(payload for _, payload in pieces), dtype="<f4")
        assert np.allclose(joined, samples[8000:32_000], atol=1e-4)
        with pytest.raises(InvalidInputError):
            engine.open_upload("big.wav", size_bytes=1001)
        with pytest.raises(InvalidInputError, match="audio_id is empty"):
            next(engine.sample_chunks("", None))
        with pytest.raises(NotFoundError):
            next(engine.sample_chunks("nope", None))
    finally:
        store.close()


def test_a_decode_that_fails_midway_leaves_no_segment(tmp_path: Path) -> None:
    """The decoder writes into a segment as it goes; a failure unlinks it."""
    store = make_store()
    engine = AudioEngine(
        store,
        media_root=tmp_path,
        spool_dir=tmp_path,
        max_upload_bytes=1000,
        decode_options=DecodeOptions(max_duration_s=20.0),
    )
    write_wav(tmp_path / "long.wav", np.zeros(16_000 * 30, dtype=np.float32), 16_000)
    before = set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*"))
    with pytest.raises(ResourceExhaustedError, match="maximum duration"):
        engine.decode_file(engine.resolve_media_path("long.wav"))
    assert set(SHM_DIR.glob(f"{SEGMENT_NAME_PREFIX}*")) == before and len(store) == 0
    store.close()


def test_a_segment_adopted_with_a_bad_lease_is_released() -> None:
    store = make_store()
    segment = SharedSamples.create(10)
    with pytest.raises(InvalidInputError, match="lease"):
        store.adopt(segment, 16_000, lease_s=-1.0)
    assert segment.released and not segment_exists(segment.name)


def test_config_from_env(tmp_path: Path) -> None:
    config = AudioConfig.from_env(
        {
            "SUBTITLER_AUDIO_PORT": "0",
            "SUBTITLER_AUDIO_MEDIA_ROOT": str(tmp_path),
            "SUBTITLER_AUDIO_MAX_DURATION_S": "60",
            "SUBTITLER_AUDIO_MAX_UPLOAD_BYTES": "1000",
            "SUBTITLER_AUDIO_LEASE_S": "30",
            "SUBTITLER_AUDIO_DECODE_WORKERS": "3",
        }
    )
    assert config.media_root == tmp_path.resolve()
    assert config.decode_options.max_duration_s == 60
    assert config.lease_options.default_lease_s == 30
    assert config.max_upload_bytes == 1000 and config.decode_workers == 3
    assert config.handle_target(4321) == "localhost:4321"
    defaults = AudioConfig.from_env({})
    assert defaults.server.port == 50052
    assert defaults.media_root == Path.cwd().resolve()
    assert defaults.max_duration_s == 4 * 3600 and defaults.max_upload_bytes == 2 * 1024**3
    with pytest.raises(ConfigError, match="SUBTITLER_AUDIO_DECODE_WORKERS"):
        AudioConfig.from_env({"SUBTITLER_AUDIO_DECODE_WORKERS": "0"})
    with pytest.raises(ConfigError, match="not a directory"):
        AudioConfig.from_env({"SUBTITLER_AUDIO_MEDIA_ROOT": str(tmp_path / "missing")})
    advertised = AudioConfig.from_env({"SUBTITLER_AUDIO_ADVERTISED_TARGET": "audio:50052"})
    assert advertised.handle_target(1) == "audio:50052"

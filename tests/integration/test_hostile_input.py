"""Input an outside test battery crafted to end as INTERNAL, through the real
processes: each ends with a status and a message a user can act on."""

from __future__ import annotations

import ctypes
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest

from common.errors import MAX_MESSAGE_BYTES
from subtitler.audio.v1 import audio_pb2, audio_pb2_grpc
from subtitler.gateway.v1 import gateway_pb2
from tests.integration.suite_fixtures import RunningSuite
from tests.speech import join_prompts, speech_available, write_float_wav, write_wav
from tests.wer import word_error_rate

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]


def create(suite: RunningSuite, path: str) -> gateway_pb2.Job:
    return suite.gateway.CreateJob(gateway_pb2.CreateJobRequest(path=path))


def transcript(suite: RunningSuite, path: str) -> str:
    job = suite.wait_finished(create(suite, path).job_id)
    assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
    request = gateway_pb2.GetResultRequest(job_id=job.job_id, format=gateway_pb2.RESULT_FORMAT_TEXT)
    return suite.gateway.GetResult(request).content


def test_a_job_on_a_symbolic_link_loop_fails_with_the_reason(suite: RunningSuite) -> None:
    (suite.media_dir / "loop-one.wav").symlink_to("loop-two.wav")
    (suite.media_dir / "loop-two.wav").symlink_to("loop-one.wav")
    for path in ("loop-one.wav", str(suite.media_dir / "loop-two.wav")):
        job = suite.wait_finished(create(suite, path).job_id)
        assert job.state == gateway_pb2.JOB_STATE_FAILED
        assert job.error.code == "INVALID_ARGUMENT", job.error
        assert "too many levels of symbolic links" in job.error.message.lower(), job.error.message
        assert job.error.stage == gateway_pb2.STAGE_DECODE


@pytest.mark.skipif(not speech_available(), reason="needs asterisk-core-sounds-en-wav (make test-data)")
def test_nan_and_infinite_samples_are_transcribed_as_silence(suite: RunningSuite) -> None:
    recording = join_prompts(["agent-loginok", "conf-getconfno", "vm-password"], gap_s=0.8)
    clean = write_float_wav(suite.media_dir / "float-clean.wav", recording.samples)
    damaged = recording.samples.copy()
    # NaN over the middle (the pause between the first two prompts, and into
    # the second), infinities of both signs beside it.
    start = int(recording.utterances[0].end_s * 16_000) - 1600
    damaged[start : start + 16_000] = np.nan
    damaged[start - 800 : start - 400] = np.inf
    damaged[start + 16_000 : start + 16_400] = -np.inf
    write_float_wav(suite.media_dir / "float-nan.wav", damaged)
    clean_text = transcript(suite, clean.name)
    damaged_text = transcript(suite, "float-nan.wav")
    assert ")))" not in damaged_text
    wer = word_error_rate(clean_text, damaged_text)
    assert wer <= 0.2, f"WER {wer:.1%}\nclean: {clean_text}\nwith NaN: {damaged_text}"
    # The audio service counted what it silenced.
    silenced = [
        record
        for record in suite.suite.log_records("audio")
        if "float-nan.wav" in record.get("event", "") and "not finite" in record.get("event", "")
    ]
    assert silenced and "16800 samples" in silenced[-1]["event"], silenced


@pytest.mark.parametrize("file_name", ["talk\x00.wav", "two\nlines.wav", "bell\x07.wav", "\x1b[2Jclear.wav"])
def test_an_upload_whose_file_name_has_a_control_character_is_refused(
    suite: RunningSuite, tmp_path: Path, file_name: str
) -> None:
    media = write_wav(tmp_path / "tone.wav", np.zeros(16_000, dtype=np.float32)).read_bytes()
    messages = [
        gateway_pb2.UploadMediaRequest(metadata=gateway_pb2.UploadMetadata(file_name=file_name)),
        gateway_pb2.UploadMediaRequest(chunk=media),
    ]
    jobs_before = len(suite.gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1000)).jobs)
    with pytest.raises(grpc.RpcError) as refused:
        suite.gateway.UploadMedia(iter(messages), timeout=60)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()
    assert "the file name has a control character" in (refused.value.details() or "")
    assert len(suite.gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1000)).jobs) == jobs_before
    assert not list((suite.data_dir / "uploads").glob("*.part"))


def test_job_ids_are_checked_and_no_message_echoes_a_megabyte(suite: RunningSuite) -> None:
    huge = "f" * 1_000_000
    for job_id, length_said in ((huge, "it is 1000000 characters long"), ("../jobs", "character U+002E at position 0")):
        for call in (
            lambda job_id=job_id: suite.gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job_id), timeout=30),
            lambda job_id=job_id: suite.gateway.CancelJob(gateway_pb2.CancelJobRequest(job_id=job_id), timeout=30),
            lambda job_id=job_id: suite.gateway.GetResult(gateway_pb2.GetResultRequest(job_id=job_id), timeout=30),
            lambda job_id=job_id: list(suite.gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job_id), timeout=30)),
        ):
            with pytest.raises(grpc.RpcError) as refused:
                call()
            details = refused.value.details() or ""
            assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, details
            assert details.startswith("job id must be") and length_said in details, details
            assert len(details.encode()) <= MAX_MESSAGE_BYTES
    with pytest.raises(grpc.RpcError) as unknown:
        suite.gateway.GetJob(gateway_pb2.GetJobRequest(job_id="0123456789abcdef0123456789abcdef"), timeout=30)
    assert unknown.value.code() == grpc.StatusCode.NOT_FOUND
    # Any message that echoes a value of the request is bounded (the
    # interceptor every service shares), its advice at the end kept.
    config = gateway_pb2.JobConfig()
    config.transcription.language_code = "x" * 1_000_000
    with pytest.raises(grpc.RpcError) as unknown_language:
        suite.gateway.CreateJob(gateway_pb2.CreateJobRequest(path="talk.wav", config=config), timeout=30)
    details = unknown_language.value.details() or ""
    assert unknown_language.value.code() == grpc.StatusCode.NOT_FOUND, details
    assert details.startswith("unknown language code 'xxx") and details.endswith("to detect the language")
    assert len(details.encode()) <= MAX_MESSAGE_BYTES


# Capabilities that let a process read any file (linux/capability.h).
CAP_DAC_OVERRIDE = 1
CAP_DAC_READ_SEARCH = 2
PR_CAPBSET_DROP = 24


def without_file_read_capabilities() -> None:
    """In a child before it runs Python: drops the capabilities that let
    root read any file from its bounding set, so the service it runs (as
    root) is refused a file its mode does not let it read, as a service
    running as an unprivileged user is. (Running it as nobody is not open to
    these tests: the interpreter may live in root's private home.)"""
    libc = ctypes.CDLL(None, use_errno=True)
    for capability in (CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH):
        if libc.prctl(PR_CAPBSET_DROP, capability, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), f"prctl(PR_CAPBSET_DROP, {capability})")


@pytest.fixture
def unprivileged_audio(tmp_path: Path) -> Iterator[tuple[audio_pb2_grpc.AudioServiceStub, Path, int]]:
    """An audio service process that may read only what a file's mode lets
    it, as in the deploy images (which run it as an unprivileged user): when
    the tests run as root (as in CI), without the capabilities to read any
    file. Yields its stub, media root and process id."""
    media_root = tmp_path / "media"
    media_root.mkdir()
    port_file = tmp_path / "audio.port"
    log = tmp_path / "audio.log"
    env = {
        **os.environ,
        "SUBTITLER_AUDIO_PORT": "0",
        "SUBTITLER_AUDIO_PORT_FILE": str(port_file),
        "SUBTITLER_AUDIO_MEDIA_ROOT": str(media_root),
        "SUBTITLER_AUDIO_SPOOL_DIR": str(tmp_path / "spool"),
    }
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "services.audio"],
            cwd=ROOT,
            env=env,
            stdout=output,
            stderr=subprocess.STDOUT,
            preexec_fn=without_file_read_capabilities if os.geteuid() == 0 else None,
        )
    try:
        deadline = time.monotonic() + 60
        while not port_file.exists():
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, f"the audio service did not start: {log.read_text()}"
            time.sleep(0.05)
        with grpc.insecure_channel(f"127.0.0.1:{port_file.read_text()}") as channel:
            yield audio_pb2_grpc.AudioServiceStub(channel), media_root, process.pid
    finally:
        process.terminate()
        assert process.wait(timeout=30) == 0, log.read_text()[-2000:]


def test_a_file_the_service_may_not_read_is_permission_denied(
    unprivileged_audio: tuple[audio_pb2_grpc.AudioServiceStub, Path, int],
) -> None:
    stub, media_root, pid = unprivileged_audio
    # The service really cannot read every file (as another user than root
    # it has none of these capabilities; as root, the fixture took them).
    status = dict(line.split(":", 1) for line in Path(f"/proc/{pid}/status").read_text().splitlines())
    effective_capabilities = int(status["CapEff"].strip(), 16)
    assert not effective_capabilities & (1 << CAP_DAC_OVERRIDE | 1 << CAP_DAC_READ_SEARCH), status
    samples = np.zeros(16_000, dtype=np.float32)
    write_wav(media_root / "readable.wav", samples).chmod(0o644)
    write_wav(media_root / "locked.wav", samples).chmod(0o000)
    write_float_wav(media_root / "locked-float.wav", samples).chmod(0o000)  # read by FFmpeg, not directly
    readable = stub.DecodeFile(audio_pb2.DecodeFileRequest(path="readable.wav"), timeout=60)
    assert readable.audio.sample_count == 16_000
    stub.ReleaseAudio(audio_pb2.ReleaseAudioRequest(audio_id=readable.audio.audio_id), timeout=60)
    for name in ("locked.wav", "locked-float.wav"):
        with pytest.raises(grpc.RpcError) as denied:
            stub.DecodeFile(audio_pb2.DecodeFileRequest(path=name), timeout=60)
        details = denied.value.details() or ""
        assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED, details
        assert f"the audio service may not read {name}" in details


@pytest.mark.skipif(not speech_available(), reason="needs asterisk-core-sounds-en-wav (make test-data)")
def test_a_model_path_of_no_such_user_is_denied(suite: RunningSuite) -> None:
    """A model named by a path no host user's home holds is outside the
    model directories like any other (expanding it raised RuntimeError)."""
    write_wav(suite.media_dir / "for-a-model.wav", join_prompts(["agent-loginok"], gap_s=0.5).samples)
    config = gateway_pb2.JobConfig()
    config.transcription.model = "~no-such-user/whisper"
    job = suite.gateway.CreateJob(gateway_pb2.CreateJobRequest(path="for-a-model.wav", config=config))
    job = suite.wait_finished(job.job_id)
    assert job.state == gateway_pb2.JOB_STATE_FAILED
    assert job.error.code == "PERMISSION_DENIED", job.error
    assert "is not under the service's model directories" in job.error.message

"""The whole suite through the gateway: real processes, real models, real speech."""

from __future__ import annotations

import itertools
import json
import re
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import grpc
import numpy as np
import pytest
from google.protobuf.duration_pb2 import Duration

from common.rpc.convert import duration_to_seconds
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.common.v1 import common_pb2
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2
from tests.integration.conftest import MAX_DURATION_S, MAX_UPLOAD_BYTES
from tests.integration.suite_fixtures import RunningSuite
from tests.speech import (
    build_long_recording,
    clear_prompts,
    speech_available,
    write_audio,
    write_video_only,
    write_wav,
    write_with_video,
)
from tests.wer import word_error_rate

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(not speech_available(), reason="needs asterisk-core-sounds-en-wav (make test-data)"),
]

ROOT = Path(__file__).resolve().parents[2]
SRT_TIME = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"


@dataclass(frozen=True)
class Media:
    reference_text: str
    speech_8k: Path
    speech_mp4: Path


@pytest.fixture(scope="module")
def media(suite: RunningSuite) -> Media:
    prompts = clear_prompts()[:12]
    recording = build_long_recording(min_duration_s=30.0, gap_s=0.8, prompts=prompts)
    speech_8k = write_audio(
        suite.media_dir / "speech-8k.wav", recording.samples, "wav", "pcm_s16le", sample_rate_hertz=8000
    )
    speech_mp4 = write_with_video(suite.media_dir / "speech.mp4", recording.samples)
    return Media(recording.reference_text, speech_8k, speech_mp4)


def create(suite: RunningSuite, path: str, **transcription: object) -> gateway_pb2.Job:
    config = gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(**transcription))  # type: ignore[arg-type]
    return suite.gateway.CreateJob(gateway_pb2.CreateJobRequest(path=path, config=config))


def upload(path: Path, chunk_bytes: int = 256 * 1024, **metadata: object) -> Iterator[gateway_pb2.UploadMediaRequest]:
    yield gateway_pb2.UploadMediaRequest(
        metadata=gateway_pb2.UploadMetadata(file_name=path.name, **metadata)  # type: ignore[arg-type]
    )
    data = path.read_bytes()
    for start in range(0, len(data), chunk_bytes):
        yield gateway_pb2.UploadMediaRequest(chunk=data[start : start + chunk_bytes])


def result(suite: RunningSuite, job_id: str, fmt: int = gateway_pb2.RESULT_FORMAT_SRT) -> gateway_pb2.GetResultResponse:
    return suite.gateway.GetResult(gateway_pb2.GetResultRequest(job_id=job_id, format=fmt))  # type: ignore[arg-type]


def parse_srt(content: str) -> list[tuple[float, float, str]]:
    cues = []
    for number, block in enumerate(content.strip().split("\n\n"), start=1):
        lines = block.split("\n")
        assert lines[0] == str(number), block
        match = re.fullmatch(f"{SRT_TIME} --> {SRT_TIME}", lines[1])
        assert match, lines[1]
        h1, m1, s1, ms1, h2, m2, s2, ms2 = (int(group) for group in match.groups())
        start = h1 * 3600 + m1 * 60 + s1 + ms1 / 1000
        end = h2 * 3600 + m2 * 60 + s2 + ms2 / 1000
        assert 1 <= len(lines) - 2 <= 2 and all(len(line) <= 42 for line in lines[2:]), block
        cues.append((start, end, " ".join(lines[2:])))
    return cues


def test_human_recording_8khz_upload_is_transcribed_accurately(suite: RunningSuite, media: Media) -> None:
    job = suite.gateway.UploadMedia(upload(media.speech_8k))
    assert job.state in (gateway_pb2.JOB_STATE_QUEUED, gateway_pb2.JOB_STATE_RUNNING)
    assert job.source == "upload:speech-8k.wav"
    job = suite.wait_finished(job.job_id)
    assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
    assert job.language_code == "en"
    assert duration_to_seconds(job.audio_duration) == pytest.approx(30.0, abs=3.0)
    text = result(suite, job.job_id, gateway_pb2.RESULT_FORMAT_TEXT).content
    wer = word_error_rate(media.reference_text, text)
    assert wer <= 0.10, f"WER {wer:.1%}\nreference: {media.reference_text}\nhypothesis: {text}"
    # No upload is kept once its job has finished.
    assert not list((suite.data_dir / "uploads").iterdir())


def test_mp4_with_video_gives_valid_srt_and_word_times(suite: RunningSuite, media: Media) -> None:
    job = suite.wait_finished(create(suite, media.speech_mp4.name).job_id)
    assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
    response = result(suite, job.job_id)
    assert response.content_type == "application/x-subrip"
    cues = parse_srt(response.content)
    assert cues
    for (start, end, _), (next_start, _, _) in zip(cues, [*cues[1:], (float("inf"), 0.0, "")], strict=True):
        assert start < end <= next_start
        assert end - start <= 7.0 + 1e-6
    wer = word_error_rate(media.reference_text, " ".join(text for _, _, text in cues))
    assert wer <= 0.10
    assert_word_times(response.segments)
    vtt = result(suite, job.job_id, gateway_pb2.RESULT_FORMAT_VTT)
    assert vtt.content.startswith("WEBVTT") and vtt.content_type == "text/vtt"
    document = json.loads(result(suite, job.job_id, gateway_pb2.RESULT_FORMAT_JSON).content)
    assert len(document["segments"]) == len(response.segments)


def assert_word_times(segments: Sequence[common_pb2.Segment]) -> None:
    """Every word of the text is there, in order, and word times increase
    and lie inside their segment."""
    previous_start = 0.0
    for segment in segments:
        seg_start = duration_to_seconds(segment.start_offset)
        seg_end = duration_to_seconds(segment.end_offset)
        assert segment.words, segment.text
        assert [word.text for word in segment.words] == segment.text.split()
        for word in segment.words:
            start, end = duration_to_seconds(word.start_offset), duration_to_seconds(word.end_offset)
            assert seg_start - 1e-3 <= start <= end <= seg_end + 1e-3, (segment.text, word)
            assert start >= previous_start - 1e-3
            previous_start = start


def test_cross_attention_alignment_times_words_in_the_asr_pass(suite: RunningSuite, media: Media) -> None:
    config = gateway_pb2.JobConfig(align_method=align_pb2.ALIGN_METHOD_CROSS_ATTENTION)
    job = suite.gateway.CreateJob(gateway_pb2.CreateJobRequest(path=media.speech_8k.name, config=config))
    job = suite.wait_finished(job.job_id)
    assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
    response = result(suite, job.job_id)
    assert_word_times(response.segments)
    assert word_error_rate(media.reference_text, " ".join(s.text for s in response.segments)) <= 0.10


def test_packed_speech_takes_fewer_chunks_for_the_same_words(suite: RunningSuite) -> None:
    """The default chunking packs speech with the silences cut out: fewer
    chunks than WhisperX's merge for the same recording, as accurate, every
    word timed in the whole audio (inside the prompt that says it)."""
    recording = build_long_recording(min_duration_s=40.0, gap_s=4.0, prompts=clear_prompts()[:8])
    write_wav(suite.media_dir / "spaced.wav", recording.samples)
    jobs = {}
    for chunking in (vad_pb2.CHUNKING_METHOD_UNSPECIFIED, vad_pb2.CHUNKING_METHOD_MERGE):
        config = gateway_pb2.JobConfig(speech_detection=vad_pb2.VadOptions(chunking=chunking))
        job = suite.gateway.CreateJob(gateway_pb2.CreateJobRequest(path="spaced.wav", config=config))
        jobs[chunking] = suite.wait_finished(job.job_id)
    packed, merged = jobs[vad_pb2.CHUNKING_METHOD_UNSPECIFIED], jobs[vad_pb2.CHUNKING_METHOD_MERGE]
    assert packed.config.speech_detection.chunking == vad_pb2.CHUNKING_METHOD_PACK
    chunk_counts = []
    for job in (packed, merged):
        assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
        segments = result(suite, job.job_id).segments
        assert word_error_rate(recording.reference_text, " ".join(s.text for s in segments)) <= 0.10
        assert_word_times(segments)
        for word in (word for segment in segments for word in segment.words):
            start_s = duration_to_seconds(word.start_offset)
            assert any(u.start_s - 0.3 <= start_s <= u.end_s for u in recording.utterances), word
        chunk_counts.append(len({segment.chunk_index for segment in segments}))
    assert chunk_counts[0] < chunk_counts[1]


def test_speech_whisper_skipped_is_transcribed_again_on_its_own(whole_window_suite: RunningSuite) -> None:
    # Three prompts in one chunk, where tiny.en in Whisper's whole 30 s
    # window (as faster-whisper decodes) stops after the second: "The leader
    # has left the conference. This conference is locked!" and not "The
    # conference is now locked". (In the suite's default windows, at least
    # 20 s, it hears them all.)
    suite = whole_window_suite
    recording = build_long_recording(min_duration_s=8.0, gap_s=0.8, prompts=clear_prompts()[27:])
    write_wav(suite.media_dir / "skipped.wav", recording.samples)
    texts = {}
    for skip in (True, False):
        config = gateway_pb2.JobConfig(
            transcription=asr_pb2.TranscriptionOptions(language_code="en"), skip_coverage_check=skip
        )
        job = suite.gateway.CreateJob(gateway_pb2.CreateJobRequest(path="skipped.wav", config=config))
        job = suite.wait_finished(job.job_id)
        assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
        response = result(suite, job.job_id, gateway_pb2.RESULT_FORMAT_JSON)
        assert_word_times(response.segments)
        texts[skip] = " ".join(segment.text for segment in response.segments)
    assert word_error_rate(recording.reference_text, texts[True]) >= 0.3, "the model no longer skips: pick another"
    assert word_error_rate(recording.reference_text, texts[False]) <= 0.05, texts[False]


def test_watch_streams_progress_and_segments_then_ends(suite: RunningSuite, media: Media) -> None:
    job = create(suite, media.speech_8k.name)
    events = list(suite.gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), timeout=300))
    assert [event.sequence for event in events] == list(range(1, len(events) + 1))
    assert events[-1].state == gateway_pb2.JOB_STATE_SUCCEEDED
    assert events[-1].progress == pytest.approx(1.0)
    progress = [event.progress for event in events]
    assert progress == sorted(progress), "overall progress never goes back"
    stages = {event.stage_progress.stage for event in events if event.HasField("stage_progress")}
    assert stages == {
        gateway_pb2.STAGE_DECODE,
        gateway_pb2.STAGE_DETECT_SPEECH,
        gateway_pb2.STAGE_TRANSCRIBE,
        gateway_pb2.STAGE_ALIGN,
    }
    segment_events = [event for event in events if event.HasField("segment")]
    assert segment_events and all(event.segment.text for event in segment_events)
    assert any(event.language_code == "en" for event in events if event.HasField("language_code"))
    # Each chunk's segments come again once aligned, with their words.
    aligned = {event.aligned.chunk_index: event.aligned for event in events if event.HasField("aligned")}
    assert set(aligned) == {event.segment.chunk_index for event in segment_events}
    assert all(segment.words for chunk in aligned.values() for segment in chunk.segments)
    # No progress event repeats the one before it of the same stage.
    last: dict[int, tuple[float, int, int]] = {}
    for event in events:
        if event.HasField("stage_progress"):
            figures = (event.stage_progress.fraction, event.stage_progress.done_count, event.stage_progress.total_count)
            assert last.get(event.stage_progress.stage) != figures, event
            last[event.stage_progress.stage] = figures
    # State changes say what the job left.
    changes = [(event.previous_state, event.state) for event in events if event.state_changed]
    assert changes == [
        (gateway_pb2.JOB_STATE_UNSPECIFIED, gateway_pb2.JOB_STATE_QUEUED),
        (gateway_pb2.JOB_STATE_QUEUED, gateway_pb2.JOB_STATE_RUNNING),
        (gateway_pb2.JOB_STATE_RUNNING, gateway_pb2.JOB_STATE_SUCCEEDED),
    ]
    # Watching a finished job replays the same events and ends.
    replay = list(suite.gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), timeout=30))
    assert [event.sequence for event in replay] == [event.sequence for event in events]


def test_finished_results_survive_a_gateway_restart(suite: RunningSuite, media: Media) -> None:
    job = suite.wait_finished(create(suite, media.speech_8k.name, language_code="en").job_id)
    before = result(suite, job.job_id).content
    suite.restart_gateway()
    again = suite.gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id))
    assert again.state == gateway_pb2.JOB_STATE_SUCCEEDED
    assert result(suite, job.job_id).content == before
    listed = suite.gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1000)).jobs
    assert job.job_id in {item.job_id for item in listed}


def test_cli_transcribes_a_file_and_reports_errors(suite: RunningSuite, media: Media, tmp_path: Path) -> None:
    output = tmp_path / "talk.vtt"
    command = [sys.executable, "-m", "gateway.cli", "--gateway", suite.suite.target("gateway")]
    done = subprocess.run(
        [*command, "transcribe", str(media.speech_8k), "-o", str(output), "--format", "vtt"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    assert output.read_text().startswith("WEBVTT")
    failed = subprocess.run(
        [*command, "transcribe", "no-such-file.mp4", "--server-path", "-o", str(tmp_path / "x.srt")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert failed.returncode != 0
    assert "NOT_FOUND" in failed.stderr
    assert not (tmp_path / "x.srt").exists()


@pytest.mark.parametrize("where", ["missing-dir", "directory"])
def test_cli_checks_the_output_before_uploading(suite: RunningSuite, media: Media, tmp_path: Path, where: str) -> None:
    output = tmp_path / "no" / "such" / "dir" / "out.srt" if where == "missing-dir" else tmp_path
    jobs_before = len(suite.gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1000)).jobs)
    refused = subprocess.run(
        [
            *(sys.executable, "-m", "gateway.cli", "--gateway", suite.suite.target("gateway")),
            *("transcribe", str(media.speech_8k), "-o", str(output)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert refused.returncode == 2
    assert refused.stderr.startswith("error: -o ") and "Traceback" not in refused.stderr
    assert len(suite.gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1000)).jobs) == jobs_before


# Bad input: each answered with the right status, nothing crashes, nothing leaks.


def failed_job(suite: RunningSuite, path: str, **transcription: object) -> gateway_pb2.Job:
    job = suite.wait_finished(create(suite, path, **transcription).job_id)
    assert job.state == gateway_pb2.JOB_STATE_FAILED
    return job


def test_missing_path_fails_not_found(suite: RunningSuite) -> None:
    job = failed_job(suite, "no-such-file.wav")
    assert job.error.code == "NOT_FOUND"
    assert "no-such-file.wav" in job.error.message
    assert job.error.stage == gateway_pb2.STAGE_DECODE


def test_path_outside_media_root_is_denied(suite: RunningSuite) -> None:
    job = failed_job(suite, "/etc/hostname")
    assert job.error.code == "PERMISSION_DENIED"
    job = failed_job(suite, "../../../../etc/hostname")
    assert job.error.code == "PERMISSION_DENIED"


def test_not_media_and_truncated_media_fail_invalid_argument(suite: RunningSuite, media: Media) -> None:
    (suite.media_dir / "notes.mp3").write_text("this is not audio\n" * 100)
    assert failed_job(suite, "notes.mp3").error.code == "INVALID_ARGUMENT"
    data = media.speech_mp4.read_bytes()
    (suite.media_dir / "truncated.mp4").write_bytes(data[: len(data) // 3])
    job = suite.wait_finished(create(suite, "truncated.mp4").job_id)
    # A cut MP4 has no index: undecodable. (Other containers may decode partly.)
    assert job.state == gateway_pb2.JOB_STATE_FAILED
    assert job.error.code == "INVALID_ARGUMENT"


def test_video_without_audio_fails_invalid_argument(suite: RunningSuite) -> None:
    path = write_video_only(suite.media_dir / "video-only.mp4")
    job = failed_job(suite, path.name)
    assert job.error.code == "INVALID_ARGUMENT"
    assert "audio" in job.error.message.lower()


@pytest.mark.parametrize("duration_s", [0.0, 4.0], ids=["zero-length", "silence"])
def test_silence_and_empty_audio_succeed_with_empty_transcript(suite: RunningSuite, duration_s: float) -> None:
    path = write_audio(
        suite.media_dir / f"silence-{duration_s}.wav",
        np.zeros(int(duration_s * 16000), dtype=np.float32),
        "wav",
        "pcm_s16le",
        sample_rate_hertz=16000,
    )
    job = suite.wait_finished(create(suite, path.name).job_id)
    assert job.state == gateway_pb2.JOB_STATE_SUCCEEDED, job.error
    assert result(suite, job.job_id).content == ""
    assert result(suite, job.job_id, gateway_pb2.RESULT_FORMAT_VTT).content.startswith("WEBVTT")
    assert not result(suite, job.job_id).segments


def test_audio_over_max_duration_is_refused_with_the_limit(suite: RunningSuite) -> None:
    path = write_audio(
        suite.media_dir / "too-long.flac",
        np.zeros(8000 * (MAX_DURATION_S + 5), dtype=np.float32),
        "flac",
        "flac",
        sample_rate_hertz=8000,
        input_sample_rate_hertz=8000,
    )
    job = failed_job(suite, path.name)
    assert job.error.code in ("RESOURCE_EXHAUSTED", "INVALID_ARGUMENT")
    assert str(MAX_DURATION_S) in job.error.message
    # A limit, not a busy service: decoded once, not retried.
    decodes = [
        record
        for record in suite.suite.log_records("audio")
        if record.get("event") == "rpc" and record.get("method") == "DecodeFile" and record.get("job_id") == job.job_id
    ]
    assert len(decodes) == 1, decodes
    assert not job.retries


def test_impossible_options_and_paths_are_refused_at_create(suite: RunningSuite) -> None:
    for request, text in (
        (gateway_pb2.CreateJobRequest(path="x" * 5_000_000), "bytes long"),
        (
            gateway_pb2.CreateJobRequest(
                path="a.wav",
                config=gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(temperature=float("nan"))),
            ),
            "temperature",
        ),
        (
            gateway_pb2.CreateJobRequest(
                path="a.wav",
                config=gateway_pb2.JobConfig(speech_detection=vad_pb2.VadOptions(max_chunk_duration=Duration(nanos=1))),
            ),
            "max_chunk_duration",
        ),
        (
            gateway_pb2.CreateJobRequest(
                path="a.wav",
                config=gateway_pb2.JobConfig(speech_detection=vad_pb2.VadOptions(speech_pad=Duration(seconds=3600))),
            ),
            "speech_pad",
        ),
        (
            gateway_pb2.CreateJobRequest(
                path="a.wav",
                config=gateway_pb2.JobConfig(
                    speech_detection=vad_pb2.VadOptions(chunking=7)  # type: ignore[arg-type]
                ),
            ),
            "chunking method",
        ),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            suite.gateway.CreateJob(request, timeout=30)
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert text in (refused.value.details() or "")


def test_unknown_model_and_language(suite: RunningSuite, media: Media) -> None:
    job = failed_job(suite, media.speech_8k.name, model="no-such-model-xyz")
    assert job.error.code == "NOT_FOUND"
    assert "no-such-model-xyz" in job.error.message
    with pytest.raises(grpc.RpcError) as refused:
        create(suite, media.speech_8k.name, language_code="xx-YY")
    assert refused.value.code() == grpc.StatusCode.NOT_FOUND
    assert "xx-YY" in refused.value.details()
    # What the English-only default cannot do is refused at once, not after decoding.
    for options, code in (
        ({"language_code": "fr"}, grpc.StatusCode.NOT_FOUND),
        ({"task": asr_pb2.TASK_TRANSLATE}, grpc.StatusCode.INVALID_ARGUMENT),
        ({"language_code": "de", "model": "small.en"}, grpc.StatusCode.NOT_FOUND),
    ):
        with pytest.raises(grpc.RpcError) as refused:
            create(suite, media.speech_8k.name, **options)
        assert refused.value.code() == code and "English-only" in refused.value.details()
        assert "embedded:base" in refused.value.details()


def test_upload_over_the_size_limit_is_refused(suite: RunningSuite, tmp_path: Path) -> None:
    big = tmp_path / "big.wav"
    big.write_bytes(b"\0" * (MAX_UPLOAD_BYTES + 1))
    # Declared up front: refused before any byte is stored.
    with pytest.raises(grpc.RpcError) as declared:
        suite.gateway.UploadMedia(upload(big, size_bytes=big.stat().st_size))
    assert declared.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert str(MAX_UPLOAD_BYTES) in declared.value.details()
    # Not declared: refused once the limit is crossed.
    with pytest.raises(grpc.RpcError) as streamed:
        suite.gateway.UploadMedia(upload(big, chunk_bytes=1024 * 1024))
    assert streamed.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert not list((suite.data_dir / "uploads").iterdir())


def test_upload_cut_off_midway_leaves_nothing(suite: RunningSuite, media: Media) -> None:
    jobs_before = len(suite.gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1000)).jobs)

    def cut_off() -> Iterator[gateway_pb2.UploadMediaRequest]:
        # A client that cannot declare the size up front says it at the end
        # (size_at_end): on the server a stream cut off can look finished.
        stream = upload(media.speech_8k, chunk_bytes=64 * 1024, size_at_end=True)
        yield next(stream)
        yield next(stream)
        raise ConnectionError("client went away")

    with pytest.raises(grpc.RpcError):
        suite.gateway.UploadMedia(cut_off())

    def nothing_left() -> bool:
        jobs = len(suite.gateway.ListJobs(gateway_pb2.ListJobsRequest(page_size=1000)).jobs)
        return not list((suite.data_dir / "uploads").iterdir()) and jobs == jobs_before

    # A job the gateway had already created for it is withdrawn in the background.
    deadline = time.monotonic() + 10
    while not nothing_left():
        assert time.monotonic() < deadline, "the cut-off upload left a file or a job behind"
        time.sleep(0.1)
    time.sleep(1)
    assert nothing_left(), "a job was made of the cut-off upload"
    # A final size that is not what came is refused.
    size = media.speech_8k.stat().st_size
    for wrong in (size - 1, size + 1):
        messages = [*upload(media.speech_8k, size_at_end=True), gateway_pb2.UploadMediaRequest(final_size_bytes=wrong)]
        with pytest.raises(grpc.RpcError) as refused:
            suite.gateway.UploadMedia(iter(messages))
        assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT, refused.value.details()


def test_unknown_job_and_unfinished_result(suite: RunningSuite, media: Media) -> None:
    for call in (
        lambda: suite.gateway.GetJob(gateway_pb2.GetJobRequest(job_id="nope")),
        lambda: suite.gateway.CancelJob(gateway_pb2.CancelJobRequest(job_id="nope")),
        lambda: list(suite.gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id="nope"))),
    ):
        with pytest.raises(grpc.RpcError) as missing:
            call()
        assert missing.value.code() == grpc.StatusCode.NOT_FOUND
    job = create(suite, media.speech_8k.name)
    with pytest.raises(grpc.RpcError) as early:
        result(suite, job.job_id)
    assert early.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    cancelled = suite.gateway.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id))
    assert cancelled.state == gateway_pb2.JOB_STATE_CANCELLED
    # Cancelling again is harmless.
    assert suite.gateway.CancelJob(gateway_pb2.CancelJobRequest(job_id=job.job_id)).state == cancelled.state


def test_subtitle_rules_hold_and_a_finished_job_is_laid_out_again(suite: RunningSuite, media: Media) -> None:
    import json

    import pysubs2

    bbc = gateway_pb2.SubtitleOptions(preset=gateway_pb2.SUBTITLE_PRESET_BBC)
    config = gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(language_code="en"), subtitles=bbc)
    job = suite.gateway.CreateJob(gateway_pb2.CreateJobRequest(path=media.speech_mp4.name, config=config))
    assert suite.wait_finished(job.job_id).state == gateway_pb2.JOB_STATE_SUCCEEDED

    def get(fmt: int, rules: gateway_pb2.SubtitleOptions | None = None) -> str:
        request = gateway_pb2.GetResultRequest(job_id=job.job_id, format=fmt)  # type: ignore[arg-type]
        if rules is not None:
            request.subtitles.CopyFrom(rules)
        return suite.gateway.GetResult(request).content

    # The job's own rules (BBC): 37 characters, 2 frames at 25 fps, 15 characters a second.
    cues = pysubs2.SSAFile.from_string(get(gateway_pb2.RESULT_FORMAT_SRT), format_="srt")
    reported = {item["cue"] for item in json.loads(get(gateway_pb2.RESULT_FORMAT_JSON))["subtitle_violations"]}
    assert len(cues) >= 5 and len(reported) <= len(cues) // 4
    for number, (cue, following) in enumerate(itertools.pairwise([*cues, None]), start=1):
        lines = cue.plaintext.split("\n")
        assert len(lines) <= 2 and all(len(line) <= 37 for line in lines), lines
        assert cue.end - cue.start <= 7000
        if following is not None:
            assert following.start - cue.end >= 80
        if number not in reported:
            assert sum(map(len, lines)) / ((cue.end - cue.start) / 1000) <= 15.05
            assert cue.end - cue.start >= 1000 or (following is not None and following.start - cue.end == 80)
    # Laid out again with other rules: no model runs, the job's text stays.
    short = get(
        gateway_pb2.RESULT_FORMAT_SRT, gateway_pb2.SubtitleOptions(preset=gateway_pb2.SUBTITLE_PRESET_SHORT_VIDEO)
    )
    wide = pysubs2.SSAFile.from_string(short, format_="srt")
    assert all(later.start - earlier.end >= 800 for earlier, later in itertools.pairwise(wide))
    assert (
        " ".join(cue.plaintext.replace("\n", " ") for cue in wide).split()
        == " ".join(cue.plaintext.replace("\n", " ") for cue in cues).split()
    )
    highlighted = get(gateway_pb2.RESULT_FORMAT_VTT, gateway_pb2.SubtitleOptions(highlight_words=True))
    assert re.search(r"\w <\d\d:\d\d:\d\d\.\d{3}>\w", highlighted)
    assert len(pysubs2.SSAFile.from_string(highlighted, format_="vtt")) >= len(cues) // 2
    ass = pysubs2.SSAFile.from_string(get(gateway_pb2.RESULT_FORMAT_ASS))
    assert len(ass) >= len(cues) // 2 and "Default" in ass.styles
    with pytest.raises(grpc.RpcError) as caught:
        get(gateway_pb2.RESULT_FORMAT_SRT, gateway_pb2.SubtitleOptions(max_lines=99))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "max_lines" in caught.value.details()


def test_cli_reports_a_gateway_that_is_down_instead_of_hanging(capsys: pytest.CaptureFixture[str]) -> None:
    import socket
    import time

    from gateway.cli import main as cli

    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{unused.getsockname()[1]}"
    started = time.monotonic()
    assert cli.main(["--gateway", address, "watch", "some-job"]) == 1
    assert time.monotonic() - started < 20
    error = capsys.readouterr().err
    assert "cannot reach the gateway" in error and "Traceback" not in error


def test_a_diarized_job_names_who_says_each_segment(suite: RunningSuite) -> None:
    """Allison and joe in turn: every utterance's words go to one speaker,
    alternating, and every format shows them."""
    import json

    from subtitler.diarize.v1 import diarize_pb2
    from tests.voices import dialogue, diarization_error_rate, parse_rttm, reference_rttm

    spoken = dialogue()
    write_wav(suite.media_dir / "dialogue.wav", spoken.recording.samples)
    config = gateway_pb2.JobConfig(
        transcription=asr_pb2.TranscriptionOptions(language_code="en"),
        diarization=gateway_pb2.DiarizationOptions(enabled=True),
    )
    job = suite.gateway.CreateJob(gateway_pb2.CreateJobRequest(path="dialogue.wav", config=config))
    events = list(suite.gateway.WatchJob(gateway_pb2.WatchJobRequest(job_id=job.job_id), timeout=300))
    assert events[-1].state == gateway_pb2.JOB_STATE_SUCCEEDED, events[-1]
    assert any(
        event.stage_progress.stage == gateway_pb2.STAGE_DIARIZE and event.stage_progress.fraction == 1.0
        for event in events
        if event.HasField("stage_progress")
    )
    document = json.loads(result(suite, job.job_id, gateway_pb2.RESULT_FORMAT_JSON).content)
    assert document["speakers"] == ["SPEAKER_00", "SPEAKER_01"]
    assert word_error_rate(spoken.recording.reference_text, document["text"]) <= 0.2
    # Each utterance's words: one speaker, and the two voices alternate.
    by_utterance = []
    for start_s, end_s, _ in spoken.recording.utterances:
        speakers = {
            segment["speaker"]
            for segment in document["segments"]
            for word in segment["words"]
            if start_s - 0.2 <= (word["start_s"] + word["end_s"]) / 2 <= end_s + 0.2
        }
        assert len(speakers) == 1, (start_s, speakers)
        by_utterance.append(speakers.pop())
    assert by_utterance == ["SPEAKER_00", "SPEAKER_01"] * 3
    srt = result(suite, job.job_id).content
    assert srt.count("[SPEAKER_00]") == 3 and srt.count("[SPEAKER_01]") == 3, srt
    assert "<v SPEAKER_01>" in result(suite, job.job_id, gateway_pb2.RESULT_FORMAT_VTT).content
    assert {word["speaker"] for segment in document["segments"] for word in segment["words"]} == {
        "SPEAKER_00",
        "SPEAKER_01",
    }
    # The turns as RTTM, against the reference RTTM of the dialogue: DER at most 15% (0.25 s collar).
    rttm = result(suite, job.job_id, gateway_pb2.RESULT_FORMAT_RTTM).content
    reference_file = suite.media_dir / "dialogue.rttm"
    reference_file.write_text(reference_rttm(spoken))
    der = diarization_error_rate(parse_rttm(reference_file.read_text()), parse_rttm(rttm))
    assert der <= 0.15, (der, rttm)
    assert rttm.startswith(f"SPEAKER {job.job_id} 1 ")
    # A job that was not diarized has no RTTM.
    plain = suite.wait_finished(
        suite.gateway.CreateJob(
            gateway_pb2.CreateJobRequest(
                path="dialogue.wav",
                config=gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(language_code="en")),
            )
        ).job_id
    )
    with pytest.raises(grpc.RpcError) as not_diarized:
        result(suite, plain.job_id, gateway_pb2.RESULT_FORMAT_RTTM)
    assert not_diarized.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "[SPEAKER_" not in result(suite, plain.job_id).content
    # Bad speaker counts are refused at create.
    bad = gateway_pb2.JobConfig(
        diarization=gateway_pb2.DiarizationOptions(enabled=True, speakers=diarize_pb2.SpeakerCount(min=4, max=2))
    )
    with pytest.raises(grpc.RpcError) as refused:
        suite.gateway.CreateJob(gateway_pb2.CreateJobRequest(path="dialogue.wav", config=bad))
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "speakers.min" in refused.value.details()


def _scrape(url: str) -> dict[str, float]:
    """A Prometheus text page as {"name{labels}": value}."""
    import urllib.request

    with urllib.request.urlopen(url, timeout=10) as page:
        text = page.read().decode()
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            samples[key] = float(value)
    return samples


def _total(samples: dict[str, float], name: str, **labels: str) -> float:
    wanted = [f'{key}="{value}"' for key, value in labels.items()]
    return sum(
        value for key, value in samples.items() if key.split("{")[0] == name and all(part in key for part in wanted)
    )


def test_every_service_serves_metrics_that_move_with_a_job(suite: RunningSuite, media: Media) -> None:
    services = ("gateway", "audio", "vad", "asr", "align", "diarize")
    before = {name: _scrape(suite.suite.metrics_url(name)) for name in services}
    job = suite.gateway.CreateJob(
        gateway_pb2.CreateJobRequest(
            path=media.speech_8k.name,
            config=gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(language_code="en")),
        )
    )
    held_during = 0.0
    deadline = time.monotonic() + 300
    while suite.gateway.GetJob(gateway_pb2.GetJobRequest(job_id=job.job_id)).state in (
        gateway_pb2.JOB_STATE_QUEUED,
        gateway_pb2.JOB_STATE_RUNNING,
    ):
        held_during = max(
            held_during, _total(_scrape(suite.suite.metrics_url("audio")), "subtitler_shared_memory_bytes")
        )
        assert time.monotonic() < deadline
        time.sleep(0.2)
    after = {name: _scrape(suite.suite.metrics_url(name)) for name in services}

    def moved(service: str, name: str, **labels: str) -> float:
        return _total(after[service], name, **labels) - _total(before[service], name, **labels)

    assert moved("gateway", "subtitler_rpcs_total", method="CreateJob", code="OK") >= 1
    assert moved("audio", "subtitler_rpcs_total", method="DecodeFile", code="OK") >= 1
    assert moved("vad", "subtitler_rpcs_total", method="DetectSpeech") >= 1
    assert moved("asr", "subtitler_rpcs_total", method="Transcribe", code="OK") >= 1
    assert moved("asr", "subtitler_rpc_duration_seconds_count", method="Transcribe") >= 1
    assert moved("gateway", "subtitler_jobs_finished_total", state="succeeded") >= 1
    assert moved("gateway", "subtitler_job_real_time_factor_count") >= 1
    assert moved("gateway", "subtitler_stage_duration_seconds_count", stage="transcribe") >= 1
    assert held_during > 0, "the audio service held the decoded audio in shared memory"
    assert _total(after["asr"], "subtitler_models_loaded", model="embedded:tiny.en") == 1
    assert _total(after["asr"], "subtitler_work_capacity") >= 1
    assert _total(after["diarize"], "subtitler_work_capacity") == 1

"""Options that can never work are refused when the job is created."""

from __future__ import annotations

import math

import pytest
from google.protobuf.duration_pb2 import Duration

from common.errors import InvalidInputError
from gateway.api.validation import MAX_PATH_BYTES, validate_job_config, validate_path
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2


def seconds(value: float) -> Duration:
    duration = Duration()
    duration.FromNanoseconds(round(value * 1e9))
    return duration


@pytest.mark.parametrize(
    ("config", "text"),
    [
        (gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(temperature=math.nan)), "temperature"),
        (gateway_pb2.JobConfig(transcription=asr_pb2.TranscriptionOptions(temperature=math.inf)), "temperature"),
        (gateway_pb2.JobConfig(speech_detection=vad_pb2.VadOptions(threshold=math.nan)), "threshold"),
        (gateway_pb2.JobConfig(speech_detection=vad_pb2.VadOptions(max_chunk_duration=seconds(1e-9))), "max_chunk"),
        (gateway_pb2.JobConfig(speech_detection=vad_pb2.VadOptions(max_chunk_duration=seconds(31))), "max_chunk"),
        (gateway_pb2.JobConfig(speech_detection=vad_pb2.VadOptions(speech_pad=seconds(3600))), "speech_pad"),
        (
            gateway_pb2.JobConfig(
                speech_detection=vad_pb2.VadOptions(speech_pad=seconds(2), max_chunk_duration=seconds(3))
            ),
            "no room for speech",
        ),
    ],
    ids=["nan-temperature", "infinite-temperature", "nan-threshold", "1ns-chunk", "31s-chunk", "hour-pad", "pad-fills"],
)
def test_options_that_can_never_work_are_refused(config: gateway_pb2.JobConfig, text: str) -> None:
    with pytest.raises(InvalidInputError, match=text):
        validate_job_config(config)


def test_sensible_and_default_options_pass() -> None:
    validate_job_config(gateway_pb2.JobConfig())
    validate_job_config(
        gateway_pb2.JobConfig(
            transcription=asr_pb2.TranscriptionOptions(temperature=0.2),
            speech_detection=vad_pb2.VadOptions(max_chunk_duration=seconds(6), speech_pad=seconds(0.2)),
        )
    )


def test_paths_are_bounded() -> None:
    validate_path("talk.mp4")
    with pytest.raises(InvalidInputError, match="bytes long"):
        validate_path("x" * (MAX_PATH_BYTES + 1))
    with pytest.raises(InvalidInputError, match="NUL"):
        validate_path("talk\x00.mp4")


def test_a_page_of_jobs_ends_before_the_byte_bound() -> None:
    from gateway.api.servicer import fill_page

    jobs = [gateway_pb2.Job(job_id=str(number), source="x" * 1000) for number in range(10)]
    page = fill_page(jobs, 3500)
    assert [job.job_id for job in page] == ["0", "1", "2"]
    assert len(fill_page(jobs[:1], 10)) == 1  # one job always goes out, so paging moves on


def test_a_live_decode_fits_what_the_asr_takes() -> None:
    """A live decode's previous text, lead-in text and window fit the limits
    of a Transcribe request (common/limits.py)."""
    from common import limits
    from gateway.live import context as live_context

    assert live_context.CONTEXT_CHARS <= limits.MAX_CONTEXT_CHARS
    assert live_context.MAX_LEAD_IN_CHARS <= limits.MAX_PREFIX_CHARS
    assert live_context.MAX_WINDOW_S <= limits.MAX_CHUNK_DURATION_S

"""Speed/quality profiles fill what a job leaves unset."""

from __future__ import annotations

from gateway.api.profiles import apply_profile
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2


def test_the_default_is_balanced_with_snapped_cross_attention_words() -> None:
    resolved = apply_profile(gateway_pb2.JobConfig())
    assert resolved.profile == gateway_pb2.PROFILE_BALANCED
    assert resolved.transcription.beam_size == 5
    assert resolved.transcription.model == ""  # the ASR service's default
    assert resolved.align_method == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
    assert resolved.speech_detection.chunking == vad_pb2.CHUNKING_METHOD_PACK


def test_fast_and_accurate_presets() -> None:
    fast = apply_profile(gateway_pb2.JobConfig(profile=gateway_pb2.PROFILE_FAST))
    assert fast.transcription.beam_size == 1
    accurate = apply_profile(gateway_pb2.JobConfig(profile=gateway_pb2.PROFILE_ACCURATE))
    assert accurate.transcription.model == "embedded:base"
    assert accurate.align_method == align_pb2.ALIGN_METHOD_PHONETIC


def test_explicit_options_override_the_preset() -> None:
    config = gateway_pb2.JobConfig(
        profile=gateway_pb2.PROFILE_ACCURATE,
        transcription=asr_pb2.TranscriptionOptions(beam_size=2, model="embedded:tiny.en"),
        align_method=align_pb2.ALIGN_METHOD_CROSS_ATTENTION,
        speech_detection=vad_pb2.VadOptions(chunking=vad_pb2.CHUNKING_METHOD_MERGE),
    )
    resolved = apply_profile(config)
    assert resolved.transcription.beam_size == 2
    assert resolved.transcription.model == "embedded:tiny.en"
    assert resolved.align_method == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
    assert resolved.speech_detection.chunking == vad_pb2.CHUNKING_METHOD_MERGE
    # The config given is left as it was.
    empty = gateway_pb2.JobConfig()
    apply_profile(empty)
    assert empty == gateway_pb2.JobConfig()


def test_skipped_alignment_gets_no_method() -> None:
    resolved = apply_profile(gateway_pb2.JobConfig(skip_alignment=True))
    assert resolved.align_method == align_pb2.ALIGN_METHOD_UNSPECIFIED

"""Speed/quality profiles: presets that fill the options a job leaves unset.

=============  =========  ====================  ==========================================
profile        beam size  model                 word times
=============  =========  ====================  ==========================================
fast           1          the service default   Whisper cross-attention, snapped to sound
balanced       5          the service default   Whisper cross-attention, snapped to sound
accurate       5          embedded:base         pocketsphinx for English, else cross-attention
=============  =========  ====================  ==========================================

`balanced` is the default. Cross-attention times come from the ASR's own pass
and are snapped out of silence there, so they cost almost nothing; the
phonetic aligner of `accurate` is a second pass over the audio.
"""

from __future__ import annotations

from dataclasses import dataclass

from common.limits import DEFAULT_BEAM_SIZE
from common.speech.model_names import EMBEDDED_BASE
from subtitler.align.v1 import align_pb2
from subtitler.gateway.v1 import gateway_pb2
from subtitler.vad.v1 import vad_pb2


@dataclass(frozen=True)
class ProfilePreset:
    """What a profile fills in."""

    beam_size: int
    # "" keeps the ASR service's default model.
    model: str
    align_method: align_pb2.AlignMethod.ValueType


PRESETS: dict[gateway_pb2.Profile.ValueType, ProfilePreset] = {
    gateway_pb2.PROFILE_FAST: ProfilePreset(1, "", align_pb2.ALIGN_METHOD_CROSS_ATTENTION),
    gateway_pb2.PROFILE_BALANCED: ProfilePreset(DEFAULT_BEAM_SIZE, "", align_pb2.ALIGN_METHOD_CROSS_ATTENTION),
    gateway_pb2.PROFILE_ACCURATE: ProfilePreset(DEFAULT_BEAM_SIZE, EMBEDDED_BASE, align_pb2.ALIGN_METHOD_PHONETIC),
}


def apply_profile(config: gateway_pb2.JobConfig) -> gateway_pb2.JobConfig:
    """A copy of `config` with its profile (balanced when unset) filling the
    beam size, model and alignment method it leaves unset, and speech
    packing as the chunking when it has none."""
    resolved = gateway_pb2.JobConfig()
    resolved.CopyFrom(config)
    if resolved.profile == gateway_pb2.PROFILE_UNSPECIFIED:
        resolved.profile = gateway_pb2.PROFILE_BALANCED
    preset = PRESETS[resolved.profile]
    transcription = resolved.transcription
    if not transcription.beam_size:
        transcription.beam_size = preset.beam_size
    if not transcription.model.strip() and preset.model:
        transcription.model = preset.model
    if resolved.align_method == align_pb2.ALIGN_METHOD_UNSPECIFIED and not resolved.skip_alignment:
        resolved.align_method = preset.align_method
    if resolved.speech_detection.chunking == vad_pb2.CHUNKING_METHOD_UNSPECIFIED:
        # Every profile packs speech: fewer chunks for the same words
        # (bench.chunking). Set at creation, so a job stored before packing
        # existed keeps merging when it resumes (its stored chunks are merged).
        resolved.speech_detection.chunking = vad_pb2.CHUNKING_METHOD_PACK
    return resolved

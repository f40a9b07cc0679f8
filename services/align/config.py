"""Align service configuration, read once from the environment
(variables prefixed SUBTITLER_ALIGN_)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

from common.config import env_bool, env_float, env_int, env_str
from common.rpc.server import ServerConfig
from common.speech.whisper_models import WhisperModelConfig

DEFAULT_PORT = 50055
ENV_PREFIX = "SUBTITLER_ALIGN_"


@dataclass(frozen=True)
class AlignConfig:
    server: ServerConfig
    # Audio service to read samples from when the shared memory is on another host.
    audio_target: str = "localhost:50052"
    # Whisper models for cross-attention alignment: the default one (best the
    # one the ASR service uses) and how models are found and loaded
    # (SUBTITLER_ALIGN_DEFAULT_MODEL, _DEVICE...: `WhisperModelConfig.from_env`).
    whisper: WhisperModelConfig = field(default_factory=WhisperModelConfig)
    # Whether English is aligned phonetically with pocketsphinx (else with Whisper too).
    phonetic: bool = True
    # Alignments running at once; more wait their turn. 0: tuned to the
    # machine (half its usable cores, at least 1).
    max_concurrent_alignments: int = 0
    # Alignments that may wait for a slot; more are refused with
    # RESOURCE_EXHAUSTED and a retry hint. 8: the gateway sends one job's
    # chunks one after another, so this covers several jobs at once.
    max_queued_alignments: int = 8
    # Retry delay suggested to refused callers.
    retry_after_s: float = 5.0
    # Move each segment's start and end to its first and last word.
    tighten_segments: bool = True
    # Longest stretch of audio read at once for one request (bounds memory
    # when the samples come over gRPC); a request spanning more is aligned
    # in pieces.
    max_read_window_s: float = 120.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        prefix = ENV_PREFIX
        return cls(
            server=ServerConfig.from_env(env, prefix, DEFAULT_PORT),
            audio_target=env_str(env, "SUBTITLER_AUDIO_TARGET", cls.audio_target),
            whisper=WhisperModelConfig.from_env(env, prefix),
            phonetic=env_bool(env, f"{prefix}PHONETIC", cls.phonetic),
            max_concurrent_alignments=env_int(
                env, f"{prefix}MAX_CONCURRENT_ALIGNMENTS", cls.max_concurrent_alignments, minimum=0
            ),
            max_queued_alignments=env_int(env, f"{prefix}MAX_QUEUED_ALIGNMENTS", cls.max_queued_alignments, minimum=0),
            retry_after_s=env_float(env, f"{prefix}RETRY_AFTER_S", cls.retry_after_s, minimum=0.0),
            tighten_segments=env_bool(env, f"{prefix}TIGHTEN_SEGMENTS", cls.tighten_segments),
            max_read_window_s=env_float(env, f"{prefix}MAX_READ_WINDOW_S", cls.max_read_window_s, minimum=30.0),
        )

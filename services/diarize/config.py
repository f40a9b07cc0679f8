"""Diarize service configuration, read once from the environment
(variables prefixed SUBTITLER_DIARIZE_)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from common.config import env_float, env_int, env_path, env_str
from common.rpc.server import ServerConfig
from common.speech.whisper_models import DEFAULT_CACHE_DIR

DEFAULT_PORT = 50056
ENV_PREFIX = "SUBTITLER_DIARIZE_"


@dataclass(frozen=True)
class DiarizeConfig:
    server: ServerConfig
    # Audio service to read samples from when the shared memory is on another host.
    audio_target: str = "localhost:50052"
    # Where the models are built from the weights package on first start.
    cache_dir: Path = field(default_factory=lambda: Path(DEFAULT_CACHE_DIR).expanduser() / "diarize")
    # Diarizations running at once, and threads each (onnxruntime); 0: chosen
    # at start (one of one thread: a job diarizes while it transcribes).
    max_concurrent: int = 0
    threads: int = 0
    # Diarizations that may wait for a slot; more are refused (RESOURCE_EXHAUSTED, retry hint).
    max_queued: int = 8
    retry_after_s: float = 5.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        prefix = ENV_PREFIX
        return cls(
            server=ServerConfig.from_env(env, prefix, DEFAULT_PORT),
            audio_target=env_str(env, "SUBTITLER_AUDIO_TARGET", cls.audio_target),
            cache_dir=env_path(env, f"{prefix}CACHE_DIR", Path(DEFAULT_CACHE_DIR).expanduser() / "diarize"),
            max_concurrent=env_int(env, f"{prefix}MAX_CONCURRENT", cls.max_concurrent, minimum=0),
            threads=env_int(env, f"{prefix}THREADS", cls.threads, minimum=0),
            max_queued=env_int(env, f"{prefix}MAX_QUEUED", cls.max_queued, minimum=0),
            retry_after_s=env_float(env, f"{prefix}RETRY_AFTER_S", cls.retry_after_s, minimum=0.0),
        )

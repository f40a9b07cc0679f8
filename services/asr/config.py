"""ASR service configuration, read once from the environment
(variables prefixed SUBTITLER_ASR_)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Self

from common.config import ConfigError, env_bool, env_float, env_int, env_str
from common.limits import DEFAULT_MAX_BATCH_SIZE, MAX_CHUNK_DURATION_S
from common.rpc.server import ServerConfig
from common.speech.whisper_models import WhisperModelConfig
from services.asr.engine import DEFAULT_MIN_WINDOW_S

DEFAULT_PORT = 50054


@dataclass(frozen=True)
class AsrConfig:
    server: ServerConfig
    # Audio service to read samples from when the shared memory is on another host.
    audio_target: str = "localhost:50052"
    # The default model and how models are found and loaded
    # (SUBTITLER_ASR_DEFAULT_MODEL, _DEVICE...: `WhisperModelConfig.from_env`).
    whisper: WhisperModelConfig = field(default_factory=WhisperModelConfig)
    # Chunks decoded together when a request does not say; 0: tuned to the
    # machine (4 on CPU, where bigger batches of beam search waste work on
    # padding; from GPU memory on CUDA).
    batch_size: int = 0
    # Largest batch a request may ask for.
    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    # Transcriptions (and language detections) running at once; 0: one per model worker.
    max_concurrent_transcriptions: int = 0
    # Requests that may wait for a slot; more are refused with RESOURCE_EXHAUSTED.
    max_queued_transcriptions: int = 4
    # Retry delay suggested to refused callers.
    retry_after_s: float = 5.0
    # Memory all loaded models may hold, in bytes; 0: half of the machine's
    # (or the container's) memory. Least recently used models are dropped to
    # make room; the default model never is.
    max_model_memory_bytes: int = 0
    # How long a request waits for a model another request is loading.
    model_wait_timeout_s: float = 600.0
    # Run one short transcription per worker before health says SERVING.
    warm_up: bool = True
    # The shortest encoder window of a batch of short chunks, in seconds (the
    # encoder hears a short chunk and 5 s of padding, not Whisper's whole 30 s;
    # services/asr/engine.py `window_frames`); 30: always the whole window.
    min_window_s: float = DEFAULT_MIN_WINDOW_S

    def __post_init__(self) -> None:
        if not 1.0 <= self.min_window_s <= MAX_CHUNK_DURATION_S:
            raise ConfigError(
                f"SUBTITLER_ASR_MIN_WINDOW_S={self.min_window_s:g} must be between 1 and {MAX_CHUNK_DURATION_S:g}"
            )
        if self.batch_size and self.batch_size > self.max_batch_size:
            raise ConfigError(
                f"SUBTITLER_ASR_BATCH_SIZE={self.batch_size} is over SUBTITLER_ASR_MAX_BATCH_SIZE={self.max_batch_size}"
            )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        prefix = "SUBTITLER_ASR_"
        return cls(
            server=ServerConfig.from_env(env, prefix, DEFAULT_PORT),
            audio_target=env_str(env, "SUBTITLER_AUDIO_TARGET", cls.audio_target),
            whisper=WhisperModelConfig.from_env(env, prefix),
            batch_size=env_int(env, f"{prefix}BATCH_SIZE", cls.batch_size, minimum=0),
            max_batch_size=env_int(env, f"{prefix}MAX_BATCH_SIZE", cls.max_batch_size, minimum=1),
            max_concurrent_transcriptions=env_int(
                env, f"{prefix}MAX_CONCURRENT_TRANSCRIPTIONS", cls.max_concurrent_transcriptions, minimum=0
            ),
            max_queued_transcriptions=env_int(
                env, f"{prefix}MAX_QUEUED_TRANSCRIPTIONS", cls.max_queued_transcriptions, minimum=0
            ),
            retry_after_s=env_float(env, f"{prefix}RETRY_AFTER_S", cls.retry_after_s, minimum=0.0),
            max_model_memory_bytes=env_int(
                env, f"{prefix}MAX_MODEL_MEMORY_BYTES", cls.max_model_memory_bytes, minimum=0
            ),
            model_wait_timeout_s=env_float(env, f"{prefix}MODEL_WAIT_TIMEOUT_S", cls.model_wait_timeout_s, minimum=1.0),
            warm_up=env_bool(env, f"{prefix}WARM_UP", cls.warm_up),
            min_window_s=env_float(env, f"{prefix}MIN_WINDOW_S", cls.min_window_s, minimum=1.0),
        )

"""ASR service configuration, read once from the environment
(variables prefixed SUBTITLER_ASR_)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from common.config import ConfigError, env_bool, env_choice, env_float, env_int, env_path, env_str
from common.server import ServerConfig
from common.whisper_models import DEFAULT_MODEL, DEVICES, ModelLoadOptions

DEFAULT_PORT = 50054


@dataclass(frozen=True)
class AsrConfig:
    server: ServerConfig
    # Audio service to read samples from when the shared memory is on another host.
    audio_target: str = "localhost:50052"
    # Model used when a request names none; loaded at start (health SERVING after).
    default_model: str = DEFAULT_MODEL
    # "auto" (CUDA if visible), "cpu" or "cuda".
    device: str = "auto"
    # CTranslate2 compute type; "default": int8 on CPU, float16 on CUDA.
    compute_type: str = "default"
    # Threads per model on CPU; 0: one per available core.
    cpu_threads: int = 0
    # CTranslate2 workers per model (parallel generate() calls).
    num_workers: int = 1
    # Where the embedded base model is assembled.
    model_cache_dir: Path = field(default_factory=lambda: Path("~/.cache/subtitler/models").expanduser())
    # Hugging Face cache for size names and repository ids; unset: the hub's default.
    download_root: Path | None = None
    # Whether models that are not cached may be downloaded from the Hugging Face Hub.
    allow_model_download: bool = False
    # Models kept loaded at once (the default one always stays).
    max_loaded_models: int = 2
    # Chunks decoded together when a request does not say.
    batch_size: int = 8
    # Largest batch a request may ask for.
    max_batch_size: int = 32
    # Transcriptions (and language detections) running at once; 0: 1 on CPU, 2 on CUDA.
    max_concurrent_transcriptions: int = 0
    # Requests that may wait for a slot; more are refused with RESOURCE_EXHAUSTED.
    max_queued_transcriptions: int = 4
    # Retry delay suggested to refused callers.
    retry_after_s: float = 5.0

    def __post_init__(self) -> None:
        if self.batch_size > self.max_batch_size:
            raise ConfigError(
                f"SUBTITLER_ASR_BATCH_SIZE={self.batch_size} is over SUBTITLER_ASR_MAX_BATCH_SIZE={self.max_batch_size}"
            )

    @property
    def model_load_options(self) -> ModelLoadOptions:
        return ModelLoadOptions(
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.cpu_threads,
            num_workers=self.num_workers,
            cache_dir=self.model_cache_dir,
            download_root=self.download_root,
            allow_download=self.allow_model_download,
            max_loaded_models=self.max_loaded_models,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        prefix = "SUBTITLER_ASR_"
        download_root = env.get(f"{prefix}DOWNLOAD_ROOT", "").strip()
        return cls(
            server=ServerConfig.from_env(env, prefix, DEFAULT_PORT),
            audio_target=env_str(env, "SUBTITLER_AUDIO_TARGET", cls.audio_target),
            default_model=env_str(env, f"{prefix}DEFAULT_MODEL", cls.default_model),
            device=env_choice(env, f"{prefix}DEVICE", cls.device, DEVICES),
            compute_type=env_str(env, f"{prefix}COMPUTE_TYPE", cls.compute_type),
            cpu_threads=env_int(env, f"{prefix}CPU_THREADS", cls.cpu_threads, minimum=0),
            num_workers=env_int(env, f"{prefix}NUM_WORKERS", cls.num_workers, minimum=1),
            model_cache_dir=env_path(env, f"{prefix}MODEL_CACHE_DIR", "~/.cache/subtitler/models"),
            download_root=Path(download_root).expanduser() if download_root else None,
            allow_model_download=env_bool(env, f"{prefix}ALLOW_MODEL_DOWNLOAD", cls.allow_model_download),
            max_loaded_models=env_int(env, f"{prefix}MAX_LOADED_MODELS", cls.max_loaded_models, minimum=1),
            batch_size=env_int(env, f"{prefix}BATCH_SIZE", cls.batch_size, minimum=1),
            max_batch_size=env_int(env, f"{prefix}MAX_BATCH_SIZE", cls.max_batch_size, minimum=1),
            max_concurrent_transcriptions=env_int(
                env, f"{prefix}MAX_CONCURRENT_TRANSCRIPTIONS", cls.max_concurrent_transcriptions, minimum=0
            ),
            max_queued_transcriptions=env_int(
                env, f"{prefix}MAX_QUEUED_TRANSCRIPTIONS", cls.max_queued_transcriptions, minimum=0
            ),
            retry_after_s=env_float(env, f"{prefix}RETRY_AFTER_S", cls.retry_after_s, minimum=0.0),
        )

"""Align service configuration, read once from the environment
(variables prefixed SUBTITLER_ALIGN_)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from common.config import env_bool, env_choice, env_float, env_int, env_path, env_str
from common.server import ServerConfig
from common.whisper_models import DEFAULT_MODEL, DEVICES, ModelLoadOptions

DEFAULT_PORT = 50055
ENV_PREFIX = "SUBTITLER_ALIGN_"


@dataclass(frozen=True)
class AlignConfig:
    server: ServerConfig
    # Audio service to read samples from when the shared memory is on another host.
    audio_target: str = "localhost:50052"
    # Whisper model for cross-attention alignment when a request names none;
    # loaded at start (health SERVING after). Best the one the ASR service uses.
    default_model: str = DEFAULT_MODEL
    # "auto" (CUDA if visible), "cpu" or "cuda".
    device: str = "auto"
    # CTranslate2 compute type; "default": int8 on CPU, float16 on CUDA.
    compute_type: str = "default"
    # Threads per Whisper model on CPU; 0: one per available core.
    cpu_threads: int = 0
    # Where the embedded base model is assembled.
    model_cache_dir: Path = field(default_factory=lambda: Path("~/.cache/subtitler/models").expanduser())
    # Hugging Face cache for size names and repository ids; unset: the hub's default.
    download_root: Path | None = None
    # Whether models that are not cached may be downloaded from the Hugging Face Hub.
    allow_model_download: bool = False
    # Whisper models kept loaded at once (the default one always stays).
    max_loaded_models: int = 2
    # Whether English is aligned phonetically with pocketsphinx (else with Whisper too).
    phonetic: bool = True
    # Alignments running at once; more wait their turn.
    max_concurrent_alignments: int = 2
    # Move each segment's start and end to its first and last word.
    tighten_segments: bool = True
    # Longest stretch of audio read at once for one request (bounds memory
    # when the samples come over gRPC); a request spanning more is aligned
    # in pieces.
    max_read_window_s: float = 120.0

    @property
    def model_load_options(self) -> ModelLoadOptions:
        return ModelLoadOptions(
            device=self.device,
            compute_type=self.compute_type,
            cpu_threads=self.cpu_threads,
            cache_dir=self.model_cache_dir,
            download_root=self.download_root,
            allow_download=self.allow_model_download,
            max_loaded_models=self.max_loaded_models,
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        prefix = ENV_PREFIX
        download_root = env.get(f"{prefix}DOWNLOAD_ROOT", "").strip()
        return cls(
            server=ServerConfig.from_env(env, prefix, DEFAULT_PORT),
            audio_target=env_str(env, "SUBTITLER_AUDIO_TARGET", cls.audio_target),
            default_model=env_str(env, f"{prefix}DEFAULT_MODEL", cls.default_model),
            device=env_choice(env, f"{prefix}DEVICE", cls.device, DEVICES),
            compute_type=env_str(env, f"{prefix}COMPUTE_TYPE", cls.compute_type),
            cpu_threads=env_int(env, f"{prefix}CPU_THREADS", cls.cpu_threads, minimum=0),
            model_cache_dir=env_path(env, f"{prefix}MODEL_CACHE_DIR", "~/.cache/subtitler/models"),
            download_root=Path(download_root).expanduser() if download_root else None,
            allow_model_download=env_bool(env, f"{prefix}ALLOW_MODEL_DOWNLOAD", cls.allow_model_download),
            max_loaded_models=env_int(env, f"{prefix}MAX_LOADED_MODELS", cls.max_loaded_models, minimum=1),
            phonetic=env_bool(env, f"{prefix}PHONETIC", cls.phonetic),
            max_concurrent_alignments=env_int(
                env, f"{prefix}MAX_CONCURRENT_ALIGNMENTS", cls.max_concurrent_alignments, minimum=1
            ),
            tighten_segments=env_bool(env, f"{prefix}TIGHTEN_SEGMENTS", cls.tighten_segments),
            max_read_window_s=env_float(env, f"{prefix}MAX_READ_WINDOW_S", cls.max_read_window_s, minimum=30.0),
        )

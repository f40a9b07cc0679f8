"""VAD service configuration, read once from the environment
(variables prefixed SUBTITLER_VAD_)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from common.config import ConfigError, env_float, env_int, env_str
from common.rpc.server import ServerConfig

DEFAULT_PORT = 50053
ENV_PREFIX = "SUBTITLER_VAD_"


@dataclass(frozen=True)
class VadConfig:
    server: ServerConfig
    # Audio service to read samples from when the shared memory is on another host.
    audio_target: str = "localhost:50052"
    # Silero VAD ONNX model taking frame sequences; None: the silero v6 model
    # bundled with faster-whisper.
    model_path: Path | None = None
    # onnxruntime threads per detection. Silero is small: one thread is the
    # fastest per core (see bench/vad_backends.py); scale with detections instead.
    intra_op_threads: int = 1
    # Detections running at once (one CPU thread each); more wait their turn.
    # 0: tuned to the machine (half its usable cores, at least 1).
    max_concurrent_detections: int = 0
    # Detections that may wait for a slot; more are refused with
    # RESOURCE_EXHAUSTED and a retry hint. 8 covers a burst of jobs from a few
    # gateways (each job runs one detection) without queueing for long.
    max_queued_detections: int = 8
    # Live streams (StreamSpeech) open at once; more are refused.
    max_live_streams: int = 64
    # Retry delay suggested to refused callers.
    retry_after_s: float = 5.0
    # Audio read and analysed per step; a progress message follows each step
    # that completed no chunk. Shorter gives earlier chunks and finer progress.
    block_duration_s: float = 15.0

    def __post_init__(self) -> None:
        if self.model_path is not None and not self.model_path.is_file():
            raise ConfigError(f"{ENV_PREFIX}MODEL_PATH={str(self.model_path)!r} is not a file")

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        prefix = ENV_PREFIX
        model_path = env.get(f"{prefix}MODEL_PATH", "").strip()
        return cls(
            server=ServerConfig.from_env(env, prefix, DEFAULT_PORT),
            audio_target=env_str(env, "SUBTITLER_AUDIO_TARGET", cls.audio_target),
            model_path=Path(model_path).expanduser() if model_path else None,
            intra_op_threads=env_int(env, f"{prefix}INTRA_OP_THREADS", cls.intra_op_threads, minimum=1),
            max_concurrent_detections=env_int(
                env, f"{prefix}MAX_CONCURRENT_DETECTIONS", cls.max_concurrent_detections, minimum=0
            ),
            max_queued_detections=env_int(env, f"{prefix}MAX_QUEUED_DETECTIONS", cls.max_queued_detections, minimum=0),
            max_live_streams=env_int(env, f"{prefix}MAX_LIVE_STREAMS", cls.max_live_streams, minimum=1),
            retry_after_s=env_float(env, f"{prefix}RETRY_AFTER_S", cls.retry_after_s, minimum=0.0),
            block_duration_s=env_float(env, f"{prefix}BLOCK_DURATION_S", cls.block_duration_s, minimum=0.1),
        )

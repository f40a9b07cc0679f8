"""Gateway configuration, read once from the environment."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from common.config import env_bool, env_float, env_int, env_path, env_str
from common.server import ServerConfig


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig
    # Peer services: one address, a comma-separated list of replicas, or a gRPC URI.
    audio_target: str = "localhost:50052"
    vad_target: str = "localhost:50053"
    asr_target: str = "localhost:50054"
    align_target: str = "localhost:50055"
    # Jobs, their events and results (SQLite) and kept uploads live here.
    data_dir: Path = Path("data")
    # Jobs processed at once; the rest wait in the queue.
    max_concurrent_jobs: int = 2
    # Largest upload accepted, in bytes.
    max_upload_bytes: int = 2 * 1024**3
    # Chunks sent to the ASR service in one request (its batch).
    asr_batch_size: int = 8
    # Deadline of one call to a peer service, in seconds.
    call_timeout_s: float = 600.0
    # Whether a job waits for a peer that is down or still loading its model.
    wait_for_ready: bool = True

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        prefix = "SUBTITLER_GATEWAY_"
        return cls(
            server=ServerConfig.from_env(env, prefix, 50051),
            audio_target=env_str(env, "SUBTITLER_AUDIO_TARGET", cls.audio_target),
            vad_target=env_str(env, "SUBTITLER_VAD_TARGET", cls.vad_target),
            asr_target=env_str(env, "SUBTITLER_ASR_TARGET", cls.asr_target),
            align_target=env_str(env, "SUBTITLER_ALIGN_TARGET", cls.align_target),
            data_dir=env_path(env, f"{prefix}DATA_DIR", cls.data_dir),
            max_concurrent_jobs=env_int(env, f"{prefix}MAX_CONCURRENT_JOBS", cls.max_concurrent_jobs, minimum=1),
            max_upload_bytes=env_int(env, f"{prefix}MAX_UPLOAD_BYTES", cls.max_upload_bytes, minimum=1),
            asr_batch_size=env_int(env, f"{prefix}ASR_BATCH_SIZE", cls.asr_batch_size, minimum=1),
            call_timeout_s=env_float(env, f"{prefix}CALL_TIMEOUT_S", cls.call_timeout_s, minimum=1.0),
            wait_for_ready=env_bool(env, f"{prefix}WAIT_FOR_READY", cls.wait_for_ready),
        )

"""HTTP front configuration (SUBTITLER_HTTP_*)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Self

from common.config import env_float, env_int, env_str


@dataclass(frozen=True)
class HttpConfig:
    host: str = "127.0.0.1"
    port: int = 8080
    # The gateway it talks to.
    gateway_target: str = "localhost:50051"
    # Largest body accepted (the gateway has its own upload limit too).
    max_upload_bytes: int = 2 * 1024**3
    # How long a request waits for its job.
    job_timeout_s: float = 3600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        return cls(
            host=env_str(env, "SUBTITLER_HTTP_HOST", cls.host),
            port=env_int(env, "SUBTITLER_HTTP_PORT", cls.port, minimum=0),
            gateway_target=env_str(env, "SUBTITLER_GATEWAY_TARGET", cls.gateway_target),
            max_upload_bytes=env_int(env, "SUBTITLER_HTTP_MAX_UPLOAD_BYTES", cls.max_upload_bytes, minimum=1),
            job_timeout_s=env_float(env, "SUBTITLER_HTTP_JOB_TIMEOUT_S", cls.job_timeout_s, minimum=1.0),
        )

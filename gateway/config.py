"""Gateway configuration, read once from the environment."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

from common.config import ConfigError, env_float, env_int, env_path, env_str
from common.rpc.channels import channel_target
from common.rpc.server import ServerConfig


@dataclass(frozen=True)
class RetryPolicy:
    """How calls to stage services are tried again."""

    # Retries of a call failing with DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED or
    # ABORTED (per chunk batch, per alignment, per decode), after the first try.
    max_retries: int = 3
    # Backoff before the first retry; doubles each time, with jitter.
    initial_backoff_s: float = 0.5
    max_backoff_s: float = 10.0
    # How long a job waits for a service that is UNAVAILABLE (down, loading
    # its model) before it fails.
    max_unavailable_wait_s: float = 300.0

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str) -> Self:
        return cls(
            max_retries=env_int(env, f"{prefix}MAX_RETRIES", cls.max_retries, minimum=0),
            initial_backoff_s=env_float(env, f"{prefix}INITIAL_BACKOFF_S", cls.initial_backoff_s, minimum=0.01),
            max_backoff_s=env_float(env, f"{prefix}MAX_BACKOFF_S", cls.max_backoff_s, minimum=0.01),
            max_unavailable_wait_s=env_float(
                env, f"{prefix}MAX_UNAVAILABLE_WAIT_S", cls.max_unavailable_wait_s, minimum=0.0
            ),
        )


@dataclass(frozen=True)
class LiveConfig:
    """Bounds of live streams (SUBTITLER_GATEWAY_*)."""

    # Streams open at once; more are refused with RESOURCE_EXHAUSTED. 0: as
    # many as the ASR workers hold at the latency targets, measured
    # (gateway.live.admission).
    max_streams: int = 0
    # Audio one stream may carry, in the stream's own time.
    max_stream_duration_s: float = 4 * 3600.0
    # A stream that sends nothing for this long is ended.
    idle_timeout_s: float = 30.0
    # Retry delay suggested to refused clients.
    retry_after_s: float = 5.0


@dataclass(frozen=True)
class GatewayConfig:
    server: ServerConfig
    # Peer services: one address, a comma-separated list of replicas, or a gRPC URI.
    audio_target: str = "localhost:50052"
    vad_target: str = "localhost:50053"
    asr_target: str = "localhost:50054"
    align_target: str = "localhost:50055"
    # Asked only by jobs that want their speakers.
    diarize_target: str = "localhost:50056"
    # Jobs, their events and results (SQLite) and kept uploads live here.
    data_dir: Path = Path("data")
    # The job store: empty for the SQLite file in data_dir; a postgresql://
    # URL for a PostgreSQL database that several gateways share.
    store: str = ""
    # A gateway's hold on each job it runs, renewed every third of it: when
    # a gateway dies, another takes its jobs over once their leases lapse.
    lease_s: float = 15.0
    # On a shared store: how often a gateway looks for jobs to take (created
    # on another gateway, or left by one that died) and watchers read events
    # another gateway stored.
    poll_s: float = 1.0
    # Jobs processed at once; the rest wait in the queue. 0: tuned to the
    # machine (enough to keep every ASR worker fed while others decode).
    max_concurrent_jobs: int = 0
    # Jobs waiting in the queue at most; beyond, RESOURCE_EXHAUSTED (100
    # while the ASR's rate is not measured; 0: none wait). A ceiling: the
    # queue's usual bound is the wait below (gateway.jobs.admission).
    max_queued_jobs: int = 1000
    # Longest a new job is expected to wait for its turn, at the rate the
    # ASR measured; a job that would wait longer is refused with
    # RESOURCE_EXHAUSTED and a retry hint. 0: no bound by wait.
    max_queue_wait_s: float = 3600.0
    # Finished jobs, their events and results are deleted after this long.
    retention_s: float = 7 * 24 * 3600.0
    # How often expired jobs are looked for.
    retention_sweep_interval_s: float = 600.0
    # Uploads are refused while the data directory's disk has less free.
    min_free_disk_bytes: int = 1024**3
    # Largest upload accepted, in bytes.
    max_upload_bytes: int = 2 * 1024**3
    # Chunks sent to the ASR service in one request when a job does not say;
    # 0: the batch the ASR service prefers (its status). A job's own batch
    # size is capped at that preference too.
    asr_batch_size: int = 0
    # ASR model workers over all replicas, which sets how many Transcribe
    # calls are kept in flight (two per worker); 0: asked from the ASR
    # services' status.
    asr_workers: int = 0
    # WatchJob streams open at once; they have their own bound, on top of
    # SUBTITLER_GATEWAY_MAX_CONCURRENT_RPCS, so watchers never starve the
    # unary calls (GetJob, CreateJob...).
    max_watchers: int = 1000
    # Live streams (StreamingTranscribe) open at once, and their bounds.
    live: LiveConfig = LiveConfig()
    # Clients' bearer tokens, one "name:token" a line (see gateway.api.auth);
    # None: no authentication.
    tokens_file: Path | None = None
    # Deadline of one call to a peer service, in seconds.
    call_timeout_s: float = 600.0
    # Retries and waiting for stage services.
    retry: RetryPolicy = RetryPolicy()

    def __post_init__(self) -> None:
        for name in ("audio", "vad", "asr", "align", "diarize"):
            try:
                channel_target(getattr(self, f"{name}_target"))
            except ValueError as error:
                raise ConfigError(f"SUBTITLER_{name.upper()}_TARGET: {error}") from None

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        prefix = "SUBTITLER_GATEWAY_"
        return cls(
            server=ServerConfig.from_env(env, prefix, 50051),
            audio_target=env_str(env, "SUBTITLER_AUDIO_TARGET", cls.audio_target),
            vad_target=env_str(env, "SUBTITLER_VAD_TARGET", cls.vad_target),
            asr_target=env_str(env, "SUBTITLER_ASR_TARGET", cls.asr_target),
            align_target=env_str(env, "SUBTITLER_ALIGN_TARGET", cls.align_target),
            diarize_target=env_str(env, "SUBTITLER_DIARIZE_TARGET", cls.diarize_target),
            data_dir=env_path(env, f"{prefix}DATA_DIR", cls.data_dir),
            store=_store_location(env_str(env, f"{prefix}STORE", "")),
            lease_s=env_float(env, f"{prefix}LEASE_S", cls.lease_s, minimum=1.0),
            poll_s=env_float(env, f"{prefix}POLL_S", cls.poll_s, minimum=0.05),
            max_concurrent_jobs=env_int(env, f"{prefix}MAX_CONCURRENT_JOBS", cls.max_concurrent_jobs, minimum=0),
            max_upload_bytes=env_int(env, f"{prefix}MAX_UPLOAD_BYTES", cls.max_upload_bytes, minimum=1),
            asr_batch_size=env_int(env, f"{prefix}ASR_BATCH_SIZE", cls.asr_batch_size, minimum=0),
            asr_workers=env_int(env, f"{prefix}ASR_WORKERS", cls.asr_workers, minimum=0),
            call_timeout_s=env_float(env, f"{prefix}CALL_TIMEOUT_S", cls.call_timeout_s, minimum=1.0),
            max_watchers=env_int(env, f"{prefix}MAX_WATCHERS", cls.max_watchers, minimum=1),
            tokens_file=env_path(env, f"{prefix}TOKENS_FILE", "")
            if env.get(f"{prefix}TOKENS_FILE", "").strip()
            else None,
            max_queued_jobs=env_int(env, f"{prefix}MAX_QUEUED_JOBS", cls.max_queued_jobs, minimum=0),
            max_queue_wait_s=env_float(env, f"{prefix}MAX_QUEUE_WAIT_S", cls.max_queue_wait_s, minimum=0.0),
            retention_s=env_float(env, f"{prefix}RETENTION_S", cls.retention_s, minimum=0.0),
            retention_sweep_interval_s=env_float(
                env, f"{prefix}RETENTION_SWEEP_INTERVAL_S", cls.retention_sweep_interval_s, minimum=0.1
            ),
            min_free_disk_bytes=env_int(env, f"{prefix}MIN_FREE_DISK_BYTES", cls.min_free_disk_bytes, minimum=0),
            retry=RetryPolicy.from_env(env, prefix),
            live=LiveConfig(
                max_streams=env_int(env, f"{prefix}MAX_STREAMS", LiveConfig.max_streams, minimum=0),
                max_stream_duration_s=env_float(
                    env, f"{prefix}MAX_STREAM_DURATION_S", LiveConfig.max_stream_duration_s, minimum=1.0
                ),
                idle_timeout_s=env_float(env, f"{prefix}STREAM_IDLE_TIMEOUT_S", LiveConfig.idle_timeout_s, minimum=0.1),
            ),
        )


def _store_location(value: str) -> str:
    if value and not re.match(r"postgres(ql)?://", value):
        raise ConfigError(
            "SUBTITLER_GATEWAY_STORE must be a postgresql:// URL, or empty for the SQLite file in the data directory"
        )
    return value

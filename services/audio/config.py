"""Audio service configuration, read once from the environment
(variables prefixed SUBTITLER_AUDIO_)."""

from __future__ import annotations

import ipaddress
import socket
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Self

from common.config import ConfigError, env_float, env_int, env_list, env_path, env_str
from common.rpc.server import ServerConfig
from services.audio.decode import DEFAULT_DEMUXERS, DecodeOptions
from services.audio.segments import LeaseOptions

DEFAULT_PORT = 50052
ENV_PREFIX = "SUBTITLER_AUDIO_"


@dataclass(frozen=True)
class AudioConfig:
    server: ServerConfig
    # DecodeFile only reads files under this directory (symbolic links
    # resolved). Default: the working directory at start-up, never "/", so a
    # service started without configuration cannot read the whole disk.
    media_root: Path = field(default_factory=Path.cwd)
    # Longest audio decoded (4 h); longer input fails with RESOURCE_EXHAUSTED.
    max_duration_s: float = 4 * 3600.0
    # Largest upload accepted (2 GiB); more fails with INVALID_ARGUMENT.
    max_upload_bytes: int = 2 * 1024**3
    # Where uploads are written until decoded, then deleted.
    spool_dir: Path = field(default_factory=lambda: Path(tempfile.gettempdir()) / "subtitler-audio-uploads")
    # Lease of decoded audio when a request sets none (1 h), and the longest a request may set (24 h).
    lease_s: float = 3600.0
    max_lease_s: float = 24 * 3600.0
    # How often expired audio is looked for and released.
    lease_sweep_interval_s: float = 5.0
    # Decodes running at once (CPU-bound); more wait their turn.
    decode_workers: int = 2
    # "host:port" put into every handle for consumers that read samples over
    # gRPC. Empty: derived from the bound address (see `handle_target`).
    advertised_target: str = ""
    # FFmpeg demuxers files may be read with (comma-separated); single-file
    # containers only by default: playlists (HLS, DASH) and lists (concat)
    # would read outside the media root.
    allowed_demuxers: tuple[str, ...] = DEFAULT_DEMUXERS
    # URL prefixes live sources (StreamLiveSource) may be opened from
    # (comma-separated, e.g. "https://tv.example/live/,rtsp://10.0.0.5/");
    # none by default: no live source is opened.
    live_sources: tuple[str, ...] = ()
    # Live sources open at once.
    max_live_sources: int = 16

    def __post_init__(self) -> None:
        if self.lease_s > self.max_lease_s:
            raise ConfigError(
                f"{ENV_PREFIX}LEASE_S={self.lease_s:g} is over {ENV_PREFIX}MAX_LEASE_S={self.max_lease_s:g}"
            )
        if not self.media_root.is_dir():
            raise ConfigError(f"{ENV_PREFIX}MEDIA_ROOT={str(self.media_root)!r} is not a directory")

    @property
    def decode_options(self) -> DecodeOptions:
        return DecodeOptions(max_duration_s=self.max_duration_s, allowed_demuxers=self.allowed_demuxers)

    @property
    def lease_options(self) -> LeaseOptions:
        return LeaseOptions(
            default_lease_s=self.lease_s,
            max_lease_s=self.max_lease_s,
            sweep_interval_s=self.lease_sweep_interval_s,
        )

    def handle_target(self, bound_port: int) -> str:
        """The target put into handles: `advertised_target` if set, else
        "localhost:<port>" for a loopback bind, "<hostname>:<port>" for a
        wildcard bind (0.0.0.0, ::), "<host>:<port>" for any other address."""
        if self.advertised_target:
            return self.advertised_target
        host = self.server.host.strip("[]")
        if host in ("", "localhost"):
            return f"localhost:{bound_port}"
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return f"{host}:{bound_port}"
        if address.is_loopback:
            return f"localhost:{bound_port}"
        if address.is_unspecified:
            return f"{socket.gethostname()}:{bound_port}"
        return f"[{host}]:{bound_port}" if address.version == 6 else f"{host}:{bound_port}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Self:
        prefix = ENV_PREFIX
        defaults = cls(server=ServerConfig())
        return cls(
            server=ServerConfig.from_env(env, prefix, DEFAULT_PORT),
            media_root=env_path(env, f"{prefix}MEDIA_ROOT", defaults.media_root).resolve(),
            max_duration_s=env_float(env, f"{prefix}MAX_DURATION_S", defaults.max_duration_s, minimum=1.0),
            max_upload_bytes=env_int(env, f"{prefix}MAX_UPLOAD_BYTES", defaults.max_upload_bytes, minimum=1),
            spool_dir=env_path(env, f"{prefix}SPOOL_DIR", defaults.spool_dir),
            lease_s=env_float(env, f"{prefix}LEASE_S", defaults.lease_s, minimum=1.0),
            max_lease_s=env_float(env, f"{prefix}MAX_LEASE_S", defaults.max_lease_s, minimum=1.0),
            lease_sweep_interval_s=env_float(
                env, f"{prefix}LEASE_SWEEP_INTERVAL_S", defaults.lease_sweep_interval_s, minimum=0.05
            ),
            decode_workers=env_int(env, f"{prefix}DECODE_WORKERS", defaults.decode_workers, minimum=1),
            advertised_target=env_str(env, f"{prefix}ADVERTISED_TARGET", ""),
            allowed_demuxers=env_list(env, f"{prefix}DEMUXERS", DEFAULT_DEMUXERS),
            live_sources=env_list(env, f"{prefix}LIVE_SOURCES", ()),
            max_live_sources=env_int(env, f"{prefix}MAX_LIVE_SOURCES", defaults.max_live_sources, minimum=1),
        )

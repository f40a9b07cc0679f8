"""TLS of every listener and channel, and mutual TLS between services.

A process is a server (its own certificate and key; with a client CA, it
refuses callers without a certificate that CA signed) and a client of its
peers (the CA that signed their certificates; with a client certificate and
key, it presents them). Read once from the environment:

=========================================  ===============================================
`SUBTITLER_<SERVICE>_TLS_CERT_FILE`         this service's certificate chain (PEM)
`SUBTITLER_<SERVICE>_TLS_KEY_FILE`          its private key (PEM)
`SUBTITLER_<SERVICE>_TLS_CLIENT_CA_FILE`    require client certificates signed by this CA
`SUBTITLER_TLS_CA_FILE`                     verify peers' certificates against this CA
`SUBTITLER_TLS_CLIENT_CERT_FILE` / `_KEY`   the certificate this process presents to peers
=========================================  ===============================================

Nothing set: plaintext, as on one trusted host.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Self

import grpc

from common.config import ConfigError


def _optional_file(env: Mapping[str, str], name: str) -> Path | None:
    raw = env.get(name, "").strip()
    if not raw:
        return None
    path = Path(raw).expanduser()
    if not path.is_file():
        raise ConfigError(f"{name}={raw!r} is not a file")
    return path


def _read(path: Path | None) -> bytes | None:
    return path.read_bytes() if path is not None else None


@dataclass(frozen=True)
class TlsConfig:
    """TLS of one process, as a server and as a client of its peers."""

    cert_file: Path | None = None
    key_file: Path | None = None
    client_ca_file: Path | None = None
    ca_file: Path | None = None
    client_cert_file: Path | None = None
    client_key_file: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str) -> Self:
        """Reads `<prefix>TLS_CERT_FILE`, `TLS_KEY_FILE`, `TLS_CLIENT_CA_FILE`
        and the shared `SUBTITLER_TLS_CA_FILE`, `_CLIENT_CERT_FILE`, `_CLIENT_KEY_FILE`."""
        config = cls(
            cert_file=_optional_file(env, f"{prefix}TLS_CERT_FILE"),
            key_file=_optional_file(env, f"{prefix}TLS_KEY_FILE"),
            client_ca_file=_optional_file(env, f"{prefix}TLS_CLIENT_CA_FILE"),
            ca_file=_optional_file(env, "SUBTITLER_TLS_CA_FILE"),
            client_cert_file=_optional_file(env, "SUBTITLER_TLS_CLIENT_CERT_FILE"),
            client_key_file=_optional_file(env, "SUBTITLER_TLS_CLIENT_KEY_FILE"),
        )
        if (config.cert_file is None) != (config.key_file is None):
            raise ConfigError(f"{prefix}TLS_CERT_FILE and {prefix}TLS_KEY_FILE go together: set both or neither")
        if config.client_ca_file is not None and config.cert_file is None:
            raise ConfigError(f"{prefix}TLS_CLIENT_CA_FILE needs {prefix}TLS_CERT_FILE and _KEY_FILE (TLS itself)")
        if (config.client_cert_file is None) != (config.client_key_file is None):
            raise ConfigError("SUBTITLER_TLS_CLIENT_CERT_FILE and SUBTITLER_TLS_CLIENT_KEY_FILE go together")
        if config.client_cert_file is not None and config.ca_file is None:
            raise ConfigError("SUBTITLER_TLS_CLIENT_CERT_FILE needs SUBTITLER_TLS_CA_FILE (TLS to the peers)")
        return config

    def server_credentials(self) -> grpc.ServerCredentials | None:
        """The listener's credentials; None for plaintext."""
        if self.cert_file is None or self.key_file is None:
            return None
        return grpc.ssl_server_credentials(
            [(self.key_file.read_bytes(), self.cert_file.read_bytes())],
            root_certificates=_read(self.client_ca_file),
            require_client_auth=self.client_ca_file is not None,
        )

    def channel_credentials(self) -> grpc.ChannelCredentials | None:
        """The credentials of channels to peers; None for plaintext."""
        if self.ca_file is None:
            return None
        return grpc.ssl_channel_credentials(
            root_certificates=self.ca_file.read_bytes(),
            private_key=_read(self.client_key_file),
            certificate_chain=_read(self.client_cert_file),
        )

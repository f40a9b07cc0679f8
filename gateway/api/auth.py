"""Bearer tokens of the gateway's clients.

With `SUBTITLER_GATEWAY_TOKENS_FILE` set, every call carries
`authorization: Bearer <token>` metadata, the token names a client, and a
client sees, watches, cancels and reads only its own jobs (another client's
job is NOT_FOUND, as if it did not exist). The file holds one `name:token` a
line; blank lines and lines starting with `#` are ignored. Without the file
the gateway is open (for one trusted network, as `make run` is).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from pathlib import Path

import grpc

from common.config import ConfigError
from common.errors import UnauthenticatedError

AUTHORIZATION_KEY = "authorization"
BEARER_PREFIX = "bearer "
# Shortest token accepted: guessing one must be hopeless.
MIN_TOKEN_CHARS = 16


def _digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


class TokenTable:
    """Which client a token names."""

    def __init__(self, clients_by_token: Mapping[str, str]) -> None:
        self._clients = {_digest(token): name for token, name in clients_by_token.items()}

    @classmethod
    def from_file(cls, path: Path) -> TokenTable:
        """Reads `name:token` lines; `ConfigError` names the file and line of a bad one."""
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError as error:
            raise ConfigError(f"SUBTITLER_GATEWAY_TOKENS_FILE={str(path)!r} cannot be read: {error.strerror}") from None
        clients: dict[str, str] = {}
        for number, line in enumerate(lines, start=1):
            text = line.strip()
            if not text or text.startswith("#"):
                continue
            name, separator, token = text.partition(":")
            name, token = name.strip(), token.strip()
            where = f"SUBTITLER_GATEWAY_TOKENS_FILE {path} line {number}"
            if not separator or not name or not token:
                raise ConfigError(f"{where}: expected name:token")
            if len(token) < MIN_TOKEN_CHARS:
                raise ConfigError(f"{where}: the token of {name!r} is shorter than {MIN_TOKEN_CHARS} characters")
            if token in clients:
                raise ConfigError(f"{where}: the token of {name!r} is also {clients[token]!r}'s")
            clients[token] = name
        if not clients:
            raise ConfigError(f"SUBTITLER_GATEWAY_TOKENS_FILE {path} holds no name:token line")
        return cls(clients)

    def client_of(self, token: str) -> str | None:
        """The client a token names, or None; compared in constant time."""
        wanted = _digest(token)
        found = None
        for digest, name in self._clients.items():
            if hmac.compare_digest(digest, wanted):
                found = name
        return found


class Authenticator:
    """Who is calling: the client named by the call's bearer token, or None
    for everyone when the gateway has no tokens."""

    def __init__(self, tokens: TokenTable | None) -> None:
        self._tokens = tokens

    @property
    def enabled(self) -> bool:
        return self._tokens is not None

    def caller(self, context: grpc.aio.ServicerContext) -> str | None:
        """The calling client; `UnauthenticatedError` without a valid token."""
        if self._tokens is None:
            return None
        values = [item.value for item in (context.invocation_metadata() or ()) if item.key == AUTHORIZATION_KEY]
        if not values:
            raise UnauthenticatedError(
                "this gateway needs a token: send 'authorization: Bearer <token>' metadata (CLI: --token)"
            )
        value = str(values[0])
        if not value.lower().startswith(BEARER_PREFIX):
            raise UnauthenticatedError("the authorization metadata must be 'Bearer <token>'")
        client = self._tokens.client_of(value[len(BEARER_PREFIX) :].strip())
        if client is None:
            raise UnauthenticatedError("the token is not valid")
        return client

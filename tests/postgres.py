"""A real PostgreSQL server for the tests: Debian's postgresql-15 (make
test-data installs it), `initdb` in a temporary directory, run as an
unprivileged user (the package's `postgres` when the tests run as root), on
a free port of 127.0.0.1. A missing server fails the test, never skips it."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")
USER = "subtitler"


def _as_owner(command: list[str]) -> list[str]:
    """`command` as the `postgres` user when we are root (the server refuses to run as root)."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", "postgres", "--", *command]


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """Runs a server for the block (its files in a temporary directory of
    its own, which the server's user can reach); yields the URL of its
    `postgres` database."""
    initdb = POSTGRES_BIN / "initdb"
    assert initdb.is_file(), f"{initdb} is missing: install Debian's postgresql-15 (make test-data)"
    directory = Path(tempfile.mkdtemp(prefix="subtitler-postgres-"))
    data = directory / "data"
    sockets = directory / "sockets"
    sockets.mkdir()
    if os.geteuid() == 0:
        for path in (directory, sockets):
            shutil.chown(path, "postgres")
    ctl = str(POSTGRES_BIN / "pg_ctl")
    try:
        subprocess.run(
            _as_owner([str(initdb), "-D", str(data), "-U", USER, "--auth=trust", "--no-sync", "-E", "UTF8"]),
            check=True,
            capture_output=True,
            timeout=120,
        )
        port = _free_port()
        options = f"-p {port} -k {sockets} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
        subprocess.run(
            _as_owner([ctl, "-D", str(data), "-o", options, "-l", str(directory / "log"), "-w", "-t", "60", "start"]),
            check=True,
            capture_output=True,
            timeout=90,
        )
        try:
            yield f"postgresql://{USER}@127.0.0.1:{port}/postgres"
        finally:
            stop = [ctl, "-D", str(data), "-m", "immediate", "-w", "stop"]
            subprocess.run(_as_owner(stop), capture_output=True, timeout=60)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def fresh_database(server_url: str) -> str:
    """A new empty database on the server; its URL."""
    import psycopg

    name = f"test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as connection:
        connection.execute(f'CREATE DATABASE "{name}"')
    return server_url.rsplit("/", 1)[0] + f"/{name}"


# The job stores a gateway test runs against, as pytest parameters.
STORES = ["sqlite", "postgresql"]


def gateway_store_env(kind: str, request: pytest.FixtureRequest) -> dict[str, str]:
    """The gateway settings for a store of `kind` (one of STORES): nothing
    for the SQLite default; for PostgreSQL a fresh database on the session's
    server (`request` is the test's pytest request) and short leases, so a
    restarted gateway takes its earlier run's jobs back quickly."""
    if kind == "sqlite":
        return {}
    url = fresh_database(request.getfixturevalue("postgres"))
    return {"SUBTITLER_GATEWAY_STORE": url, "SUBTITLER_GATEWAY_LEASE_S": "2", "SUBTITLER_GATEWAY_POLL_S": "0.2"}

"""A service started with a bad setting, or on a port in use, ends at once
with one line that says what to change: no traceback."""

from __future__ import annotations

import os
import socket
import subprocess
import sys

import pytest

pytestmark = pytest.mark.integration


def start(module: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", module], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )


@pytest.mark.parametrize(
    ("module", "env", "expected"),
    [
        ("services.vad", {"SUBTITLER_VAD_MAX_LIVE_STREAMS": "abc"}, "SUBTITLER_VAD_MAX_LIVE_STREAMS='abc'"),
        ("gateway", {"SUBTITLER_ASR_TARGET": "dns:///,,x"}, "SUBTITLER_ASR_TARGET"),
        ("services.audio", {"SUBTITLER_AUDIO_MEDIA_ROOT": "/no/such/dir"}, "SUBTITLER_AUDIO_MEDIA_ROOT"),
    ],
)
def test_a_bad_setting_is_one_line(module: str, env: dict[str, str], expected: str) -> None:
    result = start(module, **env)
    assert result.returncode == 2
    assert expected in result.stderr and "configuration error" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_port_in_use_is_one_line() -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        result = start("services.vad", SUBTITLER_VAD_PORT=str(taken.getsockname()[1]))
    assert result.returncode == 1
    assert "SUBTITLER_VAD_PORT" in result.stderr and "Traceback" not in result.stderr

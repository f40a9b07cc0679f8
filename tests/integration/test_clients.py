"""The Node and Go clients (clients/, built by `make clients`) against the
real suite: each uploads a real recording, follows the job and writes an SRT
with the right words; a bad argument is a message and exit code 2."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.integration.suite_fixtures import RunningSuite
from tests.speech import join_prompts, write_wav
from tests.wer import word_error_rate

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
NODE_CLIENT = ROOT / "clients" / "node" / "transcribe.js"
GO_CLIENT = ROOT / ".gopath" / "bin" / "subtitler-go"


def _command(client: str) -> list[str]:
    """The client's command line; fails (never skips) when it is not built."""
    if client == "node":
        node = shutil.which("node")
        assert node, "node is not installed (make test-data)"
        assert (NODE_CLIENT.parent / "node_modules" / "@grpc" / "grpc-js").is_dir(), "run make clients"
        return [node, str(NODE_CLIENT)]
    assert GO_CLIENT.is_file(), "the Go client is not built: run make clients"
    return [str(GO_CLIENT)]


def _srt_text(content: str) -> str:
    return " ".join(
        line for line in content.splitlines() if line and not line.isdigit() and not re.match(r"\d\d:\d\d:", line)
    )


@pytest.mark.parametrize("client", ["node", "go"])
def test_client_transcribes_a_file_to_srt(client: str, suite: RunningSuite, tmp_path: Path) -> None:
    recording = join_prompts(["agent-loginok", "conf-getconfno"], gap_s=0.8)
    media = write_wav(tmp_path / "talk.wav", recording.samples)
    output = tmp_path / "talk.srt"
    gateway = suite.suite.target("gateway")
    flags = ["--gateway", gateway, "-o", str(output)] if client == "node" else ["-gateway", gateway, "-o", str(output)]
    done = subprocess.run(
        [*_command(client), *flags, str(media)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "NODE_NO_WARNINGS": "1"},
    )
    assert done.returncode == 0, done.stderr
    assert "transcribe" in done.stderr and f"wrote {output}" in done.stderr
    content = output.read_text()
    assert content.startswith("1\n") and "-->" in content
    assert word_error_rate(recording.reference_text, _srt_text(content)) <= 0.15, content


@pytest.mark.parametrize("client", ["node", "go"])
def test_client_refuses_a_missing_file_with_a_message(client: str, suite: RunningSuite, tmp_path: Path) -> None:
    gateway = ["--gateway" if client == "node" else "-gateway", suite.suite.target("gateway")]
    for arguments in ([str(tmp_path / "nope.wav")], ["-o", str(tmp_path / "missing" / "x.srt"), __file__]):
        done = subprocess.run([*_command(client), *gateway, *arguments], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2, (arguments, done.stderr)
        assert done.stderr.strip() and "Traceback" not in done.stderr and "at " not in done.stderr.split("\n")[-2]

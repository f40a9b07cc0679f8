from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.suite_fixtures import RunningSuite, our_segments, start_suite

# Limits the suite is started with, small enough to test cheaply.
MAX_DURATION_S = 600
MAX_UPLOAD_BYTES = 8 * 1024 * 1024


@pytest.fixture(scope="session")
def suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSuite]:
    """The five services as separate processes on free ports."""
    before = our_segments()
    root: Path = tmp_path_factory.mktemp("suite")
    yield from start_suite(
        root,
        {
            "SUBTITLER_AUDIO_MAX_DURATION_S": str(MAX_DURATION_S),
            "SUBTITLER_GATEWAY_MAX_UPLOAD_BYTES": str(MAX_UPLOAD_BYTES),
            "SUBTITLER_GATEWAY_CALL_TIMEOUT_S": "300",
        },
    )
    leaked = our_segments() - before
    assert not leaked, f"shared memory left behind after the suite stopped: {sorted(leaked)}"


@pytest.fixture(scope="session")
def whole_window_suite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSuite]:
    """The suite with one ASR worker that decodes every chunk in Whisper's
    whole 30 s window, as faster-whisper does: slower (a small live stream
    limit) and with faster-whisper's habit of skipping speech at the end of
    a short chunk."""
    before = our_segments()
    yield from start_suite(
        tmp_path_factory.mktemp("whole-window"),
        {
            "SUBTITLER_ASR_NUM_WORKERS": "1",
            "SUBTITLER_ASR_CPU_THREADS": "1",
            "SUBTITLER_ASR_SOLO_CPU_THREADS": "1",
            "SUBTITLER_ASR_MIN_WINDOW_S": "30",
        },
    )
    leaked = our_segments() - before
    assert not leaked, f"shared memory left behind after the suite stopped: {sorted(leaked)}"

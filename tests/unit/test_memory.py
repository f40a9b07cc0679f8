"""The malloc arena cap every service applies at start."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from common.memory import DEFAULT_MALLOC_ARENAS, limit_malloc_arenas


def test_arenas_are_capped_unless_glibcs_own_setting_or_zero_says_otherwise() -> None:
    # In a child process: the cap is process-wide.
    code = (
        "from common.memory import limit_malloc_arenas as cap; "
        "print(cap({}), cap({'SUBTITLER_MALLOC_ARENAS': '4'}), cap({'SUBTITLER_MALLOC_ARENAS': 'many'}))"
    )
    output = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        cwd=Path(__file__).resolve().parents[2],
    )
    assert output.stdout.split() == [str(DEFAULT_MALLOC_ARENAS), "4", str(DEFAULT_MALLOC_ARENAS)]
    assert limit_malloc_arenas({"MALLOC_ARENA_MAX": "1"}) is None
    assert limit_malloc_arenas({"SUBTITLER_MALLOC_ARENAS": "0"}) is None

"""What the tests of a job's units share: a real SQLite job store of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

from gateway.store.job_store import JobStore


@pytest.fixture
def store(tmp_path: Path) -> JobStore:
    return JobStore(tmp_path / "jobs.sqlite3")

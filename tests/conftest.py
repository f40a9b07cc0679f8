from __future__ import annotations

from collections.abc import Iterator

import pytest
import structlog

from tests.postgres import postgres_server
from tests.speech import missing_test_recordings


def pytest_configure() -> None:
    # Services started in-process log through structlog; send it to the
    # standard logging module so pytest captures it with everything else.
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.stdlib.render_to_log_kwargs],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )


def pytest_sessionstart(session: pytest.Session) -> None:
    # Tests need real speech: a machine without it fails loudly instead of skipping them.
    missing = missing_test_recordings()
    if missing:
        raise pytest.UsageError(
            "test recordings are missing: " + ", ".join(str(path) for path in missing) + "; run `make test-data`"
        )


@pytest.fixture(scope="session")
def postgres() -> Iterator[str]:
    """One real PostgreSQL server for the whole run (started when a test
    first needs it); each test takes a fresh database on it."""
    with postgres_server() as url:
        yield url

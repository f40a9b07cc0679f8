from __future__ import annotations

import pytest
import structlog

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

from __future__ import annotations

import structlog


def pytest_configure() -> None:
    # Services started in-process log through structlog; send it to the
    # standard logging module so pytest captures it with everything else.
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, structlog.stdlib.render_to_log_kwargs],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
    )

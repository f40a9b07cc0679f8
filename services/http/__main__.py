"""`python -m services.http`: the HTTP front (OpenAI's transcription API), configured by SUBTITLER_HTTP_*."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
from pathlib import Path

from aiohttp import web

from common.config import ConfigError
from common.machine.memory import tune_malloc
from common.rpc.logs import configure_logging
from common.rpc.server import ignore_late_signals
from services.http.app import HttpFront
from services.http.config import HttpConfig


async def serve(config: HttpConfig, port_file: Path | None) -> None:
    front = HttpFront(
        config.gateway_target, max_upload_bytes=config.max_upload_bytes, job_timeout_s=config.job_timeout_s
    )
    runner = web.AppRunner(front.app(), access_log=logging.getLogger("services.http.access"))
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    logging.getLogger(__name__).info("listening on http://%s:%d", config.host, port)
    if port_file is not None:
        await asyncio.to_thread(port_file.write_text, str(port))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await runner.cleanup()
    ignore_late_signals(loop)


def main() -> None:
    try:
        config = HttpConfig.from_env(os.environ)
    except ConfigError as error:
        print(f"http: configuration error: {error}", file=sys.stderr)  # noqa: T201
        sys.exit(2)
    tune_malloc(os.environ)
    configure_logging("http", level=os.environ.get("SUBTITLER_LOG_LEVEL", "INFO"))
    port_file = os.environ.get("SUBTITLER_HTTP_PORT_FILE", "").strip()
    try:
        asyncio.run(serve(config, Path(port_file) if port_file else None))
    except OSError as error:
        print(  # noqa: T201
            f"http: cannot listen on {config.host}:{config.port}: {error.strerror}; choose another SUBTITLER_HTTP_PORT",
            file=sys.stderr,
        )
        sys.exit(1)


if __name__ == "__main__":
    main()

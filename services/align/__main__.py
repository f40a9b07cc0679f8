"""`python -m services.align`: the align service, configured by SUBTITLER_ALIGN_* variables."""

from __future__ import annotations

import os

from common.server import run_service
from services.align.config import AlignConfig
from services.align.server import create


def main() -> None:
    config = AlignConfig.from_env(os.environ)
    run_service("align", config.server, lambda: create(config))


if __name__ == "__main__":
    main()

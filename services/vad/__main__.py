"""`python -m services.vad`: the VAD service, configured by SUBTITLER_VAD_* variables."""

from __future__ import annotations

import os

from common.server import run_service
from services.vad.config import VadConfig
from services.vad.server import create


def main() -> None:
    config = VadConfig.from_env(os.environ)
    run_service("vad", config.server, lambda: create(config))


if __name__ == "__main__":
    main()

"""`python -m services.asr`: the ASR service, configured by SUBTITLER_ASR_* variables."""

from __future__ import annotations

import os

from common.server import run_service
from services.asr.config import AsrConfig
from services.asr.server import create


def main() -> None:
    config = AsrConfig.from_env(os.environ)
    run_service("asr", config.server, lambda: create(config))


if __name__ == "__main__":
    main()

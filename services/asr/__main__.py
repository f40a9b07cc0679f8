"""`python -m services.asr`: the ASR service, configured by SUBTITLER_ASR_* variables."""

from __future__ import annotations

import os

from common.rpc.server import service_main
from services.asr.config import AsrConfig
from services.asr.server import create


def main() -> None:
    service_main("asr", lambda: AsrConfig.from_env(os.environ), create)


if __name__ == "__main__":
    main()

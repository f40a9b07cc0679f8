"""`python -m services.vad`: the VAD service, configured by SUBTITLER_VAD_* variables."""

from __future__ import annotations

import os

from common.rpc.server import service_main
from services.vad.config import VadConfig
from services.vad.server import create


def main() -> None:
    service_main("vad", lambda: VadConfig.from_env(os.environ), create)


if __name__ == "__main__":
    main()

"""`python -m services.diarize`: the diarize service, configured by SUBTITLER_DIARIZE_* variables."""

from __future__ import annotations

import os

from common.rpc.server import service_main
from services.diarize.config import DiarizeConfig
from services.diarize.server import create


def main() -> None:
    service_main("diarize", lambda: DiarizeConfig.from_env(os.environ), create)


if __name__ == "__main__":
    main()

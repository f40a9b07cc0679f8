"""`python -m services.align`: the align service, configured by SUBTITLER_ALIGN_* variables."""

from __future__ import annotations

import os

from common.rpc.server import service_main
from services.align.config import AlignConfig
from services.align.server import create


def main() -> None:
    service_main("align", lambda: AlignConfig.from_env(os.environ), create)


if __name__ == "__main__":
    main()

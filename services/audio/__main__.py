"""`python -m services.audio`: the audio service."""

import os

from common.rpc.server import service_main
from services.audio.config import AudioConfig
from services.audio.server import create


def main() -> None:
    service_main("audio", lambda: AudioConfig.from_env(os.environ), create)


if __name__ == "__main__":
    main()

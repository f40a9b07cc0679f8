"""`python -m services.audio`: the audio service."""

import os

from common.server import run_service
from services.audio.config import AudioConfig
from services.audio.server import create


def main() -> None:
    config = AudioConfig.from_env(os.environ)
    run_service("audio", config.server, lambda: create(config))


if __name__ == "__main__":
    main()

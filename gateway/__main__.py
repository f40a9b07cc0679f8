"""`python -m gateway`: the public API of the suite."""

import os

from common.server import run_service
from gateway.config import GatewayConfig
from gateway.server import create


def main() -> None:
    config = GatewayConfig.from_env(os.environ)
    run_service("gateway", config.server, lambda: create(config))


if __name__ == "__main__":
    main()

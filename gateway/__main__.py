"""`python -m gateway`: the public API of the suite."""

import os

from common.rpc.server import service_main
from gateway.config import GatewayConfig
from gateway.server import create


def main() -> None:
    service_main("gateway", lambda: GatewayConfig.from_env(os.environ), create)


if __name__ == "__main__":
    main()

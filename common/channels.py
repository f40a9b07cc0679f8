"""Client channels to peer services.

A target is one address ("localhost:50054") or several, comma-separated
("10.0.0.5:50054,10.0.0.6:50054"), or any gRPC target URI ("dns:///asr:50054").
The channel balances over every address with gRPC's round_robin policy,
checks each replica's `grpc.health.v1` status (client-side health checking),
and retries UNAVAILABLE calls as declared in its service config.
"""

from __future__ import annotations

import json

import grpc

# Importing the health stubs registers the client-side health checker.
from grpc_health.v1 import health_pb2 as _health_pb2  # noqa: F401


def channel_target(targets: str) -> str:
    """The gRPC target for one address, a comma-separated list or a URI."""
    addresses = [item.strip() for item in targets.split(",") if item.strip()]
    if not addresses:
        raise ValueError("empty target")
    if len(addresses) == 1:
        return addresses[0]
    # The ipv4/ipv6 schemes take lists of literal addresses; names need dns:///.
    scheme = "ipv6" if all(a.startswith("[") for a in addresses) else "ipv4"
    return f"{scheme}:{','.join(addresses)}"


def service_config(service_name: str, *, max_attempts: int = 4) -> str:
    """Service config: round_robin, health checks of `service_name`, and
    retries of UNAVAILABLE only (other codes are the caller's to judge)."""
    return json.dumps(
        {
            "loadBalancingConfig": [{"round_robin": {}}],
            "healthCheckConfig": {"serviceName": service_name},
            "methodConfig": [
                {
                    "name": [{"service": service_name}],
                    "retryPolicy": {
                        "maxAttempts": max_attempts,
                        "initialBackoff": "0.2s",
                        "maxBackoff": "3s",
                        "backoffMultiplier": 2,
                        "retryableStatusCodes": ["UNAVAILABLE"],
                    },
                }
            ],
        }
    )


def open_channel(targets: str, service_name: str, *, max_message_bytes: int = 64 * 1024 * 1024) -> grpc.aio.Channel:
    """An asyncio channel to the replicas of `service_name` at `targets`."""
    return grpc.aio.insecure_channel(
        channel_target(targets),
        options=[
            ("grpc.service_config", service_config(service_name)),
            ("grpc.enable_retries", 1),
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
            ("grpc.keepalive_time_ms", 30_000),
        ],
    )

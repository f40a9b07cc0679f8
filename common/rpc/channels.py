"""Client channels to peer services.

A target is one address ("localhost:50054") or several, comma-separated
("10.0.0.5:50054,10.0.0.6:50054"), or any gRPC target URI ("dns:///asr:50054").
The channel balances over every address with gRPC's round_robin policy,
checks each replica's `grpc.health.v1` status (client-side health checking),
and retries UNAVAILABLE calls as declared in its service config.
"""

from __future__ import annotations

import ipaddress
import json

import grpc

# Importing the health stubs registers the client-side health checker.
from grpc_health.v1 import health_pb2 as _health_pb2  # noqa: F401


def channel_target(targets: str) -> str:
    """The gRPC target for one address, a comma-separated list or a URI.

    A list must name literal IP addresses, all IPv4 or all IPv6 ("localhost"
    counts as 127.0.0.1): gRPC's ipv4:/ipv6: schemes take nothing else. Replicas
    behind one DNS name are reached with "dns:///name:port". ValueError says
    what is wrong with anything else."""
    addresses = [item.strip() for item in targets.split(",") if item.strip()]
    if not addresses:
        raise ValueError("empty target")
    if len(addresses) == 1:
        return addresses[0]
    literal = []
    for address in addresses:
        host, separator, port = address.rpartition(":")
        if not separator or not port.isdigit():
            raise ValueError(f"{address!r} in the list {targets!r} is not host:port")
        host = "127.0.0.1" if host == "localhost" else host
        try:
            ipaddress.ip_address(host.strip("[]"))
        except ValueError:
            raise ValueError(
                f"{host!r} in the list {targets!r} is not an IP address: list replicas by address, or give one"
                " name that resolves to all of them as dns:///NAME:PORT"
            ) from None
        literal.append(f"{host}:{port}")
    families = {address.startswith("[") for address in literal}
    if len(families) > 1:
        raise ValueError(f"the list {targets!r} mixes IPv4 and IPv6 addresses")
    return f"{'ipv6' if families == {True} else 'ipv4'}:{','.join(literal)}"


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


def open_channel(
    targets: str,
    service_name: str,
    *,
    max_message_bytes: int = 64 * 1024 * 1024,
    credentials: grpc.ChannelCredentials | None = None,
) -> grpc.aio.Channel:
    """An asyncio channel to the replicas of `service_name` at `targets`
    (TLS with `credentials`, plaintext without)."""
    target = channel_target(targets)
    options = [
        ("grpc.service_config", service_config(service_name)),
        ("grpc.enable_retries", 1),
        ("grpc.max_receive_message_length", max_message_bytes),
        ("grpc.max_send_message_length", max_message_bytes),
        ("grpc.keepalive_time_ms", 30_000),
    ]
    if credentials is not None:
        return grpc.aio.secure_channel(target, credentials, options=options)
    return grpc.aio.insecure_channel(target, options=options)

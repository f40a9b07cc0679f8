"""How a service tells a caller when to try again, in one place for the
servers that send the hint (common.rpc.server) and the clients that read it (the
gateway's stage calls, the CLI's batch). No heavy imports: the CLI loads it."""

from __future__ import annotations

import contextlib

import grpc

# Trailing metadata of a RESOURCE_EXHAUSTED: seconds after which a retry can succeed.
RETRY_AFTER_KEY = "retry-after-s"
# What gRPC itself says when a server is at its maximum_concurrent_rpcs.
GRPC_CONCURRENCY_LIMIT = "Concurrent RPC limit exceeded"


def retry_after_s(error: grpc.RpcError) -> float | None:
    """The retry hint a service gave with RESOURCE_EXHAUSTED, if any (a
    blocking stub's error or grpc.aio's AioRpcError)."""
    for key, value in error.trailing_metadata() or ():
        if key == RETRY_AFTER_KEY:
            with contextlib.suppress(ValueError):
                return float(value)
    return None


def is_busy(error: grpc.RpcError) -> bool:
    """Whether a RESOURCE_EXHAUSTED is a service at capacity (it says when to
    retry, or gRPC refused for too many calls) rather than a limit of the input."""
    return retry_after_s(error) is not None or GRPC_CONCURRENCY_LIMIT in (error.details() or "")

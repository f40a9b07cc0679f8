"""Services started in this process, for integration tests that call them
through real stubs: an event loop in a thread that runs the servers, a wait
for a service's health to turn SERVING, and audio put into shared memory as
the audio service would hand it over."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

import grpc
import numpy as np
import numpy.typing as npt
from grpc_health.v1 import health_pb2, health_pb2_grpc

from common.audio.access import AudioRef, audio_ref_to_proto
from common.audio.shm import SharedSamples, host_id
from common.rpc.server import RunningServer
from subtitler.common.v1 import common_pb2
from tests.speech import SAMPLE_RATE_HERTZ

_Result = TypeVar("_Result")


class ServerLoop:
    """An event loop in a thread running servers, so tests can use blocking stubs."""

    def __init__(self, thread_name: str = "servers") -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name=thread_name, daemon=True)
        self.thread.start()
        self.servers: list[RunningServer] = []

    def call(self, coroutine: Coroutine[Any, Any, _Result], timeout_s: float = 60.0) -> _Result:
        """Runs `coroutine` on the loop and returns its result."""
        return asyncio.run_coroutine_threadsafe(coroutine, self.loop).result(timeout_s)

    def start(self, create: Coroutine[Any, Any, RunningServer]) -> RunningServer:
        """Runs a service's `create(config)` on the loop; `stop` stops the server."""
        running = self.call(create, timeout_s=120.0)
        self.servers.append(running)
        return running

    def stop(self, grace_s: float = 0.0) -> None:
        """Stops the servers, last started first, then the loop."""
        for running in reversed(self.servers):
            self.call(running.stop(grace_s))
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


def wait_serving(health: health_pb2_grpc.HealthStub, service_name: str, timeout_s: float = 120.0) -> None:
    """Returns once `service_name` is SERVING; fails the test after `timeout_s`."""
    request = health_pb2.HealthCheckRequest(service=service_name)
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if health.Check(request, timeout=5).status == health_pb2.HealthCheckResponse.SERVING:
                return
        except grpc.RpcError as error:  # NOT_FOUND: no status set yet
            assert error.code() == grpc.StatusCode.NOT_FOUND, error
        assert time.monotonic() < deadline, f"{service_name} never became SERVING"
        time.sleep(0.05)


@contextmanager
def audio_in_shared_memory(
    samples: npt.NDArray[np.float32], audio_id: str = "test-audio"
) -> Iterator[common_pb2.AudioHandle]:
    """A handle to 16 kHz `samples` in a shared-memory segment on this host,
    unlinked when the block ends."""
    with SharedSamples.create(samples.size) as segment:
        segment.write(0, samples)
        yield audio_ref_to_proto(AudioRef(audio_id, segment.name, samples.size, SAMPLE_RATE_HERTZ, host_id(), None))

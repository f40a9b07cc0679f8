"""What every stage service (VAD, ASR, align, diarize) does at start on top
of `common.rpc.server`: its own service served beside the status service,
its audio reader and model threads released on stop, and health SERVING once
its models are loaded and warmed up.

A stage service's `server.py` builds its engine and servicer, then::

    running = await start_stage_server(
        config.server, "vad", (vad_pb2_grpc.add_VadServiceServicer_to_server, servicer, SERVICE_NAME),
        StatusServicer(report, figures), audio_reader, executor, load=load_and_calibrate,
    )
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Protocol

from common.rpc.server import Registration, RunningServer, ServerConfig, create_server
from common.rpc.status import StatusServicer, status_registration


class Closable(Protocol):
    """What a stage service reads its audio with, as far as its stop is
    concerned: `common.audio.access.AudioReader`, which sits above
    common.rpc and so is not imported here."""

    async def close(self) -> None: ...


async def start_stage_server(
    config: ServerConfig,
    name: str,
    service: Registration,
    status: StatusServicer,
    audio_reader: Closable,
    executor: ThreadPoolExecutor,
    *,
    load: Callable[[], Awaitable[None]],
    close_first: Callable[[], Awaitable[None]] | None = None,
) -> RunningServer:
    """Creates and starts the server of `service` and `status`; health turns
    SERVING once `load` succeeds (`RunningServer.serve_when_ready`).

    On stop: `close_first` (if any), then the audio reader closes and the
    executor shuts down, cancelling what has not started.
    """
    running = create_server(config, name, [service, status_registration(status)])

    async def release() -> None:
        if close_first is not None:
            await close_first()
        await audio_reader.close()
        executor.shutdown(wait=False, cancel_futures=True)

    running.on_stop.append(release)
    await running.start()
    running.serve_when_ready(load)
    return running

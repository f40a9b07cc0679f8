"""Builds the gateway: store, event hub, peer channels, scheduler, servicer."""

from __future__ import annotations

import asyncio

from common.channels import open_channel
from common.server import RunningServer, create_server
from gateway.config import GatewayConfig
from gateway.events import EventHub
from gateway.pipeline import Peers
from gateway.scheduler import JobScheduler
from gateway.servicer import GatewayServicer
from gateway.store import JobStore
from subtitler.align.v1 import align_pb2, align_pb2_grpc
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc
from subtitler.audio.v1 import audio_pb2, audio_pb2_grpc
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from subtitler.vad.v1 import vad_pb2, vad_pb2_grpc


def _service_name(module: object, service: str) -> str:
    return module.DESCRIPTOR.services_by_name[service].full_name  # type: ignore[attr-defined]


async def create(config: GatewayConfig) -> RunningServer:
    """Starts the gateway on `config.server` and recovers unfinished jobs."""
    store = JobStore(config.data_dir / "jobs.sqlite3")
    events = EventHub(store)
    channels = [
        open_channel(config.audio_target, _service_name(audio_pb2, "AudioService")),
        open_channel(config.vad_target, _service_name(vad_pb2, "VadService")),
        open_channel(config.asr_target, _service_name(asr_pb2, "AsrService")),
        open_channel(config.align_target, _service_name(align_pb2, "AlignService")),
    ]
    peers = Peers(
        audio=audio_pb2_grpc.AudioServiceStub(channels[0]),
        vad=vad_pb2_grpc.VadServiceStub(channels[1]),
        asr=asr_pb2_grpc.AsrServiceStub(channels[2]),
        align=align_pb2_grpc.AlignServiceStub(channels[3]),
    )
    scheduler = JobScheduler(store, events, peers, config)
    servicer = GatewayServicer(store, events, scheduler, config.max_upload_bytes)
    running = create_server(
        config.server,
        "gateway",
        [
            (
                gateway_pb2_grpc.add_GatewayServiceServicer_to_server,
                servicer,
                _service_name(gateway_pb2, "GatewayService"),
            )
        ],
    )

    async def stop_jobs_and_close() -> None:
        sweeper.cancel()
        await scheduler.shutdown()
        for channel in channels:
            await channel.close()
        store.close()

    running.on_stop.append(stop_jobs_and_close)
    # Recovered before the server takes calls: a CancelJob cannot race it.
    await scheduler.recover()
    await running.start()
    sweeper = asyncio.get_running_loop().create_task(scheduler.sweep_forever())
    await running.set_serving(True)
    return running

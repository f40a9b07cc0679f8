"""Builds the audio service: segment store, engine, decode workers, servicer."""

from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.audio.access import AUDIO_SERVICE_NAME
from common.audio.shm import host_id
from common.rpc import metrics
from common.rpc.machine_plan import plan_machine_in_thread
from common.rpc.server import RunningServer, create_server
from common.rpc.status import LoadFigures, SettingChoice, StatusServicer, status_registration
from services.audio.config import AudioConfig
from services.audio.engine import AudioEngine
from services.audio.segments import SegmentStore
from services.audio.servicer import AudioServicer
from services.audio.spool import make_spool_dir
from subtitler.audio.v1 import audio_pb2_grpc


async def create(config: AudioConfig) -> RunningServer:
    """Starts the audio service on `config.server`; SERVING at once (no model).

    Stopping it waits for running decodes, then releases every stored audio.
    """
    make_spool_dir(config.spool_dir)
    store = SegmentStore(host_id=host_id(), audio_service_target="", options=config.lease_options)
    engine = AudioEngine(
        store,
        media_root=config.media_root,
        spool_dir=config.spool_dir,
        max_upload_bytes=config.max_upload_bytes,
        decode_options=config.decode_options,
    )
    decode_executor = ThreadPoolExecutor(config.decode_workers, thread_name_prefix="audio-decode")
    servicer = AudioServicer(
        engine, decode_executor, live_sources=config.live_sources, max_live_sources=config.max_live_sources
    )
    plan = await plan_machine_in_thread("audio", config.server.cpu_affinity, [config.spool_dir, Path("/dev/shm")])
    report = plan.report(
        [SettingChoice("SUBTITLER_AUDIO_DECODE_WORKERS", str(config.decode_workers), "environment or default")]
    )
    running = create_server(
        config.server,
        "audio",
        [
            (audio_pb2_grpc.add_AudioServiceServicer_to_server, servicer, AUDIO_SERVICE_NAME),
            status_registration(StatusServicer(report, lambda: LoadFigures(capacity=config.decode_workers))),
        ],
    )
    metrics.gauge("audio", "shared_memory_bytes", "Shared memory the decoded audio holds", store.held_bytes)
    metrics.gauge("audio", "audio_stored", "Decoded audio held in shared memory", lambda: float(len(store)))
    # Known only now that the port is bound (port 0 in tests).
    store.audio_service_target = config.handle_target(running.port)

    async def stop_decoding_and_release() -> None:
        # Cancelled RPCs told their decodes to stop; wait for the workers to
        # finish, then free everything, including what they stored last.
        await asyncio.get_running_loop().run_in_executor(None, decode_executor.shutdown)
        store.close()

    running.on_stop.append(stop_decoding_and_release)
    store.start()
    await running.start()
    await running.set_serving(True)
    return running

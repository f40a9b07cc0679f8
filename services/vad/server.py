"""Builds and starts the VAD server: model, engine, servicer, health."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from concurrent.futures import ThreadPoolExecutor

from common.audio.access import AudioReader
from common.errors import NotFoundError
from common.machine.capacity import WorkRate, slowest_on_every_worker
from common.rpc.admission import AdmissionLimit
from common.rpc.machine_plan import plan_machine
from common.rpc.server import RunningServer, create_server
from common.rpc.status import LoadFigures, MeasuredFigures, StatusServicer, choose, status_registration
from services.vad.config import VadConfig
from services.vad.engine import CALIBRATION_AUDIO_S, SpeechDetector, bundled_model_path
from services.vad.servicer import SERVICE_NAME, VadServicer
from subtitler.vad.v1 import vad_pb2_grpc

logger = logging.getLogger(__name__)


async def create(config: VadConfig) -> RunningServer:
    """Starts the server; health turns SERVING once the ONNX model is loaded
    and a calibrated detection has run on every slot at once (what the
    status reports the slots get through, then updated by every detection).

    A missing model fails here, at start, not at the first request.
    """
    model_path = config.model_path or bundled_model_path()
    if not model_path.is_file():
        raise NotFoundError(f"VAD model {model_path} does not exist")
    loop = asyncio.get_running_loop()
    plan = await loop.run_in_executor(None, plan_machine, "vad", config.server.cpu_affinity)
    concurrent, concurrent_choice = choose(
        "SUBTITLER_VAD_MAX_CONCURRENT_DETECTIONS",
        config.max_concurrent_detections,
        plan.tuning.vad_max_concurrent,
        plan.tuning.reason("vad_max_concurrent"),
    )
    detector = SpeechDetector(
        model_path, intra_op_threads=config.intra_op_threads, block_duration_s=config.block_duration_s
    )
    executor = ThreadPoolExecutor(max_workers=int(concurrent), thread_name_prefix="vad-model")
    audio_reader = AudioReader(config.audio_target, credentials=config.server.tls.channel_credentials())
    admission = AdmissionLimit(
        int(concurrent), config.max_queued_detections, config.retry_after_s, work_name="detections"
    )
    # Seconds of a slot per second of audio searched: the warm-up's, then every detection's.
    rate = WorkRate()
    servicer = VadServicer(
        detector,
        audio_reader,
        admission,
        executor,
        max_live_streams=config.max_live_streams,
        retry_after_s=config.retry_after_s,
        rate=rate,
    )
    report = plan.report([concurrent_choice])
    # Live streams hold an RPC each for as long as they run: room of their own.
    server_config = dataclasses.replace(
        config.server, max_concurrent_rpcs=config.server.max_concurrent_rpcs + config.max_live_streams
    )
    running = create_server(
        server_config,
        "vad",
        [
            (vad_pb2_grpc.add_VadServiceServicer_to_server, servicer, SERVICE_NAME),
            status_registration(
                StatusServicer(
                    report,
                    lambda: LoadFigures.of(
                        admission,
                        live_streams=servicer.live_streams,
                        measured=MeasuredFigures.of_audio_rate(rate, int(concurrent)),
                    ),
                )
            ),
        ],
    )

    async def release() -> None:
        await audio_reader.close()
        executor.shutdown(wait=False, cancel_futures=True)

    running.on_stop.append(release)
    await running.start()

    async def load_model() -> None:
        await loop.run_in_executor(executor, detector.load)
        busy_s = await loop.run_in_executor(None, slowest_on_every_worker, detector.calibrate, int(concurrent))
        rate.prime(CALIBRATION_AUDIO_S, busy_s)
        logger.info(
            "calibrated: %g s of audio searched in %.3f s on each of %s slots at once (%.0f s of audio a second)",
            CALIBRATION_AUDIO_S,
            busy_s,
            concurrent,
            rate.units_per_second(int(concurrent)),
        )

    running.serve_when_ready(load_model)
    logger.info(
        "VAD service: model %s, %s detections at once, %d waiting, %g s blocks",
        model_path,
        concurrent,
        config.max_queued_detections,
        config.block_duration_s,
    )
    return running

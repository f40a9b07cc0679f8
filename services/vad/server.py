"""Builds and starts the VAD server: model, engine, servicer, health."""

from __future__ import annotations

import asyncio
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from common.audio.access import AudioReader
from common.errors import NotFoundError
from common.machine.capacity import WorkRate, calibrate
from common.rpc.admission import AdmissionLimit
from common.rpc.machine_plan import plan_machine_in_thread
from common.rpc.server import RunningServer
from common.rpc.stage import start_stage_server
from common.rpc.status import LoadFigures, MeasuredFigures, StatusServicer, choose
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
    model_path = _model_path(config)
    plan = await plan_machine_in_thread("vad", config.server.cpu_affinity)
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
    status = StatusServicer(report, functools.partial(_figures, admission, servicer, rate, int(concurrent)))
    running = await start_stage_server(
        # Live streams hold an RPC each for as long as they run: room of their own.
        config.server.with_more_rpcs(config.max_live_streams),
        "vad",
        (vad_pb2_grpc.add_VadServiceServicer_to_server, servicer, SERVICE_NAME),
        status,
        audio_reader,
        executor,
        load=functools.partial(_load_and_calibrate, detector, executor, rate, int(concurrent)),
    )
    logger.info(
        "VAD service: model %s, %s detections at once, %d waiting, %g s blocks",
        model_path,
        concurrent,
        config.max_queued_detections,
        config.block_duration_s,
    )
    return running


def _model_path(config: VadConfig) -> Path:
    """The ONNX model the config names, else the bundled one; NotFoundError if it is not there."""
    model_path = config.model_path or bundled_model_path()
    if not model_path.is_file():
        raise NotFoundError(f"VAD model {model_path} does not exist")
    return model_path


def _figures(admission: AdmissionLimit, servicer: VadServicer, rate: WorkRate, concurrent: int) -> LoadFigures:
    """What the status reports now: detections running and waiting, live streams, the measured rate."""
    return LoadFigures.of(
        admission,
        live_streams=servicer.live_streams,
        measured=MeasuredFigures.of_audio_rate(rate, concurrent),
    )


async def _load_and_calibrate(
    detector: SpeechDetector, executor: ThreadPoolExecutor, rate: WorkRate, concurrent: int
) -> None:
    """Loads the model on a model thread, then primes `rate` with a
    calibrated detection run on each of the `concurrent` slots at once."""
    await asyncio.get_running_loop().run_in_executor(executor, detector.load)
    busy_s = await calibrate(rate, detector.calibrate, CALIBRATION_AUDIO_S, concurrent)
    logger.info(
        "calibrated: %g s of audio searched in %.3f s on each of %s slots at once (%.0f s of audio a second)",
        CALIBRATION_AUDIO_S,
        busy_s,
        concurrent,
        rate.units_per_second(concurrent),
    )

"""Builds and starts the diarize server: models (built from the weights
package on first start), engine, servicer, status, health."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from common.audio.access import AudioReader
from common.machine.capacity import WorkRate, calibrate
from common.rpc.admission import AdmissionLimit
from common.rpc.machine_plan import plan_machine_in_thread
from common.rpc.server import RunningServer
from common.rpc.stage import start_stage_server
from common.rpc.status import LoadFigures, MeasuredFigures, StatusServicer, choose
from services.diarize.config import DiarizeConfig
from services.diarize.engine import CALIBRATION_SPEECH_S, Diarizer
from services.diarize.servicer import SERVICE_NAME, DiarizeServicer
from services.diarize.weights import build_models, package_root
from subtitler.diarize.v1 import diarize_pb2_grpc

logger = logging.getLogger(__name__)


async def create(config: DiarizeConfig) -> RunningServer:
    """Starts the server; health turns SERVING once the models are loaded and
    a calibrated diarization has run on every slot at once (what the status
    reports the slots get through, then updated by every diarization). A
    missing weights package fails here, at start."""
    loop = asyncio.get_running_loop()
    plan = await plan_machine_in_thread("diarize", config.server.cpu_affinity, [config.cache_dir])
    package_root()  # fails at start, with what to install, if the weights are missing
    reason = "a job diarizes while it transcribes: leave the other cores to the ASR"
    concurrent, concurrent_choice = choose("SUBTITLER_DIARIZE_MAX_CONCURRENT", config.max_concurrent, 1, reason)
    threads, threads_choice = choose("SUBTITLER_DIARIZE_THREADS", config.threads, 1, reason)
    executor = ThreadPoolExecutor(max_workers=int(concurrent), thread_name_prefix="diarize")
    audio_reader = AudioReader(config.audio_target, credentials=config.server.tls.channel_credentials())
    admission = AdmissionLimit(int(concurrent), config.max_queued, config.retry_after_s, work_name="diarizations")
    loaded: list[Diarizer] = []
    # Seconds of a slot per second of audio diarized: the warm-up's, then every diarization's.
    rate = WorkRate()
    servicer = DiarizeServicer(lambda: loaded[0] if loaded else None, audio_reader, admission, executor, rate)
    report = plan.report([concurrent_choice, threads_choice])

    def figures() -> LoadFigures:
        return LoadFigures.of(admission, measured=MeasuredFigures.of_audio_rate(rate, int(concurrent)))

    def load() -> Diarizer:
        models = build_models(config.cache_dir)
        return Diarizer(models.segmentation, models.embedding, threads=int(threads))

    async def load_models() -> None:
        diarizer = await loop.run_in_executor(executor, load)
        busy_s = await calibrate(rate, diarizer.calibrate, CALIBRATION_SPEECH_S, int(concurrent))
        logger.info(
            "calibrated: %g s of speech diarized in %.2f s on each of %s slots at once (%.0f s of audio a second)",
            CALIBRATION_SPEECH_S,
            busy_s,
            concurrent,
            rate.units_per_second(int(concurrent)),
        )
        loaded.append(diarizer)

    running = await start_stage_server(
        config.server,
        "diarize",
        (diarize_pb2_grpc.add_DiarizeServiceServicer_to_server, servicer, SERVICE_NAME),
        StatusServicer(report, figures),
        audio_reader,
        executor,
        load=load_models,
    )
    logger.info(
        "diarize service: %s diarizations at once of %s threads, %d waiting", concurrent, threads, config.max_queued
    )
    return running

"""Builds and starts the ASR server: models, engine, servicer, health."""

from __future__ import annotations

import asyncio
import logging
from concurrent.futures import ThreadPoolExecutor

from common.admission import AdmissionLimit
from common.audio_access import AudioReader
from common.server import RunningServer, create_server
from common.whisper_models import ModelCache, resolve_device, resolve_model_path
from services.asr.config import AsrConfig
from services.asr.engine import Transcriber
from services.asr.servicer import SERVICE_NAME, AsrServicer
from subtitler.asr.v1 import asr_pb2_grpc

logger = logging.getLogger(__name__)


def max_concurrent_transcriptions(config: AsrConfig) -> int:
    """The configured limit, or 1 on CPU (one transcription already uses
    every core) and 2 on CUDA."""
    if config.max_concurrent_transcriptions:
        return config.max_concurrent_transcriptions
    return 2 if resolve_device(config.whisper.load_options.device) == "cuda" else 1


async def create(config: AsrConfig) -> RunningServer:
    """Starts the server; health turns SERVING once the default model is loaded.

    A default model that cannot be found fails here, at start, not at the
    first request.
    """
    loop = asyncio.get_running_loop()
    models = ModelCache(config.whisper.load_options)
    running_limit = max_concurrent_transcriptions(config)
    executor = ThreadPoolExecutor(max_workers=running_limit, thread_name_prefix="asr-model")
    try:
        await loop.run_in_executor(executor, resolve_model_path, config.whisper.default_model, models.options)
    except BaseException:
        executor.shutdown(wait=False)
        raise
    audio_reader = AudioReader(config.audio_target)
    servicer = AsrServicer(
        Transcriber(models, max_batch_size=config.max_batch_size),
        audio_reader,
        AdmissionLimit(
            running_limit, config.max_queued_transcriptions, config.retry_after_s, work_name="transcriptions"
        ),
        executor,
        default_model=config.whisper.default_model,
        default_batch_size=config.batch_size,
    )
    running = create_server(
        config.server, "asr", [(asr_pb2_grpc.add_AsrServiceServicer_to_server, servicer, SERVICE_NAME)]
    )

    async def release() -> None:
        await audio_reader.close()
        executor.shutdown(wait=False, cancel_futures=True)

    running.on_stop.append(release)
    await running.start()

    async def load_default_model() -> None:
        await loop.run_in_executor(executor, models.pin, config.whisper.default_model)

    running.serve_when_ready(load_default_model)
    logger.info(
        "ASR service: default model %s, %d transcriptions at once, %d waiting",
        config.whisper.default_model,
        running_limit,
        config.max_queued_transcriptions,
    )
    return running

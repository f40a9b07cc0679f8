"""Builds and starts the ASR server: machine plan, models, engine, servicer,
status, health."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from common.audio.access import AudioReader
from common.limits import CALLS_PER_WORKER
from common.machine.capacity import describe_source
from common.rpc.admission import AdmissionLimit
from common.rpc.machine_plan import MachinePlan, plan_machine_in_thread
from common.rpc.server import RunningServer
from common.rpc.stage import start_stage_server
from common.rpc.status import LoadFigures, MeasuredFigures, SettingChoice, StatusServicer, choose
from common.speech.whisper_models import ModelCache, resolve_default_model
from services.asr.batcher import BatchPool, WorkRates
from services.asr.config import AsrConfig
from services.asr.engine import Transcriber
from services.asr.servicer import SERVICE_NAME, AsrServicer
from subtitler.asr.v1 import asr_pb2_grpc

logger = logging.getLogger(__name__)

PREFIX = "SUBTITLER_ASR_"


async def create(config: AsrConfig) -> RunningServer:
    """Starts the server; health turns SERVING once the default model is loaded.

    Settings left at 0 (workers, threads per worker, batch size,
    transcriptions at once) are tuned to the machine and reported by the
    status service. A default model that cannot be found fails here, at start,
    not at the first request.
    """
    plan = await plan_machine_in_thread("asr", config.server.cpu_affinity, [config.whisper.load_options.cache_dir])
    settings = _choose_settings(config, plan)
    models = _model_cache(config, settings)
    executor = ThreadPoolExecutor(max_workers=settings.workers, thread_name_prefix="asr-model")
    await resolve_default_model(executor, config.whisper.default_model, models.options)
    audio_reader = AudioReader(config.audio_target, credentials=config.server.tls.channel_credentials())
    admission = AdmissionLimit(
        settings.max_transcriptions, config.max_queued_transcriptions, config.retry_after_s, work_name="transcriptions"
    )
    transcriber = Transcriber(models, max_batch_size=config.max_batch_size, min_window_s=config.min_window_s)
    rates = WorkRates()
    pool = BatchPool(
        transcriber, executor, workers=settings.workers, preferred_batch_size=settings.batch_size, rates=rates
    )
    servicer = AsrServicer(
        transcriber,
        audio_reader,
        admission,
        executor,
        pool,
        default_model=config.whisper.default_model,
        default_batch_size=settings.batch_size,
    )
    report = plan.report(settings.choices)
    running = await start_stage_server(
        config.server,
        "asr",
        (asr_pb2_grpc.add_AsrServiceServicer_to_server, servicer, SERVICE_NAME),
        StatusServicer(report, functools.partial(_figures, settings, admission, models, rates)),
        audio_reader,
        executor,
        load=functools.partial(_load_default_model, config, models, transcriber, rates, settings.workers),
        close_first=pool.close,
    )
    logger.info(
        "ASR service: default model %s, %s workers of %s threads, batches of %s, %s transcriptions at once, %d waiting",
        config.whisper.default_model,
        settings.workers,
        settings.threads_per_worker,
        settings.batch_size,
        settings.max_transcriptions,
        config.max_queued_transcriptions,
    )
    return running


@dataclass(frozen=True)
class _Settings:
    """The settings the ASR runs with: each configured, else tuned to the
    machine; `choices` says which, for the status."""

    workers: int
    threads_per_worker: int
    solo_threads: int
    batch_size: int
    max_transcriptions: int
    max_model_memory_bytes: int
    choices: tuple[SettingChoice, ...]


def _choose_settings(config: AsrConfig, plan: MachinePlan) -> _Settings:
    """Workers, threads, solo replica, batch size, transcriptions at once and
    model memory: what the environment set, else what suits `plan`'s machine."""
    load = config.whisper.load_options
    tuning = plan.tuning
    workers, workers_choice = choose(
        f"{PREFIX}NUM_WORKERS", load.num_workers, tuning.asr_workers, plan.tuning.reason("asr_workers")
    )
    threads, threads_choice = choose(
        f"{PREFIX}CPU_THREADS",
        load.cpu_threads,
        tuning.asr_threads_per_worker,
        plan.tuning.reason("asr_threads_per_worker"),
    )
    # No solo replica unless asked for: it costs the model's memory once more
    # (190 MiB PSS with tiny.en int8) for about 1.5% of a job, and the suite
    # must hold a 60-minute file in 1.8 GB (bench.memory).
    solo_threads, solo_choice = choose(
        f"{PREFIX}SOLO_CPU_THREADS",
        load.solo_cpu_threads,
        1,
        "none (1): a replica costs the model's memory once more (190 MiB with tiny.en) for about 1.5% of a job; "
        "every worker's threads give one that decodes a job's last batch when nothing else waits",
    )
    batch_size, batch_choice = choose(
        f"{PREFIX}BATCH_SIZE",
        config.batch_size,
        min(tuning.asr_batch_size, config.max_batch_size),
        plan.tuning.reason("asr_batch_size"),
    )
    running_limit, running_choice = choose(
        f"{PREFIX}MAX_CONCURRENT_TRANSCRIPTIONS",
        config.max_concurrent_transcriptions,
        int(workers) * CALLS_PER_WORKER * int(batch_size),
        f"{CALLS_PER_WORKER} batches of requests per model worker, as the gateway sends (short ones share batches)",
    )
    memory_bytes, memory_choice = choose(
        f"{PREFIX}MAX_MODEL_MEMORY_BYTES",
        config.max_model_memory_bytes,
        plan.hardware.effective_memory_bytes // 2,
        f"half of the {plan.hardware.effective_memory_bytes / 2**30:.1f} GiB this process may use",
    )
    return _Settings(
        workers=int(workers),
        threads_per_worker=int(threads),
        solo_threads=int(solo_threads),
        batch_size=int(batch_size),
        max_transcriptions=int(running_limit),
        max_model_memory_bytes=int(memory_bytes),
        choices=(workers_choice, threads_choice, solo_choice, batch_choice, running_choice, memory_choice),
    )


def _model_cache(config: AsrConfig, settings: _Settings) -> ModelCache:
    """The models, loaded with the chosen workers and threads, within the chosen memory."""
    return ModelCache(
        dataclasses.replace(
            config.whisper.load_options,
            num_workers=settings.workers,
            cpu_threads=settings.threads_per_worker,
            solo_cpu_threads=settings.solo_threads,
        ),
        max_memory_bytes=settings.max_model_memory_bytes,
        wait_timeout_s=config.model_wait_timeout_s,
    )


def _figures(settings: _Settings, admission: AdmissionLimit, models: ModelCache, rates: WorkRates) -> LoadFigures:
    """What the status reports now."""
    # Capacity is in model workers (what the gateway sizes its calls by), not requests held.
    return LoadFigures(
        settings.workers,
        admission.running,
        admission.waiting,
        preferred_batch_size=settings.batch_size,
        loaded_models=tuple(models.loaded_names()),
        measured=_measured(rates, settings.workers),
    )


async def _load_default_model(
    config: AsrConfig, models: ModelCache, transcriber: Transcriber, rates: WorkRates, workers: int
) -> None:
    """Loads and pins the default model; with warm-up on, primes `rates`
    with the calibrated decodes of `Transcriber.warm_up` on every worker."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, models.pin, config.whisper.default_model)
    if config.warm_up:
        calibration = await loop.run_in_executor(None, transcriber.warm_up, config.whisper.default_model, workers)
        rates.prime(calibration)


def _measured(rates: WorkRates, workers: int) -> MeasuredFigures | None:
    """What the workers get through (None before the warm-up or any work)."""
    if not rates.file.known and not rates.live.known:
        return None
    file, live = rates.file.figures, rates.live.figures
    return MeasuredFigures(
        audio_seconds_per_second=rates.file.units_per_second(workers),
        live_decode_s=live.seconds_per_unit if rates.live.known else 0.0,
        # (Work of either kind counts: a service serving only live captions has measured its live work.)
        source=describe_source(file if file.from_work or not live.from_work else live),
    )

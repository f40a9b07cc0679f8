"""Builds and starts the align server: models, aligners, engine, servicer, health."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from faster_whisper import WhisperModel

from common.audio.access import AudioReader
from common.machine.capacity import WorkRate, calibrate
from common.rpc.admission import AdmissionLimit
from common.rpc.machine_plan import MachinePlan, plan_machine_in_thread
from common.rpc.server import RunningServer
from common.rpc.stage import start_stage_server
from common.rpc.status import LoadFigures, MeasuredFigures, SettingChoice, StatusServicer, choose
from common.speech.whisper_models import ModelCache, resolve_default_model
from services.align.config import AlignConfig
from services.align.cross_attention import CrossAttentionAligner
from services.align.engine import CALIBRATION_AUDIO_S, AlignEngine, AlignMethod, AlignOptions
from services.align.phonetic import PhoneticAligner
from services.align.servicer import SERVICE_NAME, AlignServicer
from subtitler.align.v1 import align_pb2_grpc

logger = logging.getLogger(__name__)


async def create(config: AlignConfig) -> RunningServer:
    """Starts the server; health turns SERVING once the default Whisper model
    and the phonetic aligner are loaded and a calibrated alignment with each
    method has run on every slot at once (what the status reports the slots
    get through, then updated by every alignment).

    A default model that cannot be found fails here, at start, not at the
    first request.
    """
    load_options = config.whisper.load_options
    plan = await plan_machine_in_thread("align", config.server.cpu_affinity, [load_options.cache_dir])
    settings = _choose_settings(config, plan)
    models = ModelCache(dataclasses.replace(load_options, num_workers=settings.workers, cpu_threads=settings.threads))
    executor = ThreadPoolExecutor(max_workers=settings.concurrent, thread_name_prefix="align")
    await resolve_default_model(executor, config.whisper.default_model, models.options)
    engine, phonetic = _build_engine(config, models)
    audio_reader = AudioReader(config.audio_target, credentials=config.server.tls.channel_credentials())
    # Seconds of a slot per second of audio aligned: the warm-up's, then every alignment's.
    rate = WorkRate()
    servicer = AlignServicer(
        engine,
        audio_reader,
        admission := AdmissionLimit(
            settings.concurrent,
            config.max_queued_alignments,
            config.retry_after_s,
            work_name="alignments",
        ),
        executor,
        default_model=config.whisper.default_model,
        is_model_loaded=models.is_loaded,
        max_read_window_s=config.max_read_window_s,
        rate=rate,
    )
    report = plan.report(settings.choices)
    running = await start_stage_server(
        config.server,
        "align",
        (align_pb2_grpc.add_AlignServiceServicer_to_server, servicer, SERVICE_NAME),
        StatusServicer(report, functools.partial(_figures, admission, models, rate, settings.concurrent)),
        audio_reader,
        executor,
        load=functools.partial(_load, config, models, phonetic, executor, settings.concurrent, engine, rate),
    )
    logger.info(
        "align service: default model %s, phonetic %s, %s alignments at once, %d waiting",
        config.whisper.default_model,
        "on" if phonetic is not None else "off",
        settings.concurrent,
        config.max_queued_alignments,
    )
    return running


@dataclass(frozen=True)
class _Settings:
    """The settings the aligner runs with: each configured, else tuned to
    the machine; `choices` says which, for the status."""

    concurrent: int
    threads: int
    workers: int
    choices: tuple[SettingChoice, ...]


def _choose_settings(config: AlignConfig, plan: MachinePlan) -> _Settings:
    """Alignments at once, threads and Whisper workers: what the environment
    set, else what suits `plan`'s machine."""
    load_options = config.whisper.load_options
    concurrent, concurrent_choice = choose(
        "SUBTITLER_ALIGN_MAX_CONCURRENT_ALIGNMENTS",
        config.max_concurrent_alignments,
        plan.tuning.align_max_concurrent,
        plan.tuning.reason("align_max_concurrent"),
    )
    threads, threads_choice = choose(
        "SUBTITLER_ALIGN_CPU_THREADS",
        load_options.cpu_threads,
        plan.tuning.align_threads,
        plan.tuning.reason("align_threads"),
    )
    # One Whisper worker per alignment at once, so concurrent alignments do not queue inside CTranslate2.
    workers, workers_choice = choose(
        "SUBTITLER_ALIGN_NUM_WORKERS", load_options.num_workers, int(concurrent), "one per alignment at once"
    )
    return _Settings(
        concurrent=int(concurrent),
        threads=int(threads),
        workers=int(workers),
        choices=(concurrent_choice, threads_choice, workers_choice),
    )


def _build_engine(config: AlignConfig, models: ModelCache) -> tuple[AlignEngine, PhoneticAligner | None]:
    """The engine (cross-attention on `models`, phonetic when on) and its
    phonetic aligner, not loaded yet (None when off)."""

    def whisper_model(name: str) -> WhisperModel:
        return models.get(name or config.whisper.default_model).whisper

    phonetic = PhoneticAligner() if config.phonetic else None
    engine = AlignEngine(
        CrossAttentionAligner(whisper_model),
        phonetic,
        AlignOptions(tighten_segments=config.tighten_segments),
    )
    return engine, phonetic


def _figures(admission: AdmissionLimit, models: ModelCache, rate: WorkRate, concurrent: int) -> LoadFigures:
    """What the status reports now: alignments running and waiting, loaded models, the measured rate."""
    return LoadFigures.of(
        admission,
        loaded_models=tuple(models.loaded_names()),
        measured=MeasuredFigures.of_audio_rate(rate, concurrent),
    )


async def _load(
    config: AlignConfig,
    models: ModelCache,
    phonetic: PhoneticAligner | None,
    executor: ThreadPoolExecutor,
    concurrent: int,
    engine: AlignEngine,
    rate: WorkRate,
) -> None:
    """Loads and pins the default model and the phonetic aligner (when on)
    on the model threads, then calibrates."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(executor, models.pin, config.whisper.default_model)
    if phonetic is not None:
        await loop.run_in_executor(executor, phonetic.load, concurrent)
    await _calibrate(engine, rate, concurrent)


async def _calibrate(engine: AlignEngine, rate: WorkRate, concurrent: int) -> None:
    """Primes `rate` with a calibrated alignment on each of the `concurrent`
    slots at once, with each method in turn."""
    # English's method (phonetic when on) and cross-attention, each
    # weighing alike: jobs ask for both (the accurate profile's English,
    # other languages, a chunk the ASR left without word times).
    for method in dict.fromkeys([engine.method_for("en"), AlignMethod.CROSS_ATTENTION]):
        busy_s = await calibrate(rate, functools.partial(engine.calibrate, method), CALIBRATION_AUDIO_S, concurrent)
        logger.info(
            "calibrated: %g s of speech aligned with %s in %.2f s on each of %s slots at once",
            CALIBRATION_AUDIO_S,
            method.value,
            busy_s,
            concurrent,
        )

"""Builds and starts the align server: models, aligners, engine, servicer, health."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from concurrent.futures import ThreadPoolExecutor

from faster_whisper import WhisperModel

from common.audio.access import AudioReader
from common.machine.capacity import WorkRate, slowest_on_every_worker
from common.rpc.admission import AdmissionLimit
from common.rpc.machine_plan import plan_machine
from common.rpc.server import RunningServer, create_server
from common.rpc.status import LoadFigures, MeasuredFigures, StatusServicer, choose, status_registration
from common.speech.whisper_models import ModelCache, resolve_model_path
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
    loop = asyncio.get_running_loop()
    load_options = config.whisper.load_options
    plan = await loop.run_in_executor(None, plan_machine, "align", config.server.cpu_affinity, [load_options.cache_dir])
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
    models = ModelCache(dataclasses.replace(load_options, num_workers=int(workers), cpu_threads=int(threads)))
    executor = ThreadPoolExecutor(max_workers=int(concurrent), thread_name_prefix="align")
    try:
        await loop.run_in_executor(executor, resolve_model_path, config.whisper.default_model, models.options)
    except BaseException:
        executor.shutdown(wait=False)
        raise

    def whisper_model(name: str) -> WhisperModel:
        return models.get(name or config.whisper.default_model).whisper

    phonetic = PhoneticAligner() if config.phonetic else None
    engine = AlignEngine(
        CrossAttentionAligner(whisper_model),
        phonetic,
        AlignOptions(tighten_segments=config.tighten_segments),
    )
    audio_reader = AudioReader(config.audio_target, credentials=config.server.tls.channel_credentials())
    # Seconds of a slot per second of audio aligned: the warm-up's, then every alignment's.
    rate = WorkRate()
    servicer = AlignServicer(
        engine,
        audio_reader,
        admission := AdmissionLimit(
            int(concurrent),
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
    report = plan.report([concurrent_choice, threads_choice, workers_choice])

    def figures() -> LoadFigures:
        return LoadFigures.of(
            admission,
            loaded_models=tuple(models.loaded_names()),
            measured=MeasuredFigures.of_audio_rate(rate, int(concurrent)),
        )

    running = create_server(
        config.server,
        "align",
        [
            (align_pb2_grpc.add_AlignServiceServicer_to_server, servicer, SERVICE_NAME),
            status_registration(StatusServicer(report, figures)),
        ],
    )

    async def release() -> None:
        await audio_reader.close()
        executor.shutdown(wait=False, cancel_futures=True)

    running.on_stop.append(release)
    await running.start()

    async def load() -> None:
        await loop.run_in_executor(executor, models.pin, config.whisper.default_model)
        if phonetic is not None:
            await loop.run_in_executor(executor, phonetic.load, int(concurrent))
        await calibrate()

    async def calibrate() -> None:
        # English's method (phonetic when on) and cross-attention, each
        # weighing alike: jobs ask for both (the accurate profile's English,
        # other languages, a chunk the ASR left without word times).
        for method in dict.fromkeys([engine.method_for("en"), AlignMethod.CROSS_ATTENTION]):
            work = functools.partial(engine.calibrate, method)
            busy_s = await loop.run_in_executor(None, slowest_on_every_worker, work, int(concurrent))
            rate.prime(CALIBRATION_AUDIO_S, busy_s)
            logger.info(
                "calibrated: %g s of speech aligned with %s in %.2f s on each of %s slots at once",
                CALIBRATION_AUDIO_S,
                method.value,
                busy_s,
                concurrent,
            )

    running.serve_when_ready(load)
    logger.info(
        "align service: default model %s, phonetic %s, %s alignments at once, %d waiting",
        config.whisper.default_model,
        "on" if phonetic is not None else "off",
        concurrent,
        config.max_queued_alignments,
    )
    return running

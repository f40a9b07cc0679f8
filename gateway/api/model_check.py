"""Refuses, when a request is made, a language or task the named model
cannot do (French with an English-only model), instead of failing the job
after decoding and speech detection.

What a model can do comes from the ASR service (`ListModels`: loaded models
know whether they are multilingual); a model it has not loaded yet is judged
by its name (faster-whisper's English-only models end in ".en"). When the
ASR service cannot be asked, nothing is refused here: the job finds out.
"""

from __future__ import annotations

import logging

import grpc

from common.errors import InvalidInputError, NotFoundError
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc

logger = logging.getLogger(__name__)

LIST_TIMEOUT_S = 5.0


def english_only_by_name(model: str) -> bool:
    return model.strip().lower().endswith(".en")


async def is_multilingual(asr: asr_pb2_grpc.AsrServiceStub, model: str) -> bool | None:
    """Whether `model` (empty: the ASR service's default) knows other
    languages than English; None when it cannot be told."""
    try:
        listed = await asr.ListModels(asr_pb2.ListModelsRequest(), timeout=LIST_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        logger.info("ASR models not listed (%s); the model's languages are not checked", error.code().name)
        return None if model.strip() == "" else not english_only_by_name(model)
    name = model.strip()
    for info in listed.models:
        if (info.pinned and not name) or info.name == name:
            if info.state == asr_pb2.MODEL_STATE_READY:
                return info.multilingual
            return not english_only_by_name(info.name)
    return None if not name else not english_only_by_name(name)


def check_capability(model_name: str, multilingual: bool | None, options: asr_pb2.TranscriptionOptions) -> None:
    """NOT_FOUND for a language an English-only model cannot decode;
    INVALID_ARGUMENT for a translation it cannot do."""
    if multilingual is None or multilingual:
        return
    language = options.language_code.strip().lower()
    shown = model_name or "the default model"
    if language and language.split("-")[0] != "en":
        raise NotFoundError(
            f"{shown} ({options.model or 'the ASR default'}) is English-only and cannot transcribe "
            f"{options.language_code!r}: choose a multilingual model (e.g. embedded:base) or leave the language empty"
        )
    if options.task == asr_pb2.TASK_TRANSLATE:
        raise InvalidInputError(
            f"{shown} is English-only and cannot translate: choose a multilingual model (e.g. embedded:base)"
        )


async def check_model_options(asr: asr_pb2_grpc.AsrServiceStub, options: asr_pb2.TranscriptionOptions) -> None:
    """Refuses what the job's model cannot do (see the module)."""
    if not options.language_code.strip() and options.task != asr_pb2.TASK_TRANSLATE:
        return
    check_capability(options.model.strip(), await is_multilingual(asr, options.model), options)

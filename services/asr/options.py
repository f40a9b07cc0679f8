"""What a transcription request asks for: the model, language, task and
decoding options of its chunks, checked when they are made."""

from __future__ import annotations

import math
from dataclasses import dataclass

from common.errors import InvalidInputError
from common.limits import DEFAULT_BEAM_SIZE, MAX_BEAM_SIZE, MAX_TEMPERATURE
from common.speech.whisper_models import DEFAULT_MODEL

TASKS = ("transcribe", "translate")


@dataclass(frozen=True)
class TranscriptionOptions:
    """What to transcribe with and how. Defaults follow faster-whisper's
    `BatchedInferencePipeline.transcribe`."""

    # Model name (see common.speech.whisper_models): "embedded:tiny.en", "embedded:base",
    # a faster-whisper size, a Hugging Face repository id or a local directory.
    model: str = DEFAULT_MODEL
    # BCP-47 code of the speech ("en", "pt-BR": only the primary subtag is
    # used); empty: detected from the first 30 s of the chunks.
    language_code: str = ""
    # "transcribe" in the spoken language, or "translate" to English.
    task: str = "transcribe"
    # Beam size of the beam search.
    beam_size: int = DEFAULT_BEAM_SIZE
    # Chunks decoded together.
    batch_size: int = 8
    # Text given to the model as previous context (names, spelling); empty: none.
    initial_prompt: str = ""
    # Words or phrases to favour; empty: none.
    hotwords: str = ""
    # Sampling temperature; 0 is beam search / greedy.
    temperature: float = 0.0
    # True (as BatchedInferencePipeline): one segment per chunk, spanning it.
    # False: Whisper also predicts timestamps and splits a chunk into segments.
    without_timestamps: bool = True
    # Also time every word with Whisper's cross-attention, in the same pass,
    # snapped out of the chunk's silences (common.speech.silence_snap).
    word_timestamps: bool = False

    def __post_init__(self) -> None:
        if not self.model.strip():
            raise InvalidInputError("model must not be empty")
        if self.task not in TASKS:
            raise InvalidInputError(f"task {self.task!r} must be one of {', '.join(TASKS)}")
        if not 1 <= self.beam_size <= MAX_BEAM_SIZE:
            raise InvalidInputError(f"beam_size {self.beam_size} must be between 1 and {MAX_BEAM_SIZE}")
        if self.batch_size < 1:
            raise InvalidInputError(f"batch_size {self.batch_size} must be at least 1")
        if not (math.isfinite(self.temperature) and 0.0 <= self.temperature <= MAX_TEMPERATURE):
            raise InvalidInputError(f"temperature {self.temperature} must be between 0 and {MAX_TEMPERATURE:g}")

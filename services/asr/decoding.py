"""faster-whisper's batched decoding (CTranslate2 underneath) as the engine
drives it: the decoding options `BatchedInferencePipeline.transcribe` would
set, the encoder window of a batch, the model as a CPU batch stages it, a
pipeline whose chunks each have their own context and prefix, a chunk's
segments from the pipeline's output, and the warm-up's calibrated decode."""

from __future__ import annotations

import inspect
import math
import time
from collections.abc import Sequence
from typing import Any

import ctranslate2
import numpy as np
import numpy.typing as npt
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import BatchedInferencePipeline, WhisperModel, get_suppressed_tokens
from faster_whisper.transcribe import TranscriptionOptions as DecodingOptions

from common.limits import DEFAULT_BEAM_SIZE, MAX_CHUNK_DURATION_S, SAMPLE_RATE_HERTZ
from common.speech.whisper_models import LoadedModel
from common.speech.word_timing import placements_by_position, split_tokens, words_from_placements
from common.transcript import Segment, Word
from services.asr.chunks import Chunk
from services.asr.options import TranscriptionOptions

# The encoder hears a short chunk plus this much padding, rounded up to whole
# seconds, in a window of at least `Transcriber.min_window_s` (see `window_frames`).
WINDOW_MARGIN_S = 5.0


def calibration_decode(loaded: LoadedModel, window_s: float, tokens: int) -> float:
    """Seconds one worker takes to do what a chunk of real speech costs: the
    features of a `window_s` window, the encoder over it, a beam
    search of `tokens` steps (CTranslate2's max_length; the end of text
    suppressed: the audio is noise, and a beam search costs by its steps) and their word
    alignment. The first call of a worker also warms its buffers."""
    whisper = loaded.whisper
    samples = np.random.default_rng(0).normal(0.0, 0.05, round(window_s * SAMPLE_RATE_HERTZ)).astype(np.float32)
    started = time.perf_counter()
    features = whisper.feature_extractor(samples)[..., :-1]
    encoded = whisper.encode(np.ascontiguousarray(pad_or_trim(features, round(window_s * 100))[np.newaxis]))
    tokenizer = Tokenizer(whisper.hf_tokenizer, loaded.is_multilingual, task="transcribe", language="en")
    prompt = whisper.get_prompt(tokenizer, [], without_timestamps=True)
    result = whisper.model.generate(
        encoded,
        [prompt],
        beam_size=DEFAULT_BEAM_SIZE,
        max_length=tokens,
        suppress_tokens=[-1, tokenizer.eot],
        suppress_blank=False,
    )[0]
    text_tokens = [token for token in result.sequences_ids[0] if token < tokenizer.eot]
    if text_tokens:
        whisper.find_alignment(tokenizer, [text_tokens], encoded, [math.ceil(window_s) * whisper.frames_per_second])
    return time.perf_counter() - started


def window_frames(chunk_frames: int, min_window_s: float) -> int:
    """The feature frames (100 a second) the encoder hears for a batch whose
    longest chunk has `chunk_frames`: the chunk and `WINDOW_MARGIN_S` of
    padding, rounded up to whole seconds, at least `min_window_s`, at most
    Whisper's 30 s.

    faster-whisper pads every chunk to 30 s, and the encoder's cost grows
    faster than its input (its attention): for tiny.en on one core a 20 s
    window costs 0.13 s, a 30 s one 0.36 s (0.20 and 0.53 s with AVX2
    forced). But Whisper was trained on 30 s windows, and in a short one it
    mishears short phrases ("connect your car") and repeats itself
    (whisper.cpp's `audio_ctx`): on 241 utterances of real speech (asterisk
    prompts, one to three, 1-28 s) beam 5 gave a WER of 2.00% with 30 s
    windows, 2.51% with at least 12 s and 5 s of padding, 2.20-2.26% with at
    least 16 s, and 1.89% with at least 20 s and 5 s of padding (the
    default). A live step or final (an utterance after a lead-in of earlier
    finals), a second look at a stretch Whisper skipped and a short clip
    are such chunks; a packed 30 s chunk of a file is not."""
    whisper_frames = round(MAX_CHUNK_DURATION_S * 100)
    wanted = max(chunk_frames + round(WINDOW_MARGIN_S * 100), round(min_window_s * 100))
    return min(whisper_frames, math.ceil(wanted / 100) * 100)


# BatchedInferencePipeline.transcribe's defaults, for the options this service does not expose.
_PIPELINE_DEFAULTS = {
    name: parameter.default
    for name, parameter in inspect.signature(BatchedInferencePipeline.transcribe).parameters.items()
}


def decoding_options(options: TranscriptionOptions, tokenizer: Tokenizer) -> Any:
    """faster-whisper's decoding options, set as BatchedInferencePipeline.transcribe sets them."""
    return DecodingOptions(
        beam_size=options.beam_size,
        best_of=_PIPELINE_DEFAULTS["best_of"],
        patience=_PIPELINE_DEFAULTS["patience"],
        length_penalty=_PIPELINE_DEFAULTS["length_penalty"],
        repetition_penalty=_PIPELINE_DEFAULTS["repetition_penalty"],
        no_repeat_ngram_size=_PIPELINE_DEFAULTS["no_repeat_ngram_size"],
        log_prob_threshold=_PIPELINE_DEFAULTS["log_prob_threshold"],
        no_speech_threshold=_PIPELINE_DEFAULTS["no_speech_threshold"],
        compression_ratio_threshold=_PIPELINE_DEFAULTS["compression_ratio_threshold"],
        # The pipeline forces these: chunks are decoded independently.
        condition_on_previous_text=False,
        prompt_reset_on_temperature=0.5,
        temperatures=[options.temperature],
        initial_prompt=options.initial_prompt or None,
        prefix=None,
        suppress_blank=_PIPELINE_DEFAULTS["suppress_blank"],
        suppress_tokens=get_suppressed_tokens(tokenizer, [-1]),
        without_timestamps=options.without_timestamps,
        max_initial_timestamp=0.0,
        word_timestamps=options.word_timestamps,
        prepend_punctuations=_PIPELINE_DEFAULTS["prepend_punctuations"],
        append_punctuations=_PIPELINE_DEFAULTS["append_punctuations"],
        multilingual=False,
        max_new_tokens=None,
        clip_timestamps=[],
        hallucination_silence_threshold=None,
        hotwords=options.hotwords or None,
    )


class StagedWhisper:
    """The WhisperModel as a batch pipeline sees it on CPU: the encoder runs
    chunk by chunk while the beam search decodes the whole batch, and each
    chunk's outputs are kept (`encoded`) for its word alignment, a step of
    its own (the engine's `PendingWords`).

    Measured on CPU (tiny.en int8, one thread): the encoder costs the same
    per chunk in a batch of 1 as of 8 (0.15 s), but its attention scores take
    54 MB a chunk; the beam search gets cheaper per chunk as the batch grows
    (0.21 s a chunk alone, 0.17 in 2, 0.14 in 4, 0.13 in 8: each step reads
    the decoder's weights once for the batch); the alignment costs more per
    chunk in a batch (0.037 s alone, 0.047 in 4: each chunk's text is padded
    to the longest). On a GPU, where one call for the whole batch is what is
    fast, the pipeline uses the model itself.

    Each chunk's words are aligned on their own, as after a pause: a word's
    time does not depend on which chunks share its batch."""

    def __init__(self, whisper: WhisperModel) -> None:
        self._whisper = whisper
        # The encoder's output of the last batch's chunks, in host memory (one row each).
        self.encoded: npt.NDArray[np.float32] = np.zeros((0,), dtype=np.float32)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._whisper, name)

    def encode(self, features: np.ndarray) -> ctranslate2.StorageView:
        # Host memory: the chunks' outputs (2.3 MB each for tiny) joined in one
        # copy, which the beam search reads and the word alignment slices
        # (`encoded`: a chunk's row stays alive while its words wait).
        self.encoded = np.concatenate(
            [np.asarray(self._whisper.encode(features[position : position + 1])) for position in range(len(features))]
        )
        return ctranslate2.StorageView.from_array(self.encoded)


class ContextPipeline(BatchedInferencePipeline):
    """BatchedInferencePipeline whose chunks each have their own previous
    text and prefix: the prompt of chunk i is the options' initial prompt
    followed by `contexts[i]`, then the start of transcript, then
    `prefixes[i]`, where the pipeline gives every chunk the same prompt.

    CTranslate2 decodes a batch only when the start-of-transcript token is
    at the same place in every prompt, so each context is cut, from its
    start, to the tokens of the shortest one in the batch (a chunk without
    context makes the whole batch go without); prefixes come after it and
    may differ in length. CTranslate2 returns each sequence with its prefix,
    so the prefix's words are timed with the rest (the alignment starts at
    the start of the audio) and `chunk_segments` leaves them out. The rest is
    `generate_segment_batched` as faster-whisper 1.2 writes it, without the
    per-chunk language detection and the max_new_tokens this service never
    asks for."""

    def __init__(self, model: Any, contexts: Sequence[str], prefixes: Sequence[str]) -> None:
        super().__init__(model)
        self._contexts = list(contexts)
        self._prefixes = list(prefixes)

    def generate_segment_batched(
        self, features: np.ndarray, tokenizer: Tokenizer, options: DecodingOptions
    ) -> tuple[Any, list[dict[str, Any]]]:
        count = features.shape[0]
        if (
            options.multilingual
            or options.max_new_tokens is not None
            or len(self._contexts) != count
            or len(self._prefixes) != count
        ):
            raise ValueError(
                "a context pipeline needs one context and prefix per chunk, no per-chunk language detection "
                "and no max_new_tokens"
            )
        initial = tokenizer.encode(options.initial_prompt) if options.initial_prompt is not None else []
        said = [tokenizer.encode(" " + context.strip()) if context.strip() else [] for context in self._contexts]
        forced = [tokenizer.encode(" " + prefix.strip()) if prefix.strip() else [] for prefix in self._prefixes]
        # Previous text and prefix together stay within the first half of the
        # window (faster-whisper's bound on previous text), the context giving way.
        room = max(0, self.model.max_length // 2 - 1 - len(initial) - max(map(len, forced), default=0))
        kept = min(room, *(len(tokens) for tokens in said))
        prompts = [
            self.model.get_prompt(
                tokenizer,
                previous_tokens=initial + (tokens[len(tokens) - kept :] if kept else []),
                without_timestamps=options.without_timestamps,
                hotwords=options.hotwords,
            )
            + prefix
            for tokens, prefix in zip(said, forced, strict=True)
        ]
        encoder_output = self.model.encode(features)
        results = self.model.model.generate(
            encoder_output,
            prompts,
            beam_size=options.beam_size,
            patience=options.patience,
            length_penalty=options.length_penalty,
            max_length=self.model.max_length,  # (this service never sets max_new_tokens)
            suppress_blank=options.suppress_blank,
            suppress_tokens=options.suppress_tokens,
            return_scores=True,
            return_no_speech_prob=True,
            sampling_temperature=options.temperatures[0],
            repetition_penalty=options.repetition_penalty,
            no_repeat_ngram_size=options.no_repeat_ngram_size,
        )
        output = []
        for result, prefix in zip(results, forced, strict=True):
            # Scored on the tokens the model chose, not the forced prefix.
            length = max(1, len(result.sequences_ids[0]) - len(prefix))
            cumulative = result.scores[0] * (length**options.length_penalty)
            output.append(
                {
                    "avg_logprob": cumulative / (length + 1),
                    "no_speech_prob": result.no_speech_prob,
                    "tokens": result.sequences_ids[0],
                }
            )
        return encoder_output, output


def chunk_segments(output: list[dict[str, Any]], chunk: Chunk) -> tuple[Segment, ...]:
    """Segments of one chunk, kept inside the audio decoded, without empty ones."""
    chunk_range = chunk.decoded_range
    # Words of the forced prefix still to leave out (they lead the first pieces).
    prefix_words = len(split_tokens(chunk.prefix))
    segments = []
    for piece in output:
        text = str(piece["text"]).strip()
        if not text:
            continue
        start_s = round(min(max(float(piece["start"]), chunk_range.start_s), chunk_range.end_s), 3)
        end_s = round(min(max(float(piece["end"]), start_s), chunk_range.end_s), 3)
        tokens = split_tokens(text)
        words: tuple[Word, ...] = ()
        if piece.get("words") is not None:
            # Whisper's words carry their leading spaces and may split or glue
            # tokens differently from the text: map them onto its whitespace
            # tokens by character position, interpolating any left over.
            placements = placements_by_position(" " + " ".join(tokens), tokens, piece["words"])
            words = words_from_placements(tokens, placements, offset_s=0.0, start_s=start_s, end_s=end_s)
        if prefix_words:
            dropped = min(prefix_words, len(tokens))
            prefix_words -= dropped
            tokens, words = tokens[dropped:], words[dropped:]
            if not tokens:
                continue
            text = " ".join(tokens)
            if words:
                start_s = words[0].start_s
        segments.append(
            Segment(
                text=text,
                start_s=start_s,
                end_s=end_s,
                words=words,
                avg_logprob=float(piece["avg_logprob"]),
                no_speech_prob=float(piece["no_speech_prob"]),
                compression_ratio=float(piece["compression_ratio"]),
                chunk_index=chunk.index,
            )
        )
    return tuple(segments)

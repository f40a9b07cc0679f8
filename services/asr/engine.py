"""Batched Whisper transcription of speech chunks, the way faster-whisper's
`BatchedInferencePipeline` does it, but on chunks chosen by the caller (the
VAD service) and yielding each chunk's transcript as soon as its batch is done.

The decoding itself is faster-whisper's: features from its feature extractor,
`BatchedInferencePipeline.forward` (encode, batched generate, split by
timestamps) and its language detection. What this module adds is the
request's checks, language codes, batches of chunks from one or several
requests, word timing as a step of its own, the warm-up and cancellation
between batches, so the same chunks with the same options give the same text
as `BatchedInferencePipeline.transcribe(audio, clip_timestamps=...)`. The
chunks' bookkeeping is services/asr/chunks.py's, the decoding internals
services/asr/decoding.py's.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import ctranslate2
import numpy as np
import numpy.typing as npt
from faster_whisper.audio import pad_or_trim
from faster_whisper.tokenizer import Tokenizer
from faster_whisper.transcribe import BatchedInferencePipeline
from faster_whisper.transcribe import TranscriptionOptions as DecodingOptions

from common.errors import CancelledError, InvalidInputError
from common.limits import (
    MAX_CHUNK_DURATION_S,
    MAX_CHUNKS_PER_REQUEST,
    MAX_CONTEXT_CHARS,
    MAX_PREFIX_CHARS,
    SAMPLE_RATE_HERTZ,
)
from common.speech.languages import to_bcp47, to_whisper_language
from common.speech.silence_snap import snap_words_to_sound
from common.speech.whisper_models import DEFAULT_MODEL, LoadedModel, ModelCache
from common.transcript import Segment, TimeRange
from services.asr.chunks import (
    AudioWindow,
    Chunk,
    PackedTimes,
    PreparedTranscription,
    Samples,
    check_parts,
    check_range,
    chunk_features,
    chunk_of,
    chunk_samples,
    first_speech,
    per_chunk_texts,
)
from services.asr.decoding import (
    ContextPipeline,
    StagedWhisper,
    calibration_decode,
    chunk_segments,
    decoding_options,
    window_frames,
)
from services.asr.options import TranscriptionOptions

logger = logging.getLogger(__name__)

# Candidates returned by language detection.
MAX_LANGUAGE_CANDIDATES = 5
# The warm-up's calibrated decodes (`calibration_decode`): a file chunk is
# Whisper's whole window of dense speech (about 100 tokens: 75 words); a live
# decode is an utterance of a few seconds after a lead-in of earlier finals,
# 14 s of audio, about 40 tokens.
CALIBRATION_FILE_TOKENS = 100
CALIBRATION_LIVE_AUDIO_S = 14.0
CALIBRATION_LIVE_TOKENS = 40
# The shortest window that decoded real speech as well as Whisper's 30 s (see `window_frames`).
DEFAULT_MIN_WINDOW_S = 20.0


@dataclass(frozen=True)
class ChunkTranscript:
    """The transcript of one chunk."""

    # Position of the chunk in the job: first_chunk_index plus its position in the request.
    chunk_index: int
    # The audio the chunk covers, from the start of the audio.
    time_range: TimeRange
    # Its segments, with times from the start of the audio; empty when nothing was said.
    segments: tuple[Segment, ...]
    # BCP-47 code of the language decoded.
    language_code: str
    # Probability of that language when detected; 1 when it was given.
    language_probability: float
    # Name of the model that produced it.
    model: str


@dataclass(frozen=True)
class Calibration:
    """What the warm-up measured, every worker decoding at once (the slowest
    worker's time): seconds of one worker's time per second of a file's
    audio, and per live decode (see `calibration_decode`)."""

    file_seconds_per_audio_second: float
    live_decode_s: float
    workers: int


class LanguageDetection(NamedTuple):
    """The spoken language of a range of audio."""

    # BCP-47 code of the most probable language.
    language_code: str
    # Its probability, 0 to 1.
    probability: float
    # The most probable languages with their probabilities, best first.
    candidates: tuple[tuple[str, float], ...]


def _chunk_transcript(
    prepared: PreparedTranscription, position: int, output: list[dict[str, Any]], samples: Samples
) -> ChunkTranscript:
    """The transcript of one decoded chunk: its segments in the audio's
    times, words snapped out of its silences."""
    chunk = prepared.chunks[position]
    segments = chunk_segments(output, chunk)
    if prepared.options.word_timestamps:
        # Cross-attention starts words early after a pause: move
        # them out of the chunk's silences (microseconds of work).
        segments = snap_words_to_sound(segments, samples, chunk.decoded_range.start_s)
    if chunk.parts:
        times = PackedTimes.of(chunk)
        segments = tuple(times.restore(segment) for segment in segments)
    return ChunkTranscript(
        chunk_index=chunk.index,
        time_range=chunk.time_range,
        segments=segments,
        language_code=to_bcp47(prepared.language or ""),
        language_probability=float(prepared.language_probability),
        model=prepared.model.name,
    )


@dataclass(frozen=True, eq=False)
class PendingWords:
    """A chunk whose text is decoded and whose words are still to be timed
    (`Transcriber.decode_text` on a CPU): Whisper's cross-attention
    alignment of its text against its encoder output (kept in host memory,
    2.3 MB for tiny.en, 7.7 MB for large-v3), by any worker. Its audio is
    the request's: time the words before the request's audio is released
    (the ASR's pool does: a request's stream ends only once all its words
    are timed, and the pending words of a request that ends early are
    dropped, those being timed awaited)."""

    prepared: PreparedTranscription
    position: int
    output: list[dict[str, Any]]
    samples: Samples
    encoder_output: npt.NDArray[np.float32]
    tokenizer: Tokenizer
    num_frames: int
    decoding: DecodingOptions

    def time_words(self) -> ChunkTranscript:
        """The chunk's transcript with its words timed (faster-whisper's
        `add_word_timestamps` on this chunk alone, as after a pause)."""
        self.prepared.model.whisper.add_word_timestamps(
            [self.output],
            self.tokenizer,
            ctranslate2.StorageView.from_array(self.encoder_output),
            [self.num_frames],
            self.decoding.prepend_punctuations,
            self.decoding.append_punctuations,
            0.0,
        )
        return _chunk_transcript(self.prepared, self.position, self.output, self.samples)


class Transcriber:
    """Transcribes chunks of audio with models from a `ModelCache`.

    Plain Python and thread-safe: each call works on its own state; models are
    shared.
    """

    def __init__(
        self,
        models: ModelCache,
        *,
        max_batch_size: int = 32,
        max_chunks_per_request: int = MAX_CHUNKS_PER_REQUEST,
        min_window_s: float = DEFAULT_MIN_WINDOW_S,
    ) -> None:
        """`min_window_s`: the shortest encoder window a batch of short chunks
        is decoded in (see `window_frames`; 30: always Whisper's whole window,
        as faster-whisper)."""
        if not 0.0 < min_window_s <= MAX_CHUNK_DURATION_S:
            raise ValueError(f"min_window_s {min_window_s} must be in (0, {MAX_CHUNK_DURATION_S:g}]")
        self.models = models
        self.max_batch_size = max_batch_size
        self.max_chunks_per_request = max_chunks_per_request
        self.min_window_s = min_window_s

    def transcribe(
        self,
        audio: npt.ArrayLike,
        chunks: Sequence[TimeRange],
        options: TranscriptionOptions,
        first_chunk_index: int = 0,
        should_stop: Callable[[], bool] | None = None,
        *,
        audio_offset_samples: int = 0,
        audio_sample_count: int | None = None,
        parts: Sequence[Sequence[TimeRange]] = (),
    ) -> Iterator[ChunkTranscript]:
        """Transcribes `chunks` of `audio` (16 kHz mono) and yields one
        `ChunkTranscript` per chunk, in order, as each batch is done.

        `audio` is the whole audio, or a window of it starting at sample
        `audio_offset_samples` of an audio of `audio_sample_count` samples
        (so a caller can read only the part the chunks cover); chunk times and
        the times of the results are from the start of the whole audio.

        Checks the request and loads the model before returning, so bad input
        fails at the call, not at the first `next()`. `parts` packs chunks
        (see `prepare`). `should_stop` is asked
        before each batch; when it answers True the iterator raises
        `CancelledError`.
        """
        prepared = self.prepare(
            audio,
            chunks,
            options,
            first_chunk_index,
            audio_offset_samples=audio_offset_samples,
            audio_sample_count=audio_sample_count,
            parts=parts,
        )
        return self._transcribe_batches(prepared, should_stop)

    def prepare(
        self,
        audio: npt.ArrayLike,
        chunks: Sequence[TimeRange],
        options: TranscriptionOptions,
        first_chunk_index: int = 0,
        *,
        audio_offset_samples: int = 0,
        audio_sample_count: int | None = None,
        contexts: Sequence[str] = (),
        prefixes: Sequence[str] = (),
        parts: Sequence[Sequence[TimeRange]] = (),
    ) -> PreparedTranscription:
        """Checks a request and loads its model (the first half of
        `transcribe`); `decode_batch` then decodes its chunks, alone or in a
        batch with other requests' chunks. Its language is None when it has
        to be detected (`detect`).

        `contexts`: none, or for each chunk the text said just before it
        (a live stream's finals so far), given to the model after the
        options' `initial_prompt` as previous context.

        `prefixes`: none, or for each chunk the text its audio is known to
        begin with (a live stream's last finals, whose audio is decoded again
        before a new utterance so the model hears what came before). The
        prefix is forced as the start of the transcript, so the model only
        continues it, and its words are left out of the chunk's result: the
        segment holds what follows, timed from the start of the audio.

        `parts`: none, or for each chunk the ranges of it decoded back to
        back with the audio between them cut out (faster-whisper's speech
        packing; empty: the whole chunk), at most 30 s together; such a chunk
        may span more than 30 s. Results are timed in the whole audio."""
        window = AudioWindow.of(audio, audio_offset_samples, audio_sample_count)
        if first_chunk_index < 0:
            raise InvalidInputError(f"first_chunk_index {first_chunk_index} must not be negative")
        if options.batch_size > self.max_batch_size:
            raise InvalidInputError(f"batch_size {options.batch_size} is over the limit of {self.max_batch_size}")
        if len(chunks) > self.max_chunks_per_request:
            # One caller must not hold a worker for minutes: long audio goes in several calls.
            raise InvalidInputError(
                f"{len(chunks)} chunks in one request; at most {self.max_chunks_per_request}: send them in several"
            )
        chunk_contexts = per_chunk_texts(contexts, len(chunks), "context", MAX_CONTEXT_CHARS)
        chunk_prefixes = per_chunk_texts(prefixes, len(chunks), "prefix", MAX_PREFIX_CHARS)
        if any(chunk_prefixes) and not options.without_timestamps:
            raise InvalidInputError("chunk prefixes need transcripts without timestamps")
        if parts and len(parts) != len(chunks):
            raise InvalidInputError(f"parts for {len(parts)} chunks of {len(chunks)}: give them for each, or none")
        chunk_parts = [list(each) for each in parts] if parts else [[] for _ in chunks]
        checked = [
            check_range(chunk, window.audio_duration_s, None if chunk_parts[position] else MAX_CHUNK_DURATION_S)
            for position, chunk in enumerate(chunks)
        ]
        for position, chunk in enumerate(checked):
            check_parts(chunk_parts[position], chunk, f"chunk {position}")
        if any(chunk_parts) and any(chunk_prefixes):
            raise InvalidInputError("a chunk decoded in parts cannot have a prefix")
        prepared_chunks = [
            chunk_of(
                first_chunk_index + position,
                chunk,
                window.audio_sample_count,
                chunk_contexts[position],
                chunk_prefixes[position],
                chunk_parts[position],
            )
            for position, chunk in enumerate(checked)
        ]
        for part in prepared_chunks:
            window.check_covers(part.start_sample, part.end_sample)
        model = self.models.get(options.model)
        if options.task == "translate" and not model.is_multilingual:
            raise InvalidInputError(f"model {model.name!r} is English-only and cannot translate")
        language = to_whisper_language(options.language_code, model.languages) if options.language_code else None
        if language is None and not model.is_multilingual:
            language = "en"
        return PreparedTranscription(window, tuple(prepared_chunks), options, model, language, 1.0)

    def detect(self, prepared: PreparedTranscription) -> PreparedTranscription:
        """`prepared` with its language detected from the first 30 s of its
        chunks (as BatchedInferencePipeline does from the first 30 s of
        speech); unchanged when it has one."""
        if prepared.language is not None or not prepared.chunks:
            return prepared
        language, probability = self._detect_from_features(
            prepared.model, list(prepared.chunks), lambda position: chunk_features(prepared, position)
        )
        return dataclasses.replace(prepared, language=language, language_probability=probability)

    def decode_batch(self, items: Sequence[tuple[PreparedTranscription, int]]) -> list[ChunkTranscript]:
        """Decodes chunks in one batch: each item is a request and the
        position of one of its chunks. Every request must have the same
        `batch_key` (the chunks may come from different audio); the
        transcripts come back in the order of `items`."""
        return [
            decoded if isinstance(decoded, ChunkTranscript) else decoded.time_words()
            for decoded in self.decode_text(items)
        ]

    def decode_text(
        self, items: Sequence[tuple[PreparedTranscription, int]], *, solo: bool = False
    ) -> list[ChunkTranscript | PendingWords]:
        """`decode_batch` up to the words: on a CPU, a chunk whose words are
        asked for comes back as `PendingWords`, its text decoded and its
        words still to time (`PendingWords.time_words`, a step of its own
        any worker can take later). Elsewhere, and without word timestamps,
        every chunk comes back done. `solo`: nothing else waits to be
        decoded, so the model's solo replica (more threads) decodes the
        batch where it has one; the text is the same."""
        if not items:
            return []
        first = items[0][0]
        if first.language is None:
            raise ValueError("detect the language before decoding")
        if any(prepared.batch_key != first.batch_key for prepared, _ in items):
            raise ValueError("a batch mixes requests with different options")
        whisper = (first.model.solo if solo else None) or first.model.whisper
        tokenizer = Tokenizer(
            whisper.hf_tokenizer, first.model.is_multilingual, task=first.options.task, language=first.language
        )
        decoding = decoding_options(first.options, tokenizer)
        contexts = [prepared.chunks[position].context for prepared, position in items]
        prefixes = [prepared.chunks[position].prefix for prepared, position in items]
        staged = StagedWhisper(whisper) if first.model.device == "cpu" else None
        model = staged or whisper
        pipeline = (
            ContextPipeline(model, contexts, prefixes)
            if any(contexts) or any(prefixes)
            else BatchedInferencePipeline(model)
        )
        # Chunks are independent: no word is pushed past an earlier chunk's speech.
        pipeline.last_speech_timestamp = 0.0
        # A packed chunk's parts are joined in a copy: once per chunk, for the features and the snapping.
        heard = [chunk_samples(prepared.window, prepared.chunks[position]) for prepared, position in items]
        unpadded = [
            chunk_features(prepared, position, samples)
            for (prepared, position), samples in zip(items, heard, strict=True)
        ]
        frames = window_frames(max(each.shape[-1] for each in unpadded), self.min_window_s)
        features = np.stack([pad_or_trim(each, frames) for each in unpadded])
        decoded_ranges = [prepared.chunks[position].decoded_range for prepared, position in items]
        metadata = [{"offset": span.start_s, "duration": span.end_s - span.start_s} for span in decoded_ranges]
        words_later = staged is not None and decoding.word_timestamps
        if words_later:
            decoding = dataclasses.replace(decoding, word_timestamps=False)
        outputs = pipeline.forward(features, tokenizer, [{**entry, "segments": []} for entry in metadata], decoding)
        if staged is None or not words_later:
            return [
                _chunk_transcript(prepared, position, output, samples)
                for (prepared, position), output, samples in zip(items, outputs, heard, strict=True)
            ]
        return [
            PendingWords(
                prepared,
                position,
                output,
                samples,
                encoded,
                tokenizer,
                int(math.ceil(span["duration"]) * whisper.frames_per_second),
                decoding,
            )
            for (prepared, position), output, samples, encoded, span in zip(
                items, outputs, heard, (row[np.newaxis] for row in staged.encoded), metadata, strict=True
            )
        ]

    def _transcribe_batches(
        self, prepared: PreparedTranscription, should_stop: Callable[[], bool] | None
    ) -> Iterator[ChunkTranscript]:
        chunks = prepared.chunks
        if not chunks:
            return
        started = time.perf_counter()
        prepared = self.detect(prepared)
        batch_size = prepared.options.batch_size
        for batch_start in range(0, len(chunks), batch_size):
            if should_stop is not None and should_stop():
                logger.info("transcription cancelled after %d of %d chunks", batch_start, len(chunks))
                raise CancelledError("transcription cancelled")
            positions = range(batch_start, min(batch_start + batch_size, len(chunks)))
            yield from self.decode_batch([(prepared, position) for position in positions])
        elapsed_s = time.perf_counter() - started
        audio_s = sum(chunk.duration_s for chunk in chunks)
        logger.info(
            "transcribed %d chunks (%.1f s of audio) with %s in %.2f s (real-time factor %.3f)",
            len(chunks),
            audio_s,
            prepared.model.name,
            elapsed_s,
            elapsed_s / audio_s if audio_s else 0.0,
        )

    @staticmethod
    def _detect_from_features(
        model: LoadedModel, chunks: list[Chunk], features_of: Callable[[int], np.ndarray]
    ) -> tuple[str, float]:
        """Detects the language from the first 30 s of the chunks, as
        BatchedInferencePipeline does from the first 30 s of speech."""
        whisper = model.whisper
        head: list[np.ndarray] = []
        frames = 0
        for position in range(len(chunks)):
            if frames >= whisper.feature_extractor.nb_max_frames:
                break
            head.append(features_of(position))
            frames += head[-1].shape[-1]
        # The dummy frame is the pipeline's guard against empty audio.
        head.append(np.full((whisper.model.n_mels, 1), -1.5, dtype=np.float32))
        language, probability, _ = whisper.detect_language(features=np.concatenate(head, axis=1))
        logger.info("detected language %s (probability %.2f)", language, probability)
        return str(language), float(probability)

    def warm_up(self, model: str, workers: int = 1) -> Calibration:
        """Loads `model` and runs a calibrated decode of each kind on each of
        its `workers` at once (`calibration_decode`), so the first real
        request does not pay for the first-call allocations and the service
        knows what its workers do on this machine; returns what each took."""
        started = time.perf_counter()
        loaded = self.models.get(model)
        file_times: list[float] = []
        live_times: list[float] = []

        live_window_s = window_frames(round(CALIBRATION_LIVE_AUDIO_S * 100), self.min_window_s) / 100

        def one() -> None:
            # The first call of a worker pays for its allocations: not timed.
            # The live decode is timed twice, the faster counting: the other
            # services start at the same time and share the CPUs for a moment.
            calibration_decode(loaded, live_window_s, CALIBRATION_LIVE_TOKENS)
            file_times.append(
                calibration_decode(loaded, MAX_CHUNK_DURATION_S, CALIBRATION_FILE_TOKENS) / MAX_CHUNK_DURATION_S
            )
            live_times.append(min(calibration_decode(loaded, live_window_s, CALIBRATION_LIVE_TOKENS) for _ in range(2)))

        threads = [threading.Thread(target=one, name=f"warm-up-{number}") for number in range(max(1, workers))]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        if len(file_times) != len(threads):
            raise RuntimeError(f"the warm-up of {model} failed on {len(threads) - len(file_times)} workers")
        calibration = Calibration(
            file_seconds_per_audio_second=max(file_times), live_decode_s=max(live_times), workers=len(threads)
        )
        logger.info(
            "warmed up %s on %d workers in %.2f s: a 30 s chunk takes %.2f s, a live decode %.2f s",
            model,
            len(threads),
            time.perf_counter() - started,
            calibration.file_seconds_per_audio_second * MAX_CHUNK_DURATION_S,
            calibration.live_decode_s,
        )
        return calibration

    def detect_language(
        self,
        audio: npt.ArrayLike,
        time_range: TimeRange | None = None,
        model: str = DEFAULT_MODEL,
        *,
        audio_offset_samples: int = 0,
        audio_sample_count: int | None = None,
        parts: Sequence[TimeRange] = (),
    ) -> LanguageDetection:
        """The spoken language of `time_range` of the audio (None: from its
        start), judged on the first 30 s of the range, or of `parts` of it
        (ranges inside it, in order) back to back. An English-only model
        answers "en". `audio` is the whole audio or a window of it, as for
        `transcribe`."""
        window = AudioWindow.of(audio, audio_offset_samples, audio_sample_count)
        checked = check_range(
            time_range or TimeRange(0.0, window.audio_duration_s), window.audio_duration_s, max_duration_s=None
        )
        loaded = self.models.get(model)
        if not loaded.is_multilingual:
            return LanguageDetection("en", 1.0, (("en", 1.0),))
        start_sample = min(round(checked.start_s * SAMPLE_RATE_HERTZ), window.audio_sample_count)
        end_sample = min(
            round(checked.end_s * SAMPLE_RATE_HERTZ),
            start_sample + loaded.whisper.feature_extractor.n_samples,
            window.audio_sample_count,
        )
        if parts:
            # The speech as a packed chunk of the range: its first 30 s, back to back.
            listened = first_speech(parts, loaded.whisper.feature_extractor.n_samples / SAMPLE_RATE_HERTZ)
            check_parts(listened, checked, "the range to listen to")
            speech = chunk_of(0, checked, window.audio_sample_count, parts=listened)
            window.check_covers(speech.parts[0][0], speech.parts[-1][1])
            heard = chunk_samples(window, speech)
        else:
            window.check_covers(start_sample, end_sample)
            heard = window.slice(start_sample, end_sample)
        language, probability, all_probabilities = loaded.whisper.detect_language(audio=heard)
        candidates = tuple(
            (to_bcp47(code), float(candidate_probability))
            for code, candidate_probability in all_probabilities[:MAX_LANGUAGE_CANDIDATES]
        )
        logger.info("detected language %s (probability %.2f) with %s", language, probability, loaded.name)
        return LanguageDetection(to_bcp47(language), float(probability), candidates)

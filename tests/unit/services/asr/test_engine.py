"""The ASR engine on real speech (Debian's Asterisk prompts), with the real
embedded models: tiny.en (the default) and the multilingual base."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import cast

import numpy as np
import numpy.typing as npt
import pytest
from faster_whisper import BatchedInferencePipeline

from common.errors import CancelledError, InvalidInputError, NotFoundError
from common.limits import MAX_CHUNK_DURATION_S
from common.speech.languages import to_bcp47, to_whisper_language
from common.speech.whisper_models import (
    EMBEDDED_BASE,
    EMBEDDED_TINY_EN,
    ModelCache,
    ModelLoadOptions,
    build_embedded_base,
)
from common.transcript import TimeRange
from services.asr.engine import ChunkTranscript, PendingWords, Transcriber
from services.asr.options import TranscriptionOptions
from tests.speech import (
    ASTERISK_SOUNDS_DIR,
    FRENCH_SOUNDS_DIR,
    SAMPLE_RATE_HERTZ,
    load_pcm16k,
    read_transcripts,
    speech_available,
)
from tests.wer import word_error_rate

ENGLISH_PROMPTS = ("conf-onlyperson", "conf-getconfno", "conf-full")
FRENCH_PROMPT = FRENCH_SOUNDS_DIR / "conf-onlyperson.wav"
GAP_S = 0.5

needs_speech = pytest.mark.skipif(not speech_available(), reason="asterisk-core-sounds-en-wav is not installed")


class Recording:
    """English prompts with silence between them, and where each one is."""

    def __init__(self, names: tuple[str, ...]) -> None:
        transcripts = read_transcripts()
        gap = np.zeros(round(GAP_S * SAMPLE_RATE_HERTZ), dtype=np.float32)
        pieces: list[npt.NDArray[np.float32]] = []
        self.chunks: list[TimeRange] = []
        self.texts: list[str] = []
        position = 0
        for name in names:
            speech = load_pcm16k(ASTERISK_SOUNDS_DIR / f"{name}.wav")
            pieces += [gap, speech]
            start = position + gap.size
            position = start + speech.size
            self.chunks.append(TimeRange(start / SAMPLE_RATE_HERTZ, position / SAMPLE_RATE_HERTZ))
            self.texts.append(transcripts[name])
        pieces.append(gap)
        self.samples = np.concatenate(pieces)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> ModelCache:
    return ModelCache(ModelLoadOptions(cache_dir=tmp_path_factory.mktemp("models"), cpu_threads=os.cpu_count() or 1))


@pytest.fixture(scope="module")
def transcriber(models: ModelCache) -> Transcriber:
    return Transcriber(models)


@pytest.fixture(scope="module")
def recording() -> Recording:
    if not speech_available():
        pytest.skip("asterisk-core-sounds-en-wav is not installed")
    return Recording(ENGLISH_PROMPTS)


@pytest.fixture(scope="module")
def transcripts(transcriber: Transcriber, recording: Recording) -> list[ChunkTranscript]:
    """The recording through the default model, two chunks a batch (two batches)."""
    options = TranscriptionOptions(batch_size=2)
    return list(transcriber.transcribe(recording.samples, recording.chunks, options, first_chunk_index=7))


@needs_speech
def test_tiny_en_transcribes_each_chunk_in_order(recording: Recording, transcripts: list[ChunkTranscript]) -> None:
    assert [transcript.chunk_index for transcript in transcripts] == [7, 8, 9]
    for transcript, chunk, reference in zip(transcripts, recording.chunks, recording.texts, strict=True):
        assert transcript.model == EMBEDDED_TINY_EN
        assert (transcript.language_code, transcript.language_probability) == ("en", 1.0)
        assert transcript.time_range.start_s == pytest.approx(chunk.start_s, abs=1e-3)
        text = " ".join(segment.text for segment in transcript.segments)
        assert word_error_rate(reference, text) <= 0.2, (reference, text)
        for segment in transcript.segments:
            assert chunk.start_s - 1e-3 <= segment.start_s <= segment.end_s <= chunk.end_s + 1e-3
            assert segment.chunk_index == transcript.chunk_index


@needs_speech
def test_same_text_as_batched_inference_pipeline_in_its_30_s_windows(models: ModelCache, recording: Recording) -> None:
    pipeline = BatchedInferencePipeline(models.get(EMBEDDED_TINY_EN).whisper)
    clips = [{"start": chunk.start_s, "end": chunk.end_s} for chunk in recording.chunks]
    segments, _ = pipeline.transcribe(recording.samples, clip_timestamps=clips, batch_size=2, beam_size=5)
    expected = [segment.text.strip() for segment in segments]
    whole_windows = Transcriber(models, min_window_s=MAX_CHUNK_DURATION_S)
    transcripts = whole_windows.transcribe(recording.samples, recording.chunks, TranscriptionOptions(batch_size=2))
    assert [segment.text for transcript in transcripts for segment in transcript.segments] == expected


@needs_speech
def test_short_windows_hear_real_speech_as_whisper_s_30_s_ones(models: ModelCache, recording: Recording) -> None:
    options = TranscriptionOptions(batch_size=3)
    whole = Transcriber(models, min_window_s=MAX_CHUNK_DURATION_S).transcribe(
        recording.samples, recording.chunks, options
    )
    short = Transcriber(models).transcribe(recording.samples, recording.chunks, options)
    reference = " ".join(recording.texts)
    whole_wer = word_error_rate(reference, " ".join(s.text for t in whole for s in t.segments))
    assert word_error_rate(reference, " ".join(s.text for t in short for s in t.segments)) <= whole_wer + 0.02


@needs_speech
def test_words_and_text_do_not_depend_on_which_chunks_share_a_batch(
    transcriber: Transcriber, recording: Recording
) -> None:
    # On CPU the batch's chunks are encoded and aligned one at a time
    # (`StagedWhisper`): a chunk's words come out the same alone or batched.
    options = TranscriptionOptions(word_timestamps=True, batch_size=3)
    together = list(transcriber.transcribe(recording.samples, recording.chunks, options))
    alone = [
        transcript
        for position, chunk in enumerate(recording.chunks)
        for transcript in transcriber.transcribe(
            recording.samples, [chunk], dataclasses.replace(options, batch_size=1), first_chunk_index=position
        )
    ]
    assert together == alone
    assert all(segment.words for transcript in together for segment in transcript.segments)


@needs_speech
def test_words_timed_later_are_those_of_the_batch(transcriber: Transcriber, recording: Recording) -> None:
    """On CPU a chunk's words come as a step of their own (`PendingWords`),
    which the ASR's pool may run after later batches: they are the same as
    the batch's."""
    options = TranscriptionOptions(word_timestamps=True, batch_size=3)
    prepared = transcriber.prepare(recording.samples, recording.chunks, options)
    together = transcriber.decode_batch([(prepared, position) for position in range(3)])
    pending = transcriber.decode_text([(prepared, position) for position in range(3)])
    assert all(isinstance(each, PendingWords) for each in pending)
    assert [cast(PendingWords, each).time_words() for each in reversed(pending)] == together[::-1]
    # Without word timestamps every chunk comes back done.
    plain = transcriber.prepare(
        recording.samples, recording.chunks, dataclasses.replace(options, word_timestamps=False)
    )
    assert all(isinstance(each, ChunkTranscript) for each in transcriber.decode_text([(plain, 0), (plain, 1)]))


@needs_speech
def test_the_solo_replica_decodes_the_same_text(tmp_path: Path, recording: Recording) -> None:
    """A job's last batch may go to the model's solo replica (one replica
    with every worker's threads): same model, same text and words."""
    models = ModelCache(ModelLoadOptions(cache_dir=tmp_path, cpu_threads=1, num_workers=2, solo_cpu_threads=2))
    transcriber = Transcriber(models)
    options = TranscriptionOptions(word_timestamps=True, batch_size=3)
    prepared = transcriber.prepare(recording.samples, recording.chunks, options)
    assert prepared.model.solo is not None and prepared.model.solo is not prepared.model.whisper
    items = [(prepared, position) for position in range(3)]
    with_workers = [cast(PendingWords, each).time_words() for each in transcriber.decode_text(items)]
    alone = [cast(PendingWords, each).time_words() for each in transcriber.decode_text(items, solo=True)]
    assert alone == with_workers
    # Without a solo replica (the default load options) `solo` uses the workers.
    assert ModelCache(ModelLoadOptions(cache_dir=tmp_path)).get(EMBEDDED_TINY_EN).solo is None


@needs_speech
def test_a_window_of_the_audio_gives_the_same_transcript(
    transcriber: Transcriber, recording: Recording, transcripts: list[ChunkTranscript]
) -> None:
    chunk = recording.chunks[1]
    start, end = round(chunk.start_s * SAMPLE_RATE_HERTZ), round(chunk.end_s * SAMPLE_RATE_HERTZ)
    (transcript,) = transcriber.transcribe(
        recording.samples[start:end],
        [chunk],
        TranscriptionOptions(),
        first_chunk_index=8,
        audio_offset_samples=start,
        audio_sample_count=recording.samples.size,
    )
    assert transcript == transcripts[1]


@needs_speech
def test_stops_between_batches_when_asked(transcriber: Transcriber, recording: Recording) -> None:
    produced: list[ChunkTranscript] = []
    iterator = transcriber.transcribe(
        recording.samples, recording.chunks[:2], TranscriptionOptions(batch_size=1), should_stop=lambda: bool(produced)
    )
    with pytest.raises(CancelledError):
        for transcript in iterator:
            produced.append(transcript)
    assert [transcript.chunk_index for transcript in produced] == [0]


def test_no_chunks_give_nothing(transcriber: Transcriber) -> None:
    assert list(transcriber.transcribe(np.zeros(16_000, dtype=np.float32), [], TranscriptionOptions())) == []


@pytest.mark.parametrize(
    "chunk",
    [TimeRange(0.5, 0.5), TimeRange(0.8, 0.2), TimeRange(-0.1, 0.5), TimeRange(40.0, 45.0), TimeRange(0.0, 30.5)],
    ids=["empty", "reversed", "before-start", "after-end", "over-30s"],
)
def test_bad_ranges_are_invalid(transcriber: Transcriber, chunk: TimeRange) -> None:
    audio = np.zeros(41 * SAMPLE_RATE_HERTZ, dtype=np.float32)
    with pytest.raises(InvalidInputError):
        transcriber.transcribe(audio, [chunk], TranscriptionOptions())


@pytest.mark.parametrize("model", ["embedded:nope", "no-such-size", "small", "someone/not-cached"])
def test_unknown_or_missing_models_are_not_found(transcriber: Transcriber, model: str) -> None:
    with pytest.raises(NotFoundError, match="model"):
        transcriber.transcribe(np.zeros(16_000, dtype=np.float32), [TimeRange(0, 1)], TranscriptionOptions(model=model))


def test_languages(transcriber: Transcriber) -> None:
    audio = np.zeros(16_000, dtype=np.float32)
    with pytest.raises(NotFoundError, match="knows: "):
        transcriber.transcribe(audio, [TimeRange(0, 1)], TranscriptionOptions(model=EMBEDDED_BASE, language_code="xx"))
    with pytest.raises(InvalidInputError, match="English-only"):
        transcriber.transcribe(audio, [TimeRange(0, 1)], TranscriptionOptions(language_code="fr"))
    base_languages = transcriber.models.get(EMBEDDED_BASE).languages
    assert len(base_languages) == 99
    assert to_whisper_language("pt-BR", base_languages) == "pt"
    assert to_whisper_language("jv", base_languages) == "jw"
    assert to_bcp47("jw") == "jv"


@pytest.mark.skipif(not FRENCH_PROMPT.is_file(), reason="asterisk-core-sounds-fr-wav is not installed")
def test_base_detects_and_transcribes_french(transcriber: Transcriber) -> None:
    audio = load_pcm16k(FRENCH_PROMPT)
    detection = transcriber.detect_language(audio, None, EMBEDDED_BASE)
    assert detection.language_code == "fr"
    assert detection.probability > 0.8
    assert detection.candidates[0] == ("fr", detection.probability)
    assert len(detection.candidates) == 5
    (transcript,) = transcriber.transcribe(
        audio, [TimeRange(0.0, audio.size / SAMPLE_RATE_HERTZ)], TranscriptionOptions(model=EMBEDDED_BASE)
    )
    assert transcript.language_code == "fr"
    text = " ".join(segment.text for segment in transcript.segments).lower()
    assert "conférence" in text


@pytest.mark.skipif(not FRENCH_PROMPT.is_file(), reason="asterisk-core-sounds-fr-wav is not installed")
def test_language_is_judged_on_the_speech_parts_given(transcriber: Transcriber, recording: Recording) -> None:
    """A packed chunk's language: French said after 30 s of English is
    French when only the French parts are listened to."""
    french = load_pcm16k(FRENCH_PROMPT)
    english = np.tile(recording.samples, 4)[: 32 * SAMPLE_RATE_HERTZ]
    audio = np.concatenate([english, french, english[: 5 * SAMPLE_RATE_HERTZ], french])
    french_s, english_s = french.size / SAMPLE_RATE_HERTZ, english.size / SAMPLE_RATE_HERTZ
    whole = TimeRange(0.0, audio.size / SAMPLE_RATE_HERTZ)
    second_s = english_s + french_s + 5.0
    parts = [TimeRange(english_s, english_s + french_s), TimeRange(second_s, second_s + french_s)]
    assert transcriber.detect_language(audio, whole, EMBEDDED_BASE).language_code == "en"
    assert transcriber.detect_language(audio, whole, EMBEDDED_BASE, parts=parts).language_code == "fr"
    with pytest.raises(InvalidInputError, match="not inside it"):
        transcriber.detect_language(audio, TimeRange(1.0, english_s), EMBEDDED_BASE, parts=parts)


def test_english_only_model_answers_english(transcriber: Transcriber) -> None:
    detection = transcriber.detect_language(np.zeros(16_000, dtype=np.float32), TimeRange(0.0, 1.0), EMBEDDED_TINY_EN)
    assert tuple(detection) == ("en", 1.0, (("en", 1.0),))


def test_embedded_base_is_built_once_and_rebuilt_when_damaged(tmp_path: Path) -> None:
    target = build_embedded_base(tmp_path / "base")
    model_bin = target / "model.bin"
    size_bytes = model_bin.stat().st_size
    built_ns = model_bin.stat().st_mtime_ns
    assert build_embedded_base(target).joinpath("model.bin").stat().st_mtime_ns == built_ns
    with open(model_bin, "r+b") as damaged:
        damaged.truncate(1000)
    build_embedded_base(target)
    assert model_bin.stat().st_size == size_bytes
    assert [path.name for path in tmp_path.iterdir()] == ["base"]  # no staging directory left behind


def _tune(duration_s: float) -> npt.NDArray[np.float32]:
    """A few notes of a scale with their harmonics: music, no words."""
    rate = 16_000
    t = np.arange(round(duration_s * rate)) / rate
    music = np.zeros_like(t)
    for number, frequency in enumerate([261.6, 329.6, 392.0, 523.3, 392.0, 329.6] * 4):
        start = round(number * 0.5 * rate)
        local = t[start : start + round(0.45 * rate)] - t[start]
        tone = np.sin(2 * np.pi * frequency * local) + 0.5 * np.sin(4 * np.pi * frequency * local)
        music[start : start + local.size] += np.exp(-3 * local) * tone
    return (0.3 * music / np.abs(music).max()).astype(np.float32)


def test_what_whisper_makes_up_on_music_and_noise_is_flagged(transcriber: Transcriber) -> None:
    """Whisper "hears" a word in music and noise ("you", "Okay."): the
    segment stays, flagged by its own signals, and subtitles that omit
    doubtful segments leave it out."""
    from common.transcript import doubt_flags
    from gateway.output.cues import SubtitleOptions, build_cues

    noise = np.random.default_rng(1).normal(0.0, 0.1, 12 * 16_000).astype(np.float32)
    for audio in (_tune(12.0), noise):
        (transcript,) = transcriber.transcribe(
            audio, [TimeRange(0.0, 12.0)], TranscriptionOptions(language_code="en", batch_size=1)
        )
        assert transcript.segments, "tiny.en makes something up here"
        for segment in transcript.segments:
            assert {"low_avg_logprob", "no_speech"} <= set(doubt_flags(segment)), segment
        assert not build_cues(transcript.segments, SubtitleOptions(omit_doubtful=True))


@needs_speech
def test_each_chunk_decodes_with_the_text_said_before_it(transcriber: Transcriber, recording: Recording) -> None:
    """A live stream's finals go with each chunk as previous text: the model
    follows their style (here, no capitals and no punctuation), batched or
    alone, and chunks of different contexts share a batch."""
    options = TranscriptionOptions(batch_size=3)
    contexts = ["one two", "three four", "five six"]
    prepared = transcriber.prepare(recording.samples, recording.chunks, options, contexts=contexts)
    batched = [
        " ".join(s.text for s in t.segments) for t in transcriber.decode_batch([(prepared, i) for i in range(3)])
    ]
    plain = [
        " ".join(s.text for s in t.segments)
        for t in transcriber.transcribe(recording.samples, recording.chunks, options)
    ]
    assert all(text[0].isupper() and text.endswith(".") for text in plain), plain
    assert all(text == text.lower() and not text.endswith(".") for text in batched), batched
    for position, (text, reference) in enumerate(zip(batched, recording.texts, strict=True)):
        assert word_error_rate(reference, text) <= 0.2, (reference, text)
        alone = transcriber.prepare(recording.samples, recording.chunks, options, contexts=[contexts[position]] * 3)
        (transcript,) = transcriber.decode_batch([(alone, position)])
        assert " ".join(s.text for s in transcript.segments) == text
    # Contexts of different lengths in one batch (each cut to the shortest's tokens).
    mixed = transcriber.prepare(
        recording.samples, recording.chunks, options, contexts=["", "a much longer context here", "hi"]
    )
    assert len(transcriber.decode_batch([(mixed, i) for i in range(3)])) == 3


@pytest.mark.parametrize(("argument", "limit"), [("contexts", 2000), ("prefixes", 600)])
def test_chunk_contexts_and_prefixes_are_checked(transcriber: Transcriber, argument: str, limit: int) -> None:
    audio = np.zeros(SAMPLE_RATE_HERTZ, dtype=np.float32)
    chunks = [TimeRange(0.0, 0.5), TimeRange(0.5, 1.0)]
    with pytest.raises(InvalidInputError, match="one per chunk"):
        transcriber.prepare(audio, chunks, TranscriptionOptions(), **{argument: ["only one"]})
    with pytest.raises(InvalidInputError, match=f"at most {limit}"):
        transcriber.prepare(audio, chunks, TranscriptionOptions(), **{argument: ["x" * (limit + 1), ""]})


@needs_speech
def test_a_prefix_is_continued_and_left_out(
    transcriber: Transcriber, recording: Recording, transcripts: list[ChunkTranscript]
) -> None:
    """A chunk that starts with audio already transcribed, whose text is
    given as its prefix: the result holds only what follows, timed in the
    audio after the prefix's; chunks of different prefixes share a batch."""
    first, second, third = recording.chunks
    said = [" ".join(segment.text for segment in transcript.segments) for transcript in transcripts]
    spans = [TimeRange(first.start_s, second.end_s), TimeRange(first.start_s, third.end_s), second]
    prefixes = [said[0], f"{said[0]} {said[1]}", ""]
    options = TranscriptionOptions(batch_size=3, word_timestamps=True)
    prepared = transcriber.prepare(recording.samples, spans, options, prefixes=prefixes)
    results = transcriber.decode_batch([(prepared, position) for position in range(3)])
    expected_texts = [recording.texts[1], recording.texts[2], recording.texts[1]]
    for transcript, expected, begins in zip(results, expected_texts, (second, third, second), strict=True):
        text = " ".join(segment.text for segment in transcript.segments)
        assert word_error_rate(expected, text) <= 0.2, (expected, text)
        words = [word for segment in transcript.segments for word in segment.words]
        assert len(words) == len(text.split())
        # The first word is in its own prompt's audio, not in the prefix's.
        assert begins.start_s - 0.3 <= words[0].start_s <= begins.start_s + 1.0, (words[0], begins)
        assert transcript.segments[0].start_s == words[0].start_s


def test_chunk_prefixes_need_transcripts_without_timestamps(transcriber: Transcriber) -> None:
    audio = np.zeros(SAMPLE_RATE_HERTZ, dtype=np.float32)
    chunks = [TimeRange(0.0, 0.5), TimeRange(0.5, 1.0)]
    with pytest.raises(InvalidInputError, match="without timestamps"):
        transcriber.prepare(audio, chunks, TranscriptionOptions(without_timestamps=False), prefixes=["a", "b"])


@needs_speech
def test_a_packed_chunk_is_its_parts_back_to_back_timed_in_the_whole_audio(
    transcriber: Transcriber, recording: Recording
) -> None:
    """Speech packing: a chunk spanning 40 s of silence between two prompts
    decodes their audio back to back, as one chunk of just that audio would,
    and its times land on the prompts in the whole audio."""
    first, second = recording.chunks[:2]
    silence_s = 40.0
    head = recording.samples[: round(second.start_s * SAMPLE_RATE_HERTZ)]
    tail = recording.samples[round(second.start_s * SAMPLE_RATE_HERTZ) :]
    audio = np.concatenate([head, np.zeros(round(silence_s * SAMPLE_RATE_HERTZ), dtype=np.float32), tail])
    moved = TimeRange(second.start_s + silence_s, second.end_s + silence_s)
    options = TranscriptionOptions(word_timestamps=True)
    span = TimeRange(first.start_s, moved.end_s)
    with pytest.raises(InvalidInputError, match="at most 30"):
        transcriber.prepare(audio, [span], options)
    (packed,) = transcriber.transcribe(audio, [span], options, parts=[[first, moved]])

    def samples_of(part: TimeRange) -> npt.NDArray[np.float32]:
        return audio[round(part.start_s * SAMPLE_RATE_HERTZ) : round(part.end_s * SAMPLE_RATE_HERTZ)]

    joined = np.concatenate([samples_of(first), samples_of(moved)])
    (alone,) = transcriber.transcribe(joined, [TimeRange(0.0, joined.size / SAMPLE_RATE_HERTZ)], options)
    assert [segment.text for segment in packed.segments] == [segment.text for segment in alone.segments]
    assert packed.time_range == span
    text = " ".join(segment.text for segment in packed.segments)
    assert word_error_rate(f"{recording.texts[0]} {recording.texts[1]}", text) <= 0.2, text
    seam_s = first.end_s - first.start_s
    for word, reference in zip(
        [w for s in packed.segments for w in s.words], [w for s in alone.segments for w in s.words], strict=True
    ):
        shift_s = first.start_s if (reference.start_s + reference.end_s) / 2 < seam_s else moved.start_s - seam_s
        assert word.start_s == pytest.approx(reference.start_s + shift_s, abs=2e-3)
        assert word.end_s == pytest.approx(reference.end_s + shift_s, abs=2e-3)
        assert any(part.start_s <= word.start_s <= word.end_s <= part.end_s for part in (first, moved)), word
    for segment in packed.segments:
        # From its first word to its last: never across the silence cut out.
        assert (segment.start_s, segment.end_s) == (segment.words[0].start_s, segment.words[-1].end_s)
        assert span.start_s <= segment.start_s <= segment.end_s <= span.end_s


@pytest.mark.parametrize(
    ("parts", "message"),
    [
        ([[TimeRange(0.0, 0.5)]], "parts for 1 chunks of 2"),
        ([[TimeRange(0.0, 0.5)], [TimeRange(0.2, 0.4), TimeRange(0.3, 0.6)]], "not inside it"),
        ([[TimeRange(0.0, 0.5)], [TimeRange(0.5, 0.9), TimeRange(0.95, 1.5)]], "not inside it"),
        ([[TimeRange(0.0, 0.5)], [TimeRange(0.1, 0.2)]], "not inside it"),
        ([[], [TimeRange(1.0 + 0.1 * i, 1.0 + 0.1 * i + 0.05) for i in range(1025)]], "at most 1024"),
        ([[TimeRange(0.0, 0.5)], [TimeRange(0.192, 0.198)]], "no part of chunk 1"),
    ],
    ids=["count", "overlap", "past-the-end", "before-the-start", "too-many", "clipped-away"],
)
def test_chunk_parts_are_checked(transcriber: Transcriber, parts: list[list[TimeRange]], message: str) -> None:
    audio = np.zeros(200 * SAMPLE_RATE_HERTZ, dtype=np.float32)
    chunks = (
        [TimeRange(0.0, 0.5), TimeRange(0.5, 200.0)]
        if message == "at most 1024"
        else [
            TimeRange(0.0, 0.5),
            TimeRange(0.2, 1.0),
        ]
    )
    with pytest.raises(InvalidInputError, match=message):
        transcriber.prepare(audio, chunks, TranscriptionOptions(), parts=parts)


def test_packed_parts_hold_at_most_30_s_and_take_no_prefix(transcriber: Transcriber) -> None:
    audio = np.zeros(100 * SAMPLE_RATE_HERTZ, dtype=np.float32)
    chunk = [TimeRange(0.0, 100.0)]
    with pytest.raises(InvalidInputError, match="together; at most 30"):
        transcriber.prepare(audio, chunk, TranscriptionOptions(), parts=[[TimeRange(0, 20), TimeRange(50, 70)]])
    with pytest.raises(InvalidInputError, match="cannot have a prefix"):
        transcriber.prepare(audio, chunk, TranscriptionOptions(), parts=[[TimeRange(0, 20)]], prefixes=["hello"])

"""A reference of real word onsets, to score word timestamps against.

Single-word human recordings (Debian's Asterisk core sounds: the spoken
digits of the English voice and of the Canadian French one, 8 kHz WAV) are
strung together into "sentences" of several digits, as someone reads out a
phone number: short gaps between the words of a sentence, longer pauses
between sentences. Each recording is decoded to 16 kHz once; where its sound
starts and ends is found on the isolated recording (5 ms frames whose energy
is within `SOUND_BELOW_PEAK_DB` of the file's loudest frame), so the true
start of every word in the result is where its recording was placed plus
that onset, to the sample.

`timed_tokens` and `start_errors_s` score a transcript against it: digits
written as numbers ("5", "551") are spelled out, and recognised words are
matched to the reference's by position when the counts agree, else by text.
Inside `raw_word_timestamps()` the ASR engine returns Whisper's word times
without snapping them out of silence, so both can be scored.

The recordings come from `make test-data`; when they are missing
`build_word_reference` raises `FileNotFoundError` (tests fail, never skip).
"""

from __future__ import annotations

import contextlib
import difflib
import random
import re
import unittest.mock
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import numpy.typing as npt

import services.asr.engine
from common.transcript import Segment, TimeRange
from tests.speech import ASTERISK_SOUNDS_DIR, SAMPLE_RATE_HERTZ, load_pcm16k

# The folders of spoken digits ("0.wav" ... "9.wav") by language, first existing one used:
# Debian installs the French voice as fr_CA_f_June, with "fr" as an alternative that may not be set.
DIGIT_DIRS: dict[str, tuple[Path, ...]] = {
    "en": (ASTERISK_SOUNDS_DIR / "digits",),
    "fr": (Path("/usr/share/asterisk/sounds/fr/digits"), Path("/usr/share/asterisk/sounds/fr_CA_f_June/digits")),
    # Mexican Spanish (Allison again), Italian (Carlo), Russian: bench.word_timing only.
    "es": (Path("/usr/share/asterisk/sounds/es_MX_f_Allison/digits"),),
    "it": (Path("/usr/share/asterisk/sounds/it_IT_m_Carlo/digits"),),
    "ru": (Path("/usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU/digits"),),
}
# What each digit recording says, index = digit.
DIGIT_WORDS: dict[str, tuple[str, ...]] = {
    "en": ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine"),
    "fr": ("zéro", "un", "deux", "trois", "quatre", "cinq", "six", "sept", "huit", "neuf"),
    "es": ("cero", "uno", "dos", "tres", "cuatro", "cinco", "seis", "siete", "ocho", "nueve"),
    "it": ("zero", "uno", "due", "tre", "quattro", "cinque", "sei", "sette", "otto", "nove"),
    "ru": ("ноль", "один", "два", "три", "четыре", "пять", "шесть", "семь", "восемь", "девять"),
}
# A frame is sound when its energy is within this much of the file's loudest frame.
SOUND_BELOW_PEAK_DB = 35.0
# Frames of the onset search.
SOUND_FRAME_S = 0.005


class ReferenceWord(NamedTuple):
    """Where one word's sound lies in the reference recording."""

    text: str
    start_s: float
    end_s: float


class ReferenceSentence(NamedTuple):
    """One run of words: the chunk a recogniser is given, and its words."""

    # The recordings of its words, from the first one's start to the last one's end
    # (each recording has some silence of its own around the word), padded.
    time_range: TimeRange
    words: tuple[ReferenceWord, ...]


class WordReference(NamedTuple):
    """Words strung together: 16 kHz mono samples and where every word starts."""

    samples: npt.NDArray[np.float32]
    sentences: list[ReferenceSentence]
    language_code: str

    @property
    def words(self) -> list[ReferenceWord]:
        return [word for sentence in self.sentences for word in sentence.words]

    @property
    def duration_s(self) -> float:
        return self.samples.size / SAMPLE_RATE_HERTZ


@dataclass(frozen=True)
class _Recording:
    text: str
    samples: npt.NDArray[np.float32]
    # Sound inside the recording, in samples.
    onset_samples: int
    offset_samples: int


def sound_bounds(
    samples: npt.NDArray[np.float32],
    below_peak_db: float = SOUND_BELOW_PEAK_DB,
    frame_s: float = SOUND_FRAME_S,
) -> tuple[int, int]:
    """First and one-past-last sample of the sound in an isolated recording:
    from the first to the last `frame_s` frame whose energy is within
    `below_peak_db` of the loudest frame's. (0, 0) when there is no sound."""
    frame_samples = max(1, round(frame_s * SAMPLE_RATE_HERTZ))
    frame_count = samples.size // frame_samples
    if frame_count == 0:
        return 0, 0
    frames = samples[: frame_count * frame_samples].astype(np.float64).reshape(frame_count, frame_samples)
    energy = np.mean(frames * frames, axis=1)
    peak = float(energy.max())
    if peak <= 0.0:
        return 0, 0
    loud = np.flatnonzero(energy >= peak * 10.0 ** (-below_peak_db / 10.0))
    return int(loud[0]) * frame_samples, (int(loud[-1]) + 1) * frame_samples


def digit_dir(language_code: str) -> Path:
    """The folder of the spoken digits of `language_code` ("en", "fr");
    `FileNotFoundError` (run `make test-data`) when none is installed."""
    if language_code not in DIGIT_DIRS:
        raise ValueError(f"no digit recordings for language {language_code!r}; known: {', '.join(DIGIT_DIRS)}")
    for folder in DIGIT_DIRS[language_code]:
        if all((folder / f"{digit}.wav").is_file() for digit in range(10)):
            return folder
    tried = ", ".join(str(folder) for folder in DIGIT_DIRS[language_code])
    raise FileNotFoundError(f"the {language_code} digit recordings are not installed ({tried}): run `make test-data`")


def load_digits(language_code: str) -> list[_Recording]:
    """The ten digit recordings of a language at 16 kHz, with their sound bounds."""
    folder = digit_dir(language_code)
    recordings = []
    for digit, text in enumerate(DIGIT_WORDS[language_code]):
        samples = load_pcm16k(folder / f"{digit}.wav")
        onset, offset = sound_bounds(samples)
        if offset <= onset:
            raise ValueError(f"{folder / f'{digit}.wav'} has no sound")
        recordings.append(_Recording(text, samples, onset, offset))
    return recordings


def build_word_reference(
    language_code: str,
    min_duration_s: float = 30.0,
    *,
    seed: int = 0,
    words_per_sentence: tuple[int, int] = (5, 10),
    word_gap_s: tuple[float, float] = (0.05, 0.3),
    sentence_pause_s: tuple[float, float] = (0.6, 1.5),
    sentence_pad_s: float = 0.2,
) -> WordReference:
    """Sentences of random digits in `language_code` ("en", "fr") until the
    recording lasts at least `min_duration_s`.

    Each sentence has a word count drawn from `words_per_sentence` (inclusive),
    silence drawn from `word_gap_s` between its recordings and from
    `sentence_pause_s` before it (and after the last one); every draw comes
    from `random.Random(seed)`, so a seed always gives the same recording.
    A sentence's time range reaches `sentence_pad_s` beyond its first and last
    recordings (at most half the pause, so ranges never overlap).
    """
    recordings = load_digits(language_code)
    draw = random.Random(seed)
    pieces: list[npt.NDArray[np.float32]] = []
    # Where each sentence's recordings start, and which recordings they are.
    layout: list[list[tuple[int, _Recording]]] = []
    pauses_samples: list[int] = []
    length_samples = 0

    def add_silence(duration_s: float) -> int:
        nonlocal length_samples
        samples = round(duration_s * SAMPLE_RATE_HERTZ)
        pieces.append(np.zeros(samples, dtype=np.float32))
        length_samples += samples
        return samples

    while length_samples < min_duration_s * SAMPLE_RATE_HERTZ:
        pauses_samples.append(add_silence(draw.uniform(*sentence_pause_s)))
        placed: list[tuple[int, _Recording]] = []
        for position in range(draw.randint(*words_per_sentence)):
            if position:
                add_silence(draw.uniform(*word_gap_s))
            recording = recordings[draw.randrange(len(recordings))]
            placed.append((length_samples, recording))
            pieces.append(recording.samples)
            length_samples += recording.samples.size
        layout.append(placed)
    pauses_samples.append(add_silence(draw.uniform(*sentence_pause_s)))

    sentences = []
    for index, placed in enumerate(layout):
        first_start = placed[0][0]
        last_end = placed[-1][0] + placed[-1][1].samples.size
        pad_before = min(round(sentence_pad_s * SAMPLE_RATE_HERTZ), pauses_samples[index] // 2)
        pad_after = min(round(sentence_pad_s * SAMPLE_RATE_HERTZ), pauses_samples[index + 1] // 2)
        words = tuple(
            ReferenceWord(
                recording.text,
                (start + recording.onset_samples) / SAMPLE_RATE_HERTZ,
                (start + recording.offset_samples) / SAMPLE_RATE_HERTZ,
            )
            for start, recording in placed
        )
        time_range = TimeRange(
            (first_start - pad_before) / SAMPLE_RATE_HERTZ, (last_end + pad_after) / SAMPLE_RATE_HERTZ
        )
        sentences.append(ReferenceSentence(time_range, words))
    return WordReference(np.concatenate(pieces), sentences, language_code)


# Characters around a token that are not part of the word.
_EDGE_PUNCTUATION = "\"'.,;:!?()[]{}\u00ab\u00bb\u2026\u2013\u2014-"
# Between the digits of a number written as one token: "555-1234", "06.12".
_NUMBER_SEPARATORS = re.compile("[-\u2013\u2014./]")
# Other spellings of the reference's words, by language.
_SPELLINGS: dict[str, dict[str, str]] = {
    "en": {"oh": "zero"},
    "fr": {"zero": "zéro"},
    "es": {"un": "uno"},
    "ru": {"нуль": "ноль", "одна": "один", "две": "два"},
}


class TimedToken(NamedTuple):
    """A recognised word as reference words go, with its start (None: not
    timed on its own, the second and later digits of a number)."""

    text: str
    start_s: float | None
    interpolated: bool = False


def spoken_words(token: str, language_code: str) -> list[str]:
    """A recognised token as the reference's words: lower case, without the
    punctuation around it, every digit of a number spelled out ("5," ->
    ["five"], "551" -> three words, "cinq" -> ["cinq"])."""
    text = token.lower().strip(_EDGE_PUNCTUATION)
    compact = _NUMBER_SEPARATORS.sub("", text)
    if compact.isdigit():
        return [DIGIT_WORDS[language_code][int(digit)] for digit in compact]
    if not text:
        return []
    return [_SPELLINGS.get(language_code, {}).get(text, text)]


def timed_tokens(segments: Sequence[Segment], language_code: str) -> list[TimedToken]:
    """The words of `segments` as reference words (`spoken_words`); a token
    that spells several gives its start to the first only."""
    return [
        TimedToken(text, word.start_s if position == 0 else None, word.interpolated)
        for segment in segments
        for word in segment.words
        for position, text in enumerate(spoken_words(word.text, language_code))
    ]


def match_words(reference: Sequence[str], hypothesis: Sequence[str]) -> list[tuple[int, int]]:
    """(reference index, hypothesis index) pairs: by position when the counts
    agree (a misrecognised digit still has its place), else the words the
    two sequences have in common, in order (difflib's matching blocks)."""
    if len(reference) == len(hypothesis):
        return [(index, index) for index in range(len(reference))]
    matcher = difflib.SequenceMatcher(a=list(reference), b=list(hypothesis), autojunk=False)
    return [
        (block.a + offset, block.b + offset) for block in matcher.get_matching_blocks() for offset in range(block.size)
    ]


def start_errors_s(sentence: ReferenceSentence, tokens: Sequence[TimedToken]) -> list[tuple[float, TimedToken]]:
    """(recognised start - true start, token) of every timed token of one
    sentence's transcript matched to one of its words; negative: early."""
    pairs = match_words([word.text for word in sentence.words], [token.text for token in tokens])
    return [
        (start_s - sentence.words[reference_index].start_s, tokens[token_index])
        for reference_index, token_index in pairs
        if (start_s := tokens[token_index].start_s) is not None
    ]


@contextlib.contextmanager
def raw_word_timestamps() -> Iterator[None]:
    """Within it, the ASR engine's word timestamps are Whisper's
    cross-attention times as they come, not snapped out of silence (the
    engine snaps them whenever it times words), so a benchmark can score both."""
    if not hasattr(services.asr.engine, "snap_words_to_sound"):
        yield  # an engine that does not snap
        return

    def unchanged(segments: Sequence[Segment], *_: object, **__: object) -> tuple[Segment, ...]:
        return tuple(segments)

    with unittest.mock.patch.object(services.asr.engine, "snap_words_to_sound", unchanged):
        yield

"""Transcripts the output tests share: timed segments and generated ones."""

from __future__ import annotations

import random

from common.transcript import Segment, Word

_VOCABULARY = (
    *("a", "I", "the", "of", "to", "and", "in", "is", "it", "you", "that", "he", "was", "for", "on", "are"),
    *("with", "as", "his", "they", "be", "at", "one", "have", "this", "from", "or", "had", "by", "word"),
    *("but", "what", "some", "we", "can", "out", "other", "were", "all", "there", "when", "up", "use"),
    *("your", "how", "said", "an", "each"),
    *("extraordinary", "internationalisation", "telecommunications", "responsibilities"),
)


_SENTENCE_MARKS = (".", "!", "?", "\u2026")


_CLAUSE_MARKS = (",", ";", ":")


def _random_word(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.01:
        return "Pneumonoultramicroscopicsilicovolcanoconiosis-and-more"  # longer than a line
    word = rng.choice(_VOCABULARY)
    if roll < 0.03:
        word = f"<{word}>&co"  # characters WebVTT must escape
    elif roll < 0.1:
        word += rng.choice(_SENTENCE_MARKS)
    elif roll < 0.18:
        word += rng.choice(_CLAUSE_MARKS)
    return word


def random_transcript(rng: random.Random) -> list[Segment]:
    """Segments in time order; words whisper-style (leading space) or bare, sometimes none."""
    segments = []
    time_s = rng.uniform(0.0, 3.0)
    for _ in range(rng.randint(0, 6)):
        seconds_per_word = rng.choice((0.05, 0.25, 0.4, 0.9))
        texts = [_random_word(rng) for _ in range(rng.randint(1, 60))]
        words = []
        for text in texts:
            duration_s = rng.choice((0.0, 0.001, seconds_per_word, rng.uniform(0, 2 * seconds_per_word)))
            words.append(Word(text, round(time_s, 3), round(time_s + duration_s, 3), probability=rng.random()))
            time_s += duration_s + rng.choice((0.0, 0.0, 0.05, 0.3, 0.7, 2.0))
        segment_words = tuple(words)
        if rng.random() < 0.5:
            segment_words = tuple(Word(" " + word.text, word.start_s, word.end_s) for word in words)
        if rng.random() < 0.15:
            segment_words = ()
        segments.append(Segment(" ".join(texts), words[0].start_s, words[-1].end_s, segment_words))
        time_s += rng.choice((0.0, 0.5, 3.0))
    return segments


def timed_segment(text: str, seconds_per_word: float = 0.3, start_s: float = 0.0) -> Segment:
    words = []
    for index, word in enumerate(text.split()):
        word_start_s = start_s + index * seconds_per_word
        words.append(Word(" " + word, word_start_s, word_start_s + seconds_per_word * 0.8, 0.9))
    return Segment(text, start_s, words[-1].end_s, tuple(words))

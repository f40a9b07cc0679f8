"""The LocalAgreement policy of a live stream (whisper_streaming's
LocalAgreement-2): which leading words of a growing utterance two consecutive
hypotheses agree on, and which of them may be made final, where an utterance
is cut. Plain functions of words; no audio, no decoder."""

from __future__ import annotations

import re
from collections.abc import Sequence

from common.transcript import Word
from gateway.output.cues import punctuation_end


def _norm(word: str) -> str:
    return re.sub(r"[^\w']", "", word.lower())


def agreed_prefix(previous: Sequence[Word], current: Sequence[Word]) -> int:
    """How many leading words of `current` `previous` has too (case and
    punctuation aside)."""
    count = 0
    for before, now in zip(previous, current, strict=False):
        if _norm(before.text) != _norm(now.text):
            break
        count += 1
    return count


class LocalAgreement:
    """The agreement of an utterance's hypotheses: each one observed is
    compared with the one before it."""

    def __init__(self) -> None:
        self._previous: tuple[Word, ...] = ()
        # Leading words of the latest hypothesis agreed on with the one before it.
        self.agreed = 0

    def observe(self, words: tuple[Word, ...]) -> int:
        """Takes the latest hypothesis' words; returns how many of them are agreed."""
        self.agreed = agreed_prefix(self._previous, words)
        self._previous = words
        return self.agreed


def agreed_sentence_end(words: Sequence[Word], agreed: int) -> int:
    """How many leading `words` end at the last sentence end among the
    `agreed` ones that a word follows; 0 when there is none."""
    for kept in range(min(agreed, len(words) - 1), 0, -1):
        if punctuation_end(words[kept - 1].text) == "sentence":
            return kept
    return 0


def sentence_to_commit(words: Sequence[Word], agreed: int, *, at_pause: bool) -> int:
    """Words of a long utterance's latest hypothesis to make final now: up to
    its last agreed sentence end when a word follows it, or all of them when
    it was decoded at a pause and ends a sentence; 0 when there is none."""
    if at_pause and words and punctuation_end(words[-1].text) == "sentence":
        # Decoded at a pause and ending a sentence: made final at once.
        # (Now and then the speaker goes on: "have at least. A 28.8 kilobit
        # modem" became "have it leased."; waiting for the next step to
        # agree cost long speech's sentences 1.7 s of latency, and the
        # first results of other streams 0.5 s at p95, for no gain in WER
        # on bench.streaming.)
        return len(words)
    return agreed_sentence_end(words, agreed)


def cut_position(words: Sequence[Word], agreed: int) -> int:
    """How many of the agreed leading `words` to make final when an
    utterance is cut: at the last sentence end among the later half of them,
    else at the last clause end, else at the widest pause between words,
    else all of them."""
    candidates = range(max(1, (agreed + 1) // 2), agreed + 1)

    def gap(kept: int) -> float:
        return words[kept].start_s - words[kept - 1].end_s if kept < len(words) else 0.0

    def score(kept: int) -> tuple[int, float, int]:
        text = words[kept - 1].text
        ending = {"sentence": 2, "clause": 1}.get(punctuation_end(text), 0)
        return ending, gap(kept) if ending == 0 else 0.0, kept

    best = max(candidates, key=score)
    return best if score(best)[:2] != (0, 0.0) else agreed

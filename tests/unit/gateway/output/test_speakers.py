"""Speakers on a transcript (gateway/output/speakers.py): words take the speaker of
the turn they overlap most, segments split where it changes."""

from __future__ import annotations

from common.transcript import Segment, Word
from gateway.output.speakers import Turn, assign_speakers, speaker_at

TURNS = [Turn(0.0, 3.0, "SPEAKER_00"), Turn(3.2, 6.0, "SPEAKER_01"), Turn(6.5, 9.0, "SPEAKER_00")]


def _segment(*words: tuple[str, float, float]) -> Segment:
    return Segment(
        " ".join(text for text, _, _ in words),
        words[0][1],
        words[-1][2],
        tuple(Word(text, start, end) for text, start, end in words),
        chunk_index=3,
    )


def test_a_word_takes_the_speaker_it_overlaps_most_or_the_nearest() -> None:
    assert speaker_at(2.5, 3.4, TURNS) == "SPEAKER_00"
    assert speaker_at(2.9, 3.9, TURNS) == "SPEAKER_01"
    assert speaker_at(6.35, 6.45, TURNS) == "SPEAKER_00"  # in a gap: the nearest turn
    assert speaker_at(6.05, 6.15, TURNS) == "SPEAKER_01"
    assert speaker_at(1.0, 2.0, []) == ""


def test_a_segment_is_split_where_the_speaker_changes() -> None:
    segment = _segment(("Are", 2.0, 2.3), ("you", 2.3, 2.6), ("sure?", 2.6, 2.95), ("Yes,", 3.3, 3.7), ("I", 3.8, 3.9),
                       ("am.", 3.9, 4.4))  # fmt: skip
    first, second = assign_speakers([segment], TURNS)
    assert (first.text, first.speaker, first.start_s, first.end_s) == ("Are you sure?", "SPEAKER_00", 2.0, 2.95)
    assert (second.text, second.speaker, second.start_s, second.end_s) == ("Yes, I am.", "SPEAKER_01", 3.3, 4.4)
    assert first.chunk_index == second.chunk_index == 3
    assert [word.text for word in first.words + second.words] == [word.text for word in segment.words]


def test_a_lone_short_word_across_a_turn_edge_is_not_a_turn() -> None:
    segment = _segment(("Thank", 1.8, 2.2), ("you", 2.2, 2.6), ("all.", 3.0, 3.3))
    (only,) = assign_speakers([segment], TURNS)
    assert (only.text, only.speaker) == ("Thank you all.", "SPEAKER_00")


def test_without_words_or_turns() -> None:
    bare = Segment("Hello.", 3.5, 5.0)
    assert assign_speakers([bare], TURNS)[0].speaker == "SPEAKER_01"
    assert assign_speakers([bare], [])[0].speaker == ""

"""The pipeline's policy functions: the alignment method, runs of consecutive
chunks, the last chunks' share, and the coverage check's windows and merge."""

from __future__ import annotations

import pytest

from common.transcript import Segment, TimeRange
from gateway.jobs.run.policy import (
    choose_align_method,
    consecutive_runs,
    merge_found_segments,
    tail_share,
    uncovered_speech,
)
from subtitler.align.v1 import align_pb2
from subtitler.asr.v1 import asr_pb2
from subtitler.gateway.v1 import gateway_pb2


def test_align_method_policy() -> None:
    english = asr_pb2.TranscriptionOptions(language_code="en-GB")
    french = asr_pb2.TranscriptionOptions(language_code="fr")
    translated = asr_pb2.TranscriptionOptions(language_code="en", task=asr_pb2.TASK_TRANSLATE)
    stored_before_profiles = gateway_pb2.JobConfig()
    assert choose_align_method(stored_before_profiles, english) == align_pb2.ALIGN_METHOD_PHONETIC
    assert choose_align_method(stored_before_profiles, french) == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
    assert choose_align_method(stored_before_profiles, translated) == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
    chosen = gateway_pb2.JobConfig(align_method=align_pb2.ALIGN_METHOD_CROSS_ATTENTION)
    assert choose_align_method(chosen, english) == align_pb2.ALIGN_METHOD_CROSS_ATTENTION
    skipped = gateway_pb2.JobConfig(skip_alignment=True, align_method=align_pb2.ALIGN_METHOD_PHONETIC)
    assert choose_align_method(skipped, english) == align_pb2.ALIGN_METHOD_UNSPECIFIED


def test_consecutive_runs_split_where_indices_jump() -> None:
    assert consecutive_runs([1, 2, 3, 5, 6, 9], key=lambda index: index) == [[1, 2, 3], [5, 6], [9]]
    assert consecutive_runs([], key=lambda index: index) == []


@pytest.mark.parametrize(
    ("size", "queued", "workers", "done", "more", "expected"),
    [
        (4, 20, 2, False, None, 4),
        (4, 20, 2, True, None, 4),
        (4, 6, 2, True, None, 3),
        (4, 3, 2, True, None, 1),
        (4, 1, 2, True, None, 1),
        # While detection runs: what is queued and what is still to come.
        (8, 2, 2, False, None, 8),  # nothing known yet
        (8, 2, 2, False, 7.2, 5),  # 10 chunks in all over 2 replicas: 5 each, not 8 and 2
        (8, 8, 2, False, 0.4, 5),  # the last 9
        (8, 20, 2, False, 20.0, 8),
    ],
)
def test_the_last_chunks_are_shared_over_the_workers(
    size: int, queued: int, workers: int, done: bool, more: float | None, expected: int
) -> None:
    assert tail_share(size, queued, workers, detection_done=done, expected_more=more) == expected


def test_the_coverage_check_finds_speech_no_segment_covers() -> None:
    chunk = TimeRange(10.0, 30.0)
    speech = [TimeRange(10.5, 14.0), TimeRange(15.0, 15.6), TimeRange(17.0, 21.0), TimeRange(25.0, 29.5)]
    segments = [
        Segment("Covered.", 10.4, 14.1),
        Segment("Barely.", 17.0, 17.3),  # 0.3 of 4 s: under a fifth
        Segment("Right after.", 21.2, 24.0),
    ]
    # 15.0-15.6 is too short to look at again; 17-21 is padded but kept clear
    # of the segments on either side; 25-29.5 is padded to the chunk's end.
    assert uncovered_speech(speech, segments, chunk) == [TimeRange(17.3, 21.2), TimeRange(24.7, 29.8)]
    assert uncovered_speech(speech, [*segments, Segment("Late.", 25.0, 29.0)], chunk) == [TimeRange(17.3, 21.2)]
    assert uncovered_speech([], segments, chunk) == []


def test_the_coverage_check_of_a_packed_chunk_looks_again_in_windows_whisper_takes() -> None:
    # 20 speech ranges of 1.5 s, 0.2 s apart: a packed chunk spanning 33.8 s.
    speech = [TimeRange(100.0 + 1.7 * i, 101.5 + 1.7 * i) for i in range(20)]
    chunk = TimeRange(speech[0].start_s, speech[-1].end_s)
    windows = uncovered_speech(speech, [], chunk)
    assert len(windows) == 2
    assert all(window.end_s - window.start_s <= 30.0 for window in windows)
    assert windows[0].start_s == chunk.start_s and windows[-1].end_s == chunk.end_s
    assert windows[0].end_s == windows[1].start_s


def test_what_a_second_look_finds_is_kept_in_order_unless_doubtful() -> None:
    first, last = Segment("One.", 1.0, 2.0), Segment("Three.", 5.0, 6.0)
    found = [
        Segment("Two.", 3.0, 4.0, avg_logprob=-0.3),
        Segment("you", 4.2, 4.5, avg_logprob=-1.4),  # doubtful: left out
        Segment(" ", 4.6, 4.7),
        Segment("one", 4.8, 4.9),  # said already: the first segment's times had drifted
    ]
    assert [segment.text for segment in merge_found_segments([first, last], found)] == ["One.", "Two.", "Three."]

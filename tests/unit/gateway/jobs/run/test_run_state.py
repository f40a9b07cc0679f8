"""A job's run state: restored from a real store's checkpoint, summarised
for a resumed job, and put together into the job's segments."""

from __future__ import annotations

import pytest

from common.rpc.convert import seconds_to_duration
from common.transcript import Segment, TimeRange
from gateway.jobs.run.run_state import RunState, SpeechChunk
from gateway.store.job_store import JobStore
from subtitler.align.v1 import align_pb2
from subtitler.diarize.v1 import diarize_pb2
from tests.unit.gateway.jobs.job_fakes import new_job


def turns(*spans: tuple[str, float, float]) -> diarize_pb2.DiarizeResponse:
    return diarize_pb2.DiarizeResponse(
        turns=[
            diarize_pb2.SpeakerTurn(
                speaker=speaker, start_offset=seconds_to_duration(start_s), end_offset=seconds_to_duration(end_s)
            )
            for speaker, start_s, end_s in spans
        ],
        speaker_count=len({speaker for speaker, _, _ in spans}),
    )


def test_a_new_job_starts_with_nothing() -> None:
    state = RunState.from_checkpoint(None)
    assert state == RunState()
    assert state.resume_summary(audio_reused=False).transcribed_chunk_count == 0


def test_a_resumed_job_takes_up_what_it_stored(store: JobStore) -> None:
    job = new_job(store)
    store.save_speech_chunk(job.job_id, 1, TimeRange(10.0, 20.0), [TimeRange(11.0, 19.0)])
    store.save_speech_chunk(job.job_id, 0, TimeRange(0.0, 10.0), [TimeRange(1.0, 9.0)])
    store.mark_detection_complete(job.job_id)
    first = [Segment("One.", 1.0, 2.0, chunk_index=0)]
    store.save_chunk_transcript(job.job_id, 0, "en", first)
    store.save_chunk_alignment(job.job_id, 0, align_pb2.ALIGN_METHOD_PHONETIC, first)
    store.save_speaker_turns(job.job_id, turns(("SPEAKER_00", 0.0, 20.0)))

    state = RunState.from_checkpoint(store.checkpoint(job.job_id))
    assert state.chunks == [
        SpeechChunk(0, TimeRange(0.0, 10.0), (TimeRange(1.0, 9.0),)),
        SpeechChunk(1, TimeRange(10.0, 20.0), (TimeRange(11.0, 19.0),)),
    ]
    assert state.restored_detection and not state.detection_done
    assert state.transcripts == {0: first} and state.aligned == {0: first}
    assert state.speaker_turns is not None and state.speaker_turns.speaker_count == 1
    summary = state.resume_summary(audio_reused=True)
    assert summary.audio_reused and summary.detection_reused
    assert (summary.transcribed_chunk_count, summary.aligned_chunk_count) == (1, 1)


def test_chunks_to_come_follow_the_rate_found_so_far() -> None:
    state = RunState()
    assert state.chunks_to_come(100.0) is None  # nothing found yet
    state.chunks = [SpeechChunk(0, TimeRange(0.0, 10.0)), SpeechChunk(1, TimeRange(10.0, 20.0))]
    state.analysed_s = 25.0
    assert state.chunks_to_come(100.0) == pytest.approx(6.0)
    state.detection_done = True
    assert state.chunks_to_come(100.0) == 0.0


def test_segments_come_in_chunk_order_with_their_speakers() -> None:
    state = RunState(chunks=[SpeechChunk(1, TimeRange(0.0, 5.0)), SpeechChunk(0, TimeRange(5.0, 10.0))])
    state.transcripts = {0: [Segment("Second.", 6.0, 7.0)], 1: [Segment("First.", 1.0, 2.0)]}
    state.aligned = {0: [Segment("Second, aligned.", 6.0, 7.0)], 1: [Segment("First, aligned.", 1.0, 2.0)]}
    assert [segment.text for segment in state.segments(skip_alignment=True)] == ["First.", "Second."]
    assert [segment.text for segment in state.segments(skip_alignment=False)] == [
        "First, aligned.",
        "Second, aligned.",
    ]
    state.speaker_turns = turns(("SPEAKER_00", 0.0, 5.0), ("SPEAKER_01", 5.0, 10.0))
    assert [segment.speaker for segment in state.segments(skip_alignment=True)] == ["SPEAKER_00", "SPEAKER_01"]

from __future__ import annotations

from pathlib import Path

import pytest

from common.errors import NotFoundError
from common.transcript import Segment, TimeRange, Word
from gateway.store.job_store import JobStore
from subtitler.common.v1 import common_pb2
from tests.unit.gateway.store.store_fixtures import new_job


def test_stage_outputs_make_a_checkpoint(location: str | Path) -> None:
    store = JobStore(location)
    store.jobs.insert_job(new_job("a"))
    store.outputs.save_speech_chunk("a", 0, TimeRange(0.5, 29.0))
    store.outputs.save_speech_chunk("a", 1, TimeRange(30.0, 41.0))
    words = (Word("Hello", 0.5, 0.9, 0.8), Word("world.", 1.0, 1.4, 0.7, interpolated=True))
    store.outputs.save_chunk_transcript("a", 0, "en", [Segment("Hello world.", 0.5, 1.4, chunk_index=0)])
    store.outputs.save_chunk_alignment("a", 0, 2, [Segment("Hello world.", 0.5, 1.4, words=words)])
    checkpoint = store.outputs.checkpoint("a")
    assert not checkpoint.detection_complete
    assert checkpoint.speech_chunks == {0: TimeRange(0.5, 29.0), 1: TimeRange(30.0, 41.0)}
    assert checkpoint.transcripts[0][0] == "en"
    assert checkpoint.alignments[0][1][0].words == words
    store.outputs.mark_detection_complete("a")
    assert store.outputs.checkpoint("a").detection_complete
    store.close()


def test_the_audio_handle_speech_ranges_and_result_are_kept(location: str | Path) -> None:
    store = JobStore(location)
    store.jobs.insert_job(new_job("a"))
    assert store.outputs.audio_handle("a") is None
    store.outputs.save_audio_handle("a", common_pb2.AudioHandle(audio_id="pcm-1"))
    assert store.outputs.audio_handle("a") == common_pb2.AudioHandle(audio_id="pcm-1")
    speech = (TimeRange(0.5, 3.0), TimeRange(4.0, 9.5))
    store.outputs.save_speech_chunk("a", 0, TimeRange(0.5, 9.5), speech)
    checkpoint = store.outputs.checkpoint("a")
    assert checkpoint.audio_handle is not None and checkpoint.audio_handle.audio_id == "pcm-1"
    assert checkpoint.speech_ranges == {0: speech}
    store.outputs.save_audio_handle("a", None)  # released
    assert store.outputs.checkpoint("a").audio_handle is None
    with pytest.raises(NotFoundError, match="no stored result"):
        store.outputs.result("a")
    with pytest.raises(NotFoundError, match="no job"):
        store.outputs.checkpoint("missing")
    store.close()

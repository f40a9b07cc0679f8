"""Every stage's output, each stored in its own transaction as it is
produced, so a stopped job resumes from its checkpoint: the audio handle,
the speech chunks (time ranges only), each chunk's transcript and aligned
words, the speaker turns, and the final result with the job's final state."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field

from google.protobuf.message import DecodeError

from common.errors import NotFoundError
from common.transcript import Segment, TimeRange, Word
from gateway.records import JobRecord
from gateway.store.errors import CorruptRecordError
from gateway.store.job_rows import update_job_row
from gateway.store.session import StoreSession
from subtitler.common.v1 import common_pb2
from subtitler.diarize.v1 import diarize_pb2


@dataclass(frozen=True)
class Checkpoint:
    """What a job had finished when it stopped: every stage output stored."""

    audio_handle: common_pb2.AudioHandle | None
    speech_chunks: dict[int, TimeRange]
    detection_complete: bool
    # chunk index -> (language code, segments)
    transcripts: dict[int, tuple[str, list[Segment]]]
    # chunk index -> (align method, segments with words)
    alignments: dict[int, tuple[int, list[Segment]]]
    # The diarization, when done.
    speaker_turns: diarize_pb2.DiarizeResponse | None = None
    # chunk index -> the speech ranges merged into it (empty for chunks stored before schema 5)
    speech_ranges: dict[int, tuple[TimeRange, ...]] = field(default_factory=dict)


def segments_to_json(segments: Sequence[Segment]) -> str:
    return json.dumps([asdict(segment) for segment in segments], separators=(",", ":"))


def segments_from_json(text: str) -> list[Segment]:
    try:
        return [
            Segment(**{**item, "words": tuple(Word(**word) for word in item["words"])}) for item in json.loads(text)
        ]
    except (ValueError, TypeError, KeyError) as error:
        raise CorruptRecordError(f"stored segments cannot be read: {error}") from error


class StageOutputs:
    """Saves and reads the stage outputs of jobs through one gateway's
    session. Each save is refused (LeaseLostError) when another gateway runs
    the job now."""

    def __init__(self, session: StoreSession) -> None:
        self._session = session

    def save_audio_handle(self, job_id: str, handle: common_pb2.AudioHandle | None) -> None:
        with self._session.transaction() as db:
            self._session.check_writable(db, job_id)
            db.execute(
                "UPDATE jobs SET audio_handle = ? WHERE job_id = ?",
                (handle.SerializeToString() if handle is not None else None, job_id),
            )

    def audio_handle(self, job_id: str) -> common_pb2.AudioHandle | None:
        row = self._session.read("SELECT audio_handle FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None or row["audio_handle"] is None:
            return None
        return common_pb2.AudioHandle.FromString(row["audio_handle"])

    def save_speech_chunk(
        self, job_id: str, chunk_index: int, time_range: TimeRange, speech_ranges: Sequence[TimeRange] = ()
    ) -> None:
        ranges = json.dumps([[item.start_s, item.end_s] for item in speech_ranges])
        with self._session.transaction() as db:
            self._session.check_writable(db, job_id)
            db.execute(
                "INSERT INTO speech_chunks (job_id, chunk_index, start_s, end_s, speech_ranges) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (job_id, chunk_index) DO UPDATE SET start_s = excluded.start_s, end_s = excluded.end_s,"
                " speech_ranges = excluded.speech_ranges",
                (job_id, chunk_index, time_range.start_s, time_range.end_s, ranges),
            )

    def mark_detection_complete(self, job_id: str) -> None:
        with self._session.transaction() as db:
            self._session.check_writable(db, job_id)
            db.execute("UPDATE jobs SET detection_complete = 1 WHERE job_id = ?", (job_id,))

    def checkpoint(self, job_id: str) -> Checkpoint:
        """Every stage output stored for a job. CorruptRecordError: one cannot be read."""
        db = self._session.database
        row = db.execute("SELECT audio_handle, detection_complete FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"no job {job_id!r}")
        try:
            handle = common_pb2.AudioHandle.FromString(row["audio_handle"]) if row["audio_handle"] else None
        except DecodeError as error:
            raise CorruptRecordError(f"the stored audio handle cannot be read: {error}") from error
        chunk_rows = db.execute("SELECT * FROM speech_chunks WHERE job_id = ?", (job_id,)).fetchall()
        chunks = {item["chunk_index"]: TimeRange(item["start_s"], item["end_s"]) for item in chunk_rows}
        try:
            speech_ranges = {
                item["chunk_index"]: tuple(
                    TimeRange(float(start), float(end)) for start, end in json.loads(item["speech_ranges"])
                )
                for item in chunk_rows
            }
        except (ValueError, TypeError) as error:
            raise CorruptRecordError(f"stored speech ranges cannot be read: {error}") from error
        transcripts = {
            item["chunk_index"]: (item["language_code"], segments_from_json(item["segments"]))
            for item in db.execute("SELECT * FROM chunk_transcripts WHERE job_id = ?", (job_id,))
        }
        alignments = {
            item["chunk_index"]: (item["method"], segments_from_json(item["segments"]))
            for item in db.execute("SELECT * FROM chunk_alignments WHERE job_id = ?", (job_id,))
        }
        turns = self.speaker_turns(job_id)
        return Checkpoint(
            handle, chunks, bool(row["detection_complete"]), transcripts, alignments, turns, speech_ranges
        )

    def speaker_turns(self, job_id: str) -> diarize_pb2.DiarizeResponse | None:
        """A job's diarization; None when it has none."""
        row = self._session.read("SELECT turns FROM speaker_turns WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            return None
        try:
            return diarize_pb2.DiarizeResponse.FromString(row["turns"])
        except DecodeError as error:
            raise CorruptRecordError(f"the stored speaker turns cannot be read: {error}") from error

    def save_speaker_turns(self, job_id: str, turns: diarize_pb2.DiarizeResponse) -> None:
        with self._session.transaction() as db:
            self._session.check_writable(db, job_id)
            db.execute(
                "INSERT INTO speaker_turns (job_id, turns) VALUES (?, ?)"
                " ON CONFLICT (job_id) DO UPDATE SET turns = excluded.turns",
                (job_id, turns.SerializeToString()),
            )

    def save_chunk_transcript(
        self, job_id: str, chunk_index: int, language_code: str, segments: Sequence[Segment]
    ) -> None:
        with self._session.transaction() as db:
            self._session.check_writable(db, job_id)
            db.execute(
                "INSERT INTO chunk_transcripts (job_id, chunk_index, language_code, segments) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (job_id, chunk_index) DO UPDATE"
                " SET language_code = excluded.language_code, segments = excluded.segments",
                (job_id, chunk_index, language_code, segments_to_json(segments)),
            )

    def save_chunk_alignment(self, job_id: str, chunk_index: int, method: int, segments: Sequence[Segment]) -> None:
        with self._session.transaction() as db:
            self._session.check_writable(db, job_id)
            db.execute(
                "INSERT INTO chunk_alignments (job_id, chunk_index, method, segments) VALUES (?, ?, ?, ?)"
                " ON CONFLICT (job_id, chunk_index) DO UPDATE"
                " SET method = excluded.method, segments = excluded.segments",
                (job_id, chunk_index, method, segments_to_json(segments)),
            )

    def finish_job(self, job: JobRecord, segments: Sequence[Segment]) -> None:
        """Stores the final result and the job's final state in one
        transaction. LeaseLostError: another gateway runs the job now."""
        with self._session.transaction() as db:
            self._session.check_writable(db, job.job_id)
            db.execute(
                "INSERT INTO results (job_id, segments) VALUES (?, ?)"
                " ON CONFLICT (job_id) DO UPDATE SET segments = excluded.segments",
                (job.job_id, segments_to_json(segments)),
            )
            update_job_row(db, job)

    def result(self, job_id: str) -> list[Segment]:
        row = self._session.read("SELECT segments FROM results WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise NotFoundError(f"job {job_id!r} has no stored result")
        return segments_from_json(row["segments"])

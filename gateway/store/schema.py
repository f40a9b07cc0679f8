"""The job store's schema: its version and the migrations that bring a
store written by an older gateway up to it, applied when a store opens."""

from __future__ import annotations

from collections.abc import Sequence

from gateway.records import JobState
from gateway.store.database import schema_sql
from gateway.store.session import StoreSession

SCHEMA_VERSION = 5

# Migrations from version N-1 to N, applied in order on open.
_MIGRATIONS: dict[int, Sequence[str]] = {
    1: (
        """CREATE TABLE jobs (
            job_id TEXT PRIMARY KEY,
            state INTEGER NOT NULL,
            config {blob} NOT NULL,              -- gateway.v1.JobConfig
            source TEXT NOT NULL,
            media_path TEXT NOT NULL,
            uploaded INTEGER NOT NULL,
            created_s {real} NOT NULL,
            updated_s {real} NOT NULL,
            stage INTEGER NOT NULL DEFAULT 0,
            stage_fractions TEXT NOT NULL DEFAULT '{{}}',
            failure TEXT,                      -- JSON of JobFailure
            audio_duration_s {real} NOT NULL DEFAULT 0,
            language_code TEXT NOT NULL DEFAULT '',
            language_probability {real} NOT NULL DEFAULT 0,
            segment_count INTEGER NOT NULL DEFAULT 0,
            processing_s {real} NOT NULL DEFAULT 0,
            audio_handle {blob},                 -- common.v1.AudioHandle
            request_id TEXT,                   -- client's idempotency key
            priority INTEGER NOT NULL DEFAULT 0,
            detection_complete INTEGER NOT NULL DEFAULT 0,
            waiting_reason TEXT NOT NULL DEFAULT '',
            finished_s {real} NOT NULL DEFAULT 0
        )""",
        "CREATE INDEX jobs_by_creation ON jobs (created_s DESC, job_id DESC)",
        "CREATE UNIQUE INDEX jobs_by_request_id ON jobs (request_id) WHERE request_id IS NOT NULL",
        "CREATE INDEX jobs_by_finish ON jobs (finished_s) WHERE finished_s > 0",
        """CREATE TABLE job_retries (
            job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            sequence INTEGER NOT NULL,
            attempt {blob} NOT NULL,             -- gateway.v1.RetryAttempt
            PRIMARY KEY (job_id, sequence)
        )""",
        """CREATE TABLE job_events (
            job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            sequence INTEGER NOT NULL,
            event {blob} NOT NULL,               -- gateway.v1.JobEvent
            PRIMARY KEY (job_id, sequence)
        )""",
        """CREATE TABLE speech_chunks (
            job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            chunk_index INTEGER NOT NULL,
            start_s {real} NOT NULL,
            end_s {real} NOT NULL,
            PRIMARY KEY (job_id, chunk_index)
        )""",
        """CREATE TABLE chunk_transcripts (
            job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            chunk_index INTEGER NOT NULL,
            language_code TEXT NOT NULL,
            segments TEXT NOT NULL,            -- JSON list of segments
            PRIMARY KEY (job_id, chunk_index)
        )""",
        """CREATE TABLE chunk_alignments (
            job_id TEXT NOT NULL REFERENCES jobs (job_id) ON DELETE CASCADE,
            chunk_index INTEGER NOT NULL,
            method INTEGER NOT NULL,
            segments TEXT NOT NULL,            -- JSON list of segments with words
            PRIMARY KEY (job_id, chunk_index)
        )""",
        """CREATE TABLE results (
            job_id TEXT PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
            segments TEXT NOT NULL             -- JSON list of the final segments
        )""",
    ),
    # Jobs belong to the client whose token created them (empty: no tokens);
    # request ids are one client's own.
    2: (
        "ALTER TABLE jobs ADD COLUMN owner TEXT NOT NULL DEFAULT ''",
        "DROP INDEX jobs_by_request_id",
        "CREATE UNIQUE INDEX jobs_by_owner_request_id ON jobs (owner, request_id) WHERE request_id IS NOT NULL",
        "CREATE INDEX jobs_by_owner ON jobs (owner, created_s DESC, job_id DESC)",
    ),
    # Who spoke when, once a job's diarization is done.
    3: (
        """CREATE TABLE speaker_turns (
            job_id TEXT PRIMARY KEY REFERENCES jobs (job_id) ON DELETE CASCADE,
            turns {blob} NOT NULL                -- diarize.v1.DiarizeResponse
        )""",
    ),
    # Several gateways on one store: the gateway running a job holds its
    # lease (renewed by a heartbeat, timed by the database's clock); any
    # gateway may ask for a job to be cancelled; a queued job's last
    # published position, so two gateways never publish the same one twice.
    4: (
        "ALTER TABLE jobs ADD COLUMN lease_owner TEXT",
        "ALTER TABLE jobs ADD COLUMN lease_expires_s {real} NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN cancel_requested INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE jobs ADD COLUMN queue_position INTEGER NOT NULL DEFAULT 0",
        f"CREATE INDEX jobs_unfinished ON jobs (priority DESC, created_s, job_id)"
        f" WHERE state IN ({int(JobState.QUEUED)}, {int(JobState.RUNNING)})",
    ),
    # The speech ranges (the VAD's) merged into each chunk, for the coverage
    # check: a JSON list of [start_s, end_s].
    5: ("ALTER TABLE speech_chunks ADD COLUMN speech_ranges TEXT NOT NULL DEFAULT '[]'",),
}


def migrate(session: StoreSession) -> None:
    """Brings the store's schema up to SCHEMA_VERSION, one transaction per
    version, while holding the database's migration lock (gateways that
    start together migrate it once). RuntimeError: a newer gateway wrote it."""
    database = session.database
    with database.migration_lock():
        version = database.schema_version()
        if version > SCHEMA_VERSION:
            raise RuntimeError(
                f"the job store was written by a newer gateway (schema {version}, this one knows {SCHEMA_VERSION})"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            with session.transaction() as db:
                for statement in _MIGRATIONS[target]:
                    db.execute(schema_sql(statement, db.dialect))
                db.set_schema_version(target)

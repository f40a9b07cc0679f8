"""How much the job queue takes: as much work as the ASR clears within
SUBTITLER_GATEWAY_MAX_QUEUE_WAIT_S at the rate it measured, not a fixed
number of jobs.

A count of jobs says little: a hundred 15 s clips are a minute of work for a
fast machine, a hundred films a day for a slow one. So a new job's expected
wait is the ASR work ahead of it, in seconds of audio (what running jobs have
left to transcribe, and every waiting job of its priority or higher), over
the seconds of audio the ASR targets transcribe per second, as they measured
it (`AsrCapacityFigures.audio_seconds_per_second`: their warm-up, then their
work). A job's audio is known once decoded; before that an upload's is its
size at the bytes per second of recent uploads, and any other's the mean of
recent jobs. A job that would wait longer than the bound is refused with
RESOURCE_EXHAUSTED and a retry hint of when the work ahead will have shrunk
enough; SUBTITLER_GATEWAY_MAX_QUEUED_JOBS still bounds the count, its hint
then when the first running job is expected to end. Until the ASR has
measured anything, the count alone decides, as it always did.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from common.errors import ResourceExhaustedError
from gateway.records import JobRecord, JobState, Stage

# Retry hints: never sooner than this (a client would only be refused again)
# nor later (the estimate is rough; the queue may empty faster).
MIN_RETRY_AFTER_S = 5.0
MAX_RETRY_AFTER_S = 300.0
# The hint while the ASR's rate is not known.
UNMEASURED_RETRY_AFTER_S = 30.0
# Jobs waiting at most while the ASR's rate is not known (the fixed bound of
# before; SUBTITLER_GATEWAY_MAX_QUEUED_JOBS lowers it).
UNMEASURED_MAX_QUEUED_JOBS = 100
# A job's audio before any job's is known (five minutes: a long clip, a short talk).
PRIOR_JOB_AUDIO_S = 300.0
# Recent jobs the estimates remember.
RECENT_JOBS = 50


@dataclass(frozen=True)
class QueueBounds:
    """The operator's bounds on the queue."""

    # Jobs waiting at most (SUBTITLER_GATEWAY_MAX_QUEUED_JOBS); 0: none wait.
    max_queued_jobs: int
    # Longest expected wait of a new job (SUBTITLER_GATEWAY_MAX_QUEUE_WAIT_S); 0: no bound by wait.
    max_wait_s: float


class JobSizes:
    """What recent jobs' audio lasted, and the bytes per second of recent
    uploads: the estimates of a job not decoded yet. Used from one event loop."""

    def __init__(self, recent: int = RECENT_JOBS, prior_audio_s: float = PRIOR_JOB_AUDIO_S) -> None:
        self._durations_s: collections.deque[float] = collections.deque(maxlen=recent)
        self._uploads: collections.deque[tuple[int, float]] = collections.deque(maxlen=recent)
        self._prior_audio_s = prior_audio_s

    def record(self, audio_s: float, upload_bytes: int = 0) -> None:
        """A job whose audio lasted `audio_s`, uploaded in `upload_bytes` (0: not an upload)."""
        if not (math.isfinite(audio_s) and audio_s > 0.0):
            return
        self._durations_s.append(audio_s)
        if upload_bytes > 0:
            self._uploads.append((upload_bytes, audio_s))

    def estimate_s(self, upload_bytes: int = 0) -> float:
        """Seconds of audio a job not decoded yet is expected to hold: its
        upload's bytes at recent uploads' bytes per second, else the mean of
        recent jobs, else five minutes."""
        if upload_bytes > 0 and self._uploads:
            total_bytes = sum(size for size, _ in self._uploads)
            return upload_bytes * sum(seconds for _, seconds in self._uploads) / total_bytes
        if self._durations_s:
            return sum(self._durations_s) / len(self._durations_s)
        return self._prior_audio_s


@dataclass(frozen=True)
class PendingJob:
    """An unfinished job, as far as the queue's work goes."""

    running: bool
    priority: int
    # Its audio's duration (0: not decoded yet) and the share of it transcribed.
    audio_s: float = 0.0
    transcribed: float = 0.0
    # Its upload's size (0: not an upload, or not known here).
    upload_bytes: int = 0

    @classmethod
    def of(cls, job: JobRecord, upload_bytes: int = 0) -> PendingJob:
        return cls(
            running=job.state == JobState.RUNNING,
            priority=job.priority,
            audio_s=job.audio_duration_s,
            transcribed=job.stage_fractions.get(Stage.TRANSCRIBE, 0.0),
            upload_bytes=upload_bytes,
        )

    def remaining_s(self, sizes: JobSizes) -> float:
        """Seconds of audio the ASR has still to transcribe for it."""
        audio_s = self.audio_s if self.audio_s > 0.0 else sizes.estimate_s(self.upload_bytes)
        return audio_s * (1.0 - min(1.0, max(0.0, self.transcribed)))


@dataclass(frozen=True)
class QueueWait:
    """What a job submitted now would wait for."""

    # Seconds until its turn (0: it runs at once, or nothing is measured).
    wait_s: float
    # The ASR work ahead of it, in seconds of audio, and the jobs it belongs to.
    audio_ahead_s: float = 0.0
    jobs_ahead: int = 0
    # The ASR targets' measured rate, seconds of audio a second (0: not measured).
    audio_seconds_per_second: float = 0.0


class JobAdmission:
    """Admits a new job to the queue or refuses it (see the module doc)."""

    def __init__(self, rate: Callable[[], float], bounds: QueueBounds, sizes: JobSizes | None = None) -> None:
        """`rate`: seconds of audio the ASR targets transcribe per second,
        as last measured (0: not measured)."""
        self._rate = rate
        self.bounds = bounds
        self.sizes = sizes or JobSizes()

    @property
    def measured(self) -> bool:
        """Whether the ASR's rate is known (else the count alone decides)."""
        return self._rate() > 0.0

    def estimate(self, pending: Sequence[PendingJob], *, priority: int = 0) -> QueueWait:
        """The wait of a job of `priority` behind the `pending` jobs, at the
        ASR's rate."""
        rate = self._rate()
        ahead = [job for job in pending if job.running or job.priority >= priority]
        audio_s = sum(job.remaining_s(self.sizes) for job in ahead)
        return QueueWait(audio_s / rate if rate > 0.0 else 0.0, audio_s, len(ahead), rate)

    def check(self, *, queued: int, pending: Sequence[PendingJob], priority: int = 0) -> QueueWait:
        """Raises `ResourceExhaustedError` when a new job of `priority` must
        not join the `queued` jobs waiting now (no slot is free for it):
        their count is at the bound, or it would wait too long behind the
        `pending` jobs (every unfinished one; unused while nothing is
        measured). Returns its expected wait otherwise."""
        wait = self.estimate(pending, priority=priority) if self.measured else QueueWait(0.0)
        max_queued = self.bounds.max_queued_jobs
        if not self.measured:
            max_queued = min(max_queued, UNMEASURED_MAX_QUEUED_JOBS)
        if queued >= max_queued:
            retry_s = self._first_end_s(pending)
            expected = (
                f"the first running job is expected to end in about {_describe(retry_s)} at the "
                f"{wait.audio_seconds_per_second:.1f} s of audio a second the ASR measured"
                if self.measured
                else "the ASR has measured nothing yet"
            )
            raise ResourceExhaustedError(
                f"the queue is full: {queued} jobs wait, the most it holds (SUBTITLER_GATEWAY_MAX_QUEUED_JOBS="
                f"{self.bounds.max_queued_jobs}{'' if self.measured else f', {max_queued} until measured'}); "
                f"{expected}; retry in {retry_s:g} s",
                retry_after_s=retry_s,
            )
        if self.bounds.max_wait_s and wait.wait_s > self.bounds.max_wait_s:
            retry_s = _bounded(wait.wait_s - self.bounds.max_wait_s)
            raise ResourceExhaustedError(
                f"the queue is full for this machine: a new job would wait about {_describe(wait.wait_s)}, "
                f"behind {wait.jobs_ahead} jobs with {_describe(wait.audio_ahead_s)} of audio left to transcribe "
                f"at the {wait.audio_seconds_per_second:.1f} s of audio a second the ASR measured, over the "
                f"{_describe(self.bounds.max_wait_s)} a job may wait (SUBTITLER_GATEWAY_MAX_QUEUE_WAIT_S); "
                f"retry in {retry_s:g} s",
                retry_after_s=retry_s,
            )
        return wait

    def _first_end_s(self, pending: Sequence[PendingJob]) -> float:
        """When the first running job is expected to end, the running jobs
        sharing the ASR's rate (the fixed hint while nothing is measured)."""
        rate = self._rate()
        running = [job.remaining_s(self.sizes) for job in pending if job.running]
        if rate <= 0.0 or not running:
            return UNMEASURED_RETRY_AFTER_S
        return _bounded(min(running) * len(running) / rate)


def _bounded(retry_s: float) -> float:
    """A retry hint in whole seconds, between the least and the most."""
    return float(min(MAX_RETRY_AFTER_S, max(MIN_RETRY_AFTER_S, math.ceil(retry_s))))


def _describe(seconds: float) -> str:
    """A duration for a message: "45 s", "12 min", "2 h 05 min"."""
    if seconds < 90.0:
        return f"{seconds:.0f} s"
    minutes = round(seconds / 60.0)
    if minutes < 60:
        return f"{minutes} min"
    return f"{minutes // 60} h {minutes % 60:02d} min"

"""gateway.jobs.admission: the job queue bounded by the wait its work means
at the ASR's measured rate, the count a ceiling, and retry hints of when
room is expected."""

from __future__ import annotations

import pytest

from common.errors import ResourceExhaustedError
from gateway.jobs.admission import (
    MAX_RETRY_AFTER_S,
    MIN_RETRY_AFTER_S,
    PRIOR_JOB_AUDIO_S,
    UNMEASURED_MAX_QUEUED_JOBS,
    UNMEASURED_RETRY_AFTER_S,
    JobAdmission,
    JobSizes,
    PendingJob,
    QueueBounds,
)
from gateway.records import JobRecord, JobState, Stage
from subtitler.gateway.v1 import gateway_pb2

HOUR_S = 3600.0


class FakeAsr:
    """The ASR's measured rate as the gateway last read it (0: not measured)."""

    def __init__(self, audio_seconds_per_second: float = 0.0) -> None:
        self.audio_seconds_per_second = audio_seconds_per_second

    def __call__(self) -> float:
        return self.audio_seconds_per_second


def gate(rate: float, *, max_queued_jobs: int = 1000, max_wait_s: float = HOUR_S) -> JobAdmission:
    return JobAdmission(FakeAsr(rate), QueueBounds(max_queued_jobs, max_wait_s))


def films(count: int, audio_s: float = 2 * HOUR_S, priority: int = 0) -> list[PendingJob]:
    return [PendingJob(running=False, priority=priority, audio_s=audio_s) for _ in range(count)]


def test_the_wait_is_the_work_ahead_over_the_measured_rate() -> None:
    running = PendingJob(running=True, priority=0, audio_s=600.0, transcribed=0.5)  # 300 s left
    queued = [PendingJob(running=False, priority=0, audio_s=900.0), *films(1, 1200.0, priority=5)]
    wait = gate(rate=20.0).estimate([running, *queued])
    assert wait.audio_ahead_s == pytest.approx(300.0 + 900.0 + 1200.0) and wait.jobs_ahead == 3
    assert wait.wait_s == pytest.approx(2400.0 / 20.0) and wait.audio_seconds_per_second == 20.0
    # An urgent job goes ahead of the queued jobs of lower priority, never of running ones.
    urgent = gate(rate=20.0).estimate([running, *queued], priority=5)
    assert urgent.audio_ahead_s == pytest.approx(300.0 + 1200.0) and urgent.jobs_ahead == 2


def test_a_slower_machine_takes_less_and_a_faster_one_more_with_no_setting_changed() -> None:
    queue = films(10)  # 20 hours of audio waiting
    with pytest.raises(ResourceExhaustedError) as refused:
        gate(rate=10.0).check(queued=10, pending=queue)  # 2 h of work: over the hour
    assert gate(rate=40.0).check(queued=10, pending=queue).wait_s == pytest.approx(1800.0)
    message = str(refused.value)
    assert "would wait about 2 h 00 min" in message and "behind 10 jobs" in message
    assert "10.0 s of audio a second the ASR measured" in message
    assert "SUBTITLER_GATEWAY_MAX_QUEUE_WAIT_S" in message and "1 h 00 min" in message
    # Room is expected once the work ahead has shrunk to an hour's: bounded to 5 min.
    assert refused.value.retry_after_s == MAX_RETRY_AFTER_S


def test_the_retry_hint_is_when_the_wait_comes_under_the_bound_in_whole_seconds() -> None:
    admission = gate(rate=10.0, max_wait_s=600.0)
    with pytest.raises(ResourceExhaustedError) as refused:
        admission.check(queued=1, pending=films(1, 6123.4))  # 612.34 s of work
    assert refused.value.retry_after_s == 13.0  # 12.34 s, rounded up
    with pytest.raises(ResourceExhaustedError) as barely:
        admission.check(queued=1, pending=films(1, 6001.0))
    assert barely.value.retry_after_s == MIN_RETRY_AFTER_S


def test_the_count_stays_a_ceiling_with_a_hint_of_when_the_first_running_job_ends() -> None:
    running = [
        PendingJob(running=True, priority=0, audio_s=100.0),
        PendingJob(running=True, priority=0, audio_s=400.0, transcribed=0.5),
    ]
    clips = films(3, 15.0)
    admission = gate(rate=10.0, max_queued_jobs=3)
    admission.check(queued=2, pending=[*running, *clips[:2]])
    with pytest.raises(ResourceExhaustedError) as refused:
        admission.check(queued=3, pending=[*running, *clips])
    # Two running jobs share 10 s of audio a second: the one with 100 s left ends in about 20 s.
    assert refused.value.retry_after_s == 20.0
    assert "the queue is full: 3 jobs wait" in str(refused.value)
    assert "SUBTITLER_GATEWAY_MAX_QUEUED_JOBS=3" in str(refused.value)
    with pytest.raises(ResourceExhaustedError):  # none may wait
        gate(rate=10.0, max_queued_jobs=0).check(queued=0, pending=running)


def test_until_the_asr_has_measured_the_count_alone_decides_as_before() -> None:
    admission = gate(rate=0.0)
    assert not admission.measured
    assert admission.check(queued=UNMEASURED_MAX_QUEUED_JOBS - 1, pending=[]).wait_s == 0.0
    with pytest.raises(ResourceExhaustedError) as refused:
        admission.check(queued=UNMEASURED_MAX_QUEUED_JOBS, pending=[])
    assert refused.value.retry_after_s == UNMEASURED_RETRY_AFTER_S
    assert "queue is full" in str(refused.value) and "measured nothing yet" in str(refused.value)
    # The operator's lower count holds.
    with pytest.raises(ResourceExhaustedError):
        gate(rate=0.0, max_queued_jobs=3).check(queued=3, pending=[])


def test_the_rate_is_read_at_each_decision() -> None:
    asr = FakeAsr()
    admission = JobAdmission(asr, QueueBounds(1000, HOUR_S))
    queue = films(UNMEASURED_MAX_QUEUED_JOBS, 60.0)
    with pytest.raises(ResourceExhaustedError):
        admission.check(queued=len(queue), pending=queue)
    asr.audio_seconds_per_second = 5.0  # the ASR's warm-up measured it: 100 minutes of clips, 20 min of work
    assert admission.check(queued=len(queue), pending=queue).wait_s == pytest.approx(1200.0)


def test_no_bound_by_wait_when_it_is_zero() -> None:
    assert gate(rate=1.0, max_wait_s=0.0).check(queued=10, pending=films(10)).wait_s == pytest.approx(72000.0)


def test_a_job_not_decoded_yet_is_estimated_from_recent_jobs() -> None:
    sizes = JobSizes(recent=3)
    assert sizes.estimate_s() == PRIOR_JOB_AUDIO_S and sizes.estimate_s(10_000_000) == PRIOR_JOB_AUDIO_S
    sizes.record(60.0)  # a server file: no bytes
    sizes.record(120.0, upload_bytes=3_840_000)  # 32 kB a second: a 16 kHz 16-bit WAV
    assert sizes.estimate_s() == pytest.approx(90.0)
    assert sizes.estimate_s(upload_bytes=32_000 * 45) == pytest.approx(45.0)
    for audio_s in (30.0, 30.0, 30.0):  # only the recent ones count
        sizes.record(audio_s)
    assert sizes.estimate_s() == pytest.approx(30.0)
    sizes.record(0.0)  # nothing decoded: not a duration
    assert sizes.estimate_s() == pytest.approx(30.0)
    undecoded = PendingJob(running=False, priority=0, upload_bytes=32_000 * 600)
    assert undecoded.remaining_s(sizes) == pytest.approx(600.0)


def test_a_stored_job_is_seen_as_the_work_it_has_left() -> None:
    job = JobRecord(
        job_id="a",
        state=JobState.RUNNING,
        config=gateway_pb2.JobConfig(),
        source="talk.wav",
        created_s=0.0,
        updated_s=0.0,
        audio_duration_s=600.0,
        stage_fractions={Stage.DECODE: 1.0, Stage.TRANSCRIBE: 0.25},
        priority=3,
    )
    pending = PendingJob.of(job, upload_bytes=0)
    assert pending.running and pending.priority == 3
    assert pending.remaining_s(JobSizes()) == pytest.approx(450.0)

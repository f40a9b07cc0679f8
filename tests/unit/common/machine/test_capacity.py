"""common.machine.capacity: the measured work rate every service reports and the
live streams the gateway derives from it."""

from __future__ import annotations

import math
import threading
import time

import pytest

from common.machine.capacity import LiveLoadModel, WorkRate, describe_source, slowest_on_every_worker, timed
from common.rpc.status import MeasuredFigures


class FakeClock:
    def __init__(self) -> None:
        self.now_s = 1000.0

    def __call__(self) -> float:
        return self.now_s


def test_a_rate_is_nothing_until_measured_then_the_warm_up_then_work() -> None:
    clock = FakeClock()
    rate = WorkRate(half_life_s=60.0, clock=clock)
    assert not rate.known and math.isnan(rate.seconds_per_unit) and rate.units_per_second(2) == 0.0
    assert describe_source(rate.figures) == "not measured yet"
    rate.prime(30.0, 1.5)  # a 30 s chunk in 1.5 s at start
    assert rate.known and rate.seconds_per_unit == pytest.approx(0.05)
    assert rate.units_per_second(2) == pytest.approx(40.0)  # two workers: 40 s of audio a second
    assert describe_source(rate.figures) == "warm-up"
    rate.observe(30.0, 1.5)
    assert describe_source(rate.figures) == "warm-up and work"


def test_recent_work_outweighs_old_work_by_its_age() -> None:
    clock = FakeClock()
    rate = WorkRate(half_life_s=60.0, clock=clock)
    rate.prime(10.0, 1.0)  # warm-up: 0.1 s a unit
    clock.now_s += 60.0  # one half-life: the warm-up weighs 5 units now
    rate.observe(5.0, 1.5)  # the machine got slower: 0.3 s a unit
    assert rate.seconds_per_unit == pytest.approx((0.5 + 1.5) / 10.0)
    clock.now_s += 600.0  # ten half-lives later, only the recent work counts
    rate.observe(10.0, 3.0)
    assert rate.seconds_per_unit == pytest.approx(0.3, rel=0.01)


def test_time_without_units_adds_to_work_already_counted() -> None:
    rate = WorkRate(clock=FakeClock())
    rate.observe(10.0, 1.0)
    rate.observe(0.0, 0.5)  # the same chunks' words timed afterwards
    assert rate.seconds_per_unit == pytest.approx(0.15)


@pytest.mark.parametrize(("units", "busy_s"), [(math.nan, 1.0), (1.0, math.inf), (-1.0, 1.0), (1.0, -0.1)])
def test_nonsense_observations_are_ignored(units: float, busy_s: float) -> None:
    rate = WorkRate(clock=FakeClock())
    rate.observe(units, busy_s)
    assert not rate.known


def test_live_streams_follow_the_decode_time() -> None:
    model = LiveLoadModel(decodes_per_stream_s=0.8, utilization=0.7)
    # Two workers at 0.17 s a decode (an AVX-512 core): 10 streams; at 0.5 s (a slow AVX2 core): 3.
    assert model.streams(2, 0.17) == 10
    assert model.streams(2, 0.5) == 3
    assert model.streams(1, 2.0) == 0
    assert model.streams(2, 0.0) == 0 and model.streams(2, math.nan) == 0


def test_a_timed_call_records_its_units_and_its_time_and_a_failed_one_nothing() -> None:
    rate = WorkRate(clock=FakeClock())

    def work() -> str:
        time.sleep(0.02)
        return "done"

    assert timed(rate, 60.0, work)() == "done"
    figures = rate.figures
    assert figures.units_observed == 60.0 and figures.from_work
    assert 0.02 / 60.0 <= figures.seconds_per_unit < 1.0 / 60.0

    def broken() -> None:
        raise OSError("no audio")

    with pytest.raises(OSError, match="no audio"):
        timed(rate, 60.0, broken)()
    assert rate.figures.units_observed == 60.0


def test_the_calibration_runs_on_every_worker_at_once_and_keeps_the_slowest() -> None:
    together = threading.Barrier(3, timeout=10)
    times = iter([0.5, 0.25, 0.75])
    lock = threading.Lock()

    def work() -> float:
        together.wait()  # only passes when all three run at once
        with lock:
            return next(times)

    assert slowest_on_every_worker(work, 3) == 0.75

    def failing() -> float:
        raise RuntimeError("no model")

    with pytest.raises(RuntimeError, match="no model"):
        slowest_on_every_worker(failing, 2)


def test_a_service_reports_its_slots_audio_rate_once_measured() -> None:
    rate = WorkRate(clock=FakeClock())
    assert MeasuredFigures.of_audio_rate(rate, 2) is None
    rate.prime(60.0, 0.12)  # a minute of audio in 0.12 s on each of two slots
    measured = MeasuredFigures.of_audio_rate(rate, 2)
    assert measured is not None
    assert measured.audio_seconds_per_second == pytest.approx(1000.0) and measured.source == "warm-up"
    assert measured.live_decode_s == 0.0 and measured.live_streams == 0

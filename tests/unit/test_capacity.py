"""common.capacity: the measured work rate every service reports and the
live streams the gateway derives from it."""

from __future__ import annotations

import math

import pytest

from common.capacity import LiveLoadModel, WorkRate, describe_source


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

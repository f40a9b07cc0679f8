from __future__ import annotations

from typing import cast

import psutil
import pytest

from common.machine.affinity import (
    SERVICES,
    apply_affinity,
    plan_auto_affinity,
    validate_affinity_spec,
)
from common.machine.cpu_lists import format_cpu_list
from common.machine.hardware import BYTES_PER_GIB, HardwareInfo


def _hardware(usable_cpus: tuple[int, ...]) -> HardwareInfo:
    return HardwareInfo(
        logical_cpus=max(usable_cpus) + 1,
        physical_cpus=None,
        usable_cpus=usable_cpus,
        cpu_quota=None,
        memory_total_bytes=16 * BYTES_PER_GIB,
        memory_available_bytes=16 * BYTES_PER_GIB,
        memory_limit_bytes=None,
        gpus=(),
        cuda_device_count=0,
    )


TWO_CPUS = _hardware((0, 1))
SIXTEEN_CPUS = _hardware(tuple(range(16)))


class FakeProcess:
    """Stands in for psutil.Process: records the affinity it is given."""

    def __init__(self, cpus: list[int], error: Exception | None = None) -> None:
        self.cpus = cpus
        self.error = error
        self.calls: list[list[int]] = []

    def cpu_affinity(self, cpus: list[int] | None = None) -> list[int] | None:
        if cpus is None:
            return self.cpus
        if self.error is not None:
            raise self.error
        self.calls.append(cpus)
        self.cpus = cpus
        return None


class NoAffinityProcess:
    """A psutil.Process on a platform without CPU affinity (macOS)."""


def _as_process(fake: object) -> psutil.Process:
    return cast(psutil.Process, fake)


@pytest.mark.parametrize(("text", "spec"), [("auto", "auto"), (" NONE ", "none"), ("3,1-2", "1-3"), ("0", "0")])
def test_affinity_specs_are_validated_into_canonical_form(text: str, spec: str) -> None:
    assert validate_affinity_spec(text) == spec


@pytest.mark.parametrize("text", ["automatic", "", "0-", "all"])
def test_bad_affinity_specs_fail_fast(text: str) -> None:
    with pytest.raises(ValueError, match=repr(text).replace("[", r"\[")):
        validate_affinity_spec(text)


# --- auto plan -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("service", SERVICES)
def test_too_few_cpus_are_not_split(service: str) -> None:
    assert plan_auto_affinity(service, TWO_CPUS, asr_workers=2) is None


def test_sixteen_cpus_give_a_quarter_to_the_other_services() -> None:
    assert plan_auto_affinity("asr", SIXTEEN_CPUS, asr_workers=8) == tuple(range(4, 16))
    for service in SERVICES:
        if service != "asr":
            assert plan_auto_affinity(service, SIXTEEN_CPUS, asr_workers=8) == (0, 1, 2, 3)


def test_four_cpus_leave_one_to_the_other_services() -> None:
    four = _hardware((0, 1, 2, 3))
    assert plan_auto_affinity("vad", four, asr_workers=4) == (0,)
    assert plan_auto_affinity("asr", four, asr_workers=4) == (1, 2, 3)


def test_the_split_follows_the_usable_cpus_not_their_numbers() -> None:
    scattered = _hardware((2, 3, 5, 7, 8, 9, 12, 13))
    assert plan_auto_affinity("gateway", scattered, asr_workers=8) == (2, 3)
    assert plan_auto_affinity("asr", scattered, asr_workers=8) == (5, 7, 8, 9, 12, 13)


def test_an_unknown_service_is_refused() -> None:
    with pytest.raises(ValueError, match="transcoder"):
        plan_auto_affinity("transcoder", SIXTEEN_CPUS, asr_workers=8)


# --- applying ---------------------------------------------------------------------------------------------


def test_auto_pins_the_asr_process_to_its_cores() -> None:
    process = FakeProcess(list(range(16)))
    result = apply_affinity("auto", "asr", SIXTEEN_CPUS, 8, process=_as_process(process))
    assert result.requested == "auto"
    assert result.applied == tuple(range(4, 16))
    assert process.calls == [list(range(4, 16))]
    assert "4-15" in result.message


def test_auto_on_two_cpus_does_not_pin_and_says_why() -> None:
    process = FakeProcess([0, 1])
    result = apply_affinity("auto", "asr", TWO_CPUS, 2, process=_as_process(process))
    assert result.applied is None
    assert process.calls == []
    assert "too few" in result.message


def test_none_leaves_the_process_alone() -> None:
    process = FakeProcess([0, 1])
    result = apply_affinity("none", "vad", TWO_CPUS, 2, process=_as_process(process))
    assert (result.requested, result.applied) == ("none", None)
    assert process.calls == []


def test_a_cpu_list_is_applied_as_given() -> None:
    process = FakeProcess(list(range(16)))
    result = apply_affinity("8-11, 3", "align", SIXTEEN_CPUS, 8, process=_as_process(process))
    assert result.requested == "8-11, 3"
    assert result.applied == (3, 8, 9, 10, 11)
    assert process.calls == [[3, 8, 9, 10, 11]]


@pytest.mark.parametrize(
    ("spec", "process", "reason"),
    [
        ("0-3", FakeProcess([0, 1]), "2-3 are outside the usable set 0-1"),
        ("0-x", FakeProcess([0, 1]), "not a CPU number"),
        ("sometimes", FakeProcess([0, 1]), "must be 'auto', 'none'"),
        ("0", FakeProcess([0, 1], error=OSError(22, "Invalid argument")), "failed: [Errno 22] Invalid argument"),
        ("0", FakeProcess([0, 1], error=psutil.AccessDenied(1)), "failed"),
        ("0", NoAffinityProcess(), "not supported on this platform"),
    ],
)
def test_what_stops_pinning_is_reported_not_raised(
    spec: str, process: object, reason: str, caplog: pytest.LogCaptureFixture
) -> None:
    result = apply_affinity(spec, "gateway", TWO_CPUS, 2, process=_as_process(process))
    assert result.applied is None
    assert reason in result.message
    assert any(record.levelname == "WARNING" and reason in record.getMessage() for record in caplog.records)


def test_the_real_process_can_be_pinned_to_what_it_already_has() -> None:
    current = psutil.Process()
    if not hasattr(current, "cpu_affinity"):
        pytest.skip("no CPU affinity on this platform")
    usable = tuple(sorted(current.cpu_affinity()))
    result = apply_affinity(format_cpu_list(usable), "gateway", _hardware(usable), 1)
    assert result.applied == usable

"""CPU pinning of a service process, through psutil.

A service's affinity setting is one of:

``none``
    Leave the process where the operating system puts it.
``auto``
    Keep the ASR workers' cores apart from the other services' (`plan_auto_affinity`):
    the other services share the first quarter of the usable CPUs and ASR gets
    the rest. With fewer than `MIN_CPUS_TO_SPLIT` usable CPUs nothing is pinned.
a CPU list
    Linux cpulist notation, as ``taskset -c`` takes it: ``"0-3,6"``.

`apply_affinity` never raises: whatever stops the pinning is logged as a
warning and reported in its `AffinityResult`. The kernel pins only the calling
thread and the threads it starts later, so call it at start-up before any
thread pool (gRPC, ONNX Runtime, CTranslate2) exists.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import psutil

from common.machine.cpu_lists import format_cpu_list, parse_cpu_list
from common.machine.hardware import HardwareInfo

logger = logging.getLogger(__name__)

AFFINITY_AUTO = "auto"
AFFINITY_NONE = "none"
SERVICES = ("gateway", "audio", "vad", "asr", "align", "diarize", "http")
# Below this many usable CPUs, "auto" does not pin: a quarter of them would be no core at all.
MIN_CPUS_TO_SPLIT = 4
# The share of the usable CPUs that "auto" gives to the services other than ASR (1/4).
_OTHER_SERVICES_CPU_DIVISOR = 4


@dataclass(frozen=True)
class AffinityResult:
    """What `apply_affinity` did."""

    # "auto", "none" or the CPU list given.
    requested: str
    # The CPUs the process is now pinned to; None when it was not pinned.
    applied: tuple[int, ...] | None
    # What happened: applied, not pinned because..., or failed because...
    message: str


def validate_affinity_spec(text: str) -> str:
    """The affinity setting in canonical form: "auto", "none" or a sorted CPU
    list ("3,1-2" -> "1-3"). Raises ValueError for anything else, so that
    configuration loading fails fast on a typo."""
    spec = text.strip().lower()
    if spec in (AFFINITY_AUTO, AFFINITY_NONE):
        return spec
    try:
        return format_cpu_list(parse_cpu_list(spec))
    except ValueError as error:
        raise ValueError(f"CPU affinity {text!r} must be 'auto', 'none' or a CPU list like '0-3,6' ({error})") from None


def plan_auto_affinity(service: str, hardware: HardwareInfo, asr_workers: int) -> tuple[int, ...] | None:
    """The CPUs "auto" pins `service` to: ASR gets the last usable CPUs, every
    other service shares the first max(1, n // 4); None (no pinning) with fewer
    than 4 usable CPUs. Raises ValueError for an unknown service."""
    return _plan_auto_affinity(service, hardware, asr_workers)[0]


def _plan_auto_affinity(service: str, hardware: HardwareInfo, asr_workers: int) -> tuple[tuple[int, ...] | None, str]:
    """`plan_auto_affinity`'s CPUs, and a sentence saying why."""
    if service not in SERVICES:
        raise ValueError(f"service {service!r} must be one of {', '.join(SERVICES)}")
    usable = hardware.usable_cpus
    if len(usable) < MIN_CPUS_TO_SPLIT:
        return None, (
            f"not pinned: only {len(usable)} usable CPUs ({format_cpu_list(usable)}), "
            f"too few to keep ASR apart from the other services (needs {MIN_CPUS_TO_SPLIT})"
        )
    other_count = max(1, len(usable) // _OTHER_SERVICES_CPU_DIVISOR)
    other_cpus, asr_cpus = usable[:other_count], usable[other_count:]
    if service != "asr":
        return other_cpus, (
            f"auto: the services other than ASR share CPUs {format_cpu_list(other_cpus)} "
            f"of {format_cpu_list(usable)}; ASR has {format_cpu_list(asr_cpus)}"
        )
    crowded = f"; its {asr_workers} workers share {len(asr_cpus)} CPUs" if asr_workers > len(asr_cpus) else ""
    return asr_cpus, (
        f"auto: ASR has CPUs {format_cpu_list(asr_cpus)} of {format_cpu_list(usable)}, "
        f"the other services {format_cpu_list(other_cpus)}{crowded}"
    )


def apply_affinity(
    spec: str,
    service: str,
    hardware: HardwareInfo,
    asr_workers: int,
    *,
    process: psutil.Process | None = None,
) -> AffinityResult:
    """Pins `process` (this one by default) as `spec` says ("auto", "none" or
    a CPU list). Never raises: a bad spec, CPUs outside the usable set, a
    platform without CPU affinity or a refusal by the kernel is logged as a
    warning and returned with applied=None."""
    requested = spec.strip()
    try:
        canonical = validate_affinity_spec(spec)
        if canonical == AFFINITY_NONE:
            return AffinityResult(requested, None, "not pinned: affinity 'none' leaves the process where it is")
        if canonical == AFFINITY_AUTO:
            cpus, reason = _plan_auto_affinity(service, hardware, asr_workers)
            if cpus is None:
                logger.info("%s CPU affinity %s", service, reason)
                return AffinityResult(requested, None, reason)
        else:
            cpus, reason = parse_cpu_list(canonical), f"CPUs {canonical} as configured"
            outside = sorted(set(cpus) - set(hardware.usable_cpus))
            if outside:
                usable = format_cpu_list(hardware.usable_cpus)
                raise ValueError(f"CPUs {format_cpu_list(outside)} are outside the usable set {usable}")
    except ValueError as error:
        return _not_pinned(service, requested, f"not pinned: {error}")
    try:
        target = psutil.Process() if process is None else process
        if not hasattr(target, "cpu_affinity"):
            return _not_pinned(service, requested, "not pinned: CPU affinity is not supported on this platform")
        target.cpu_affinity(list(cpus))
        applied = tuple(sorted(target.cpu_affinity()))
    except (OSError, psutil.Error, ValueError) as error:
        return _not_pinned(service, requested, f"pinning to CPUs {format_cpu_list(cpus)} failed: {error}")
    message = f"pinned to CPUs {format_cpu_list(applied)} ({reason})"
    logger.info("%s CPU affinity %s", service, message)
    return AffinityResult(requested, applied, message)


def _not_pinned(service: str, requested: str, message: str) -> AffinityResult:
    logger.warning("%s CPU affinity %r: %s", service, requested, message)
    return AffinityResult(requested, None, message)

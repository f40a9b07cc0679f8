"""What a service does about its machine at start, once: detect the hardware,
tune its settings to it, pin its CPUs as configured, and log all three.

Never fatal: detection falls back to conservative values with a warning, and
a pin that fails is logged and skipped (see `common.machine.hardware`,
`common.machine.tuning`, `common.machine.affinity`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from common.machine.affinity import AffinityResult, apply_affinity
from common.machine.cpu_lists import format_cpu_list
from common.machine.hardware import HardwareInfo, detect_hardware
from common.machine.tuning import Tuning, tune
from common.rpc.status import SettingChoice, StatusReport

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MachinePlan:
    """The machine a service runs on and what was chosen for it."""

    service_name: str
    hardware: HardwareInfo
    tuning: Tuning
    affinity: AffinityResult

    def report(self, settings: Sequence[SettingChoice]) -> StatusReport:
        """The fixed part of the service's status."""
        for choice in settings:
            logger.info("%s: %s=%s (%s)", self.service_name, choice.name, choice.value, choice.source)
        return StatusReport(
            service_name=self.service_name,
            hardware=self.hardware.as_fields(),
            hardware_warnings=self.hardware.warnings,
            settings=tuple(settings),
            cpu_affinity=format_cpu_list(self.affinity.applied) if self.affinity.applied else "",
            cpu_affinity_message=self.affinity.message,
        )


def plan_machine(service_name: str, cpu_affinity: str, paths: Sequence[Path] = ()) -> MachinePlan:
    """Detects the hardware (with the free space of `paths`), tunes to it and
    applies the `cpu_affinity` setting ("auto", "none" or a CPU list)."""
    hardware = detect_hardware(paths)
    for warning in hardware.warnings:
        logger.warning("%s: hardware detection: %s", service_name, warning)
    tuning = tune(hardware)
    affinity = apply_affinity(cpu_affinity, service_name, hardware, tuning.asr_workers)
    logger.info(
        "%s: %s; CPU affinity %s: %s",
        service_name,
        ", ".join(f"{key} {value}" for key, value in hardware.as_fields().items()),
        cpu_affinity,
        affinity.message,
    )
    return MachinePlan(service_name, hardware, tuning, affinity)


async def plan_machine_in_thread(service_name: str, cpu_affinity: str, paths: Sequence[Path] = ()) -> MachinePlan:
    """`plan_machine` on the event loop's default executor, off the loop:
    detecting the hardware reads the system's files."""
    return await asyncio.get_running_loop().run_in_executor(None, plan_machine, service_name, cpu_affinity, paths)

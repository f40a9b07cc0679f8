"""The status every service reports through `subtitler.status.v1.StatusService`:
what it detected about its machine, what it chose from that (and why), how
much work it takes at once and how much it has now.

A service builds a `StatusReport` once at start (hardware, settings, affinity)
and gives it a `load` callable for the figures that change (running, queued,
loaded models); `StatusServicer` turns both into the reply.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from typing import Any

import grpc

from common.machine.capacity import WorkRate, describe_source
from common.rpc import metrics
from common.rpc.admission import AdmissionLimit
from common.rpc.server import Registration
from subtitler.status.v1 import status_pb2, status_pb2_grpc

SERVICE_NAME = status_pb2.DESCRIPTOR.services_by_name["StatusService"].full_name
ENVIRONMENT_SOURCE = "environment"


def suite_version() -> str:
    """The installed suite's version ("unknown" from a bare checkout)."""
    try:
        return metadata.version("subtitler")
    except metadata.PackageNotFoundError:
        return "unknown"


@dataclass(frozen=True)
class SettingChoice:
    """One setting as the service uses it, and where the value came from."""

    # Its environment variable ("SUBTITLER_ASR_NUM_WORKERS").
    name: str
    value: str
    # ENVIRONMENT_SOURCE, or "auto: <why>".
    source: str


def choose(name: str, configured: int | str, auto_value: int | str, reason: str) -> tuple[int | str, SettingChoice]:
    """A setting that is automatic unless the operator set it: `configured`
    (read from the variable `name`; 0 or "" means unset) wins over
    `auto_value`, which the tuner chose for `reason`. Returns the value to use
    and the choice to report."""
    if configured:
        return configured, SettingChoice(name, str(configured), ENVIRONMENT_SOURCE)
    return auto_value, SettingChoice(name, str(auto_value), f"auto: {reason}")


@dataclass(frozen=True)
class MeasuredFigures:
    """What a service measured it gets through (`MeasuredCapacity` in the status)."""

    # Seconds of a file's audio processed per second, all workers together.
    audio_seconds_per_second: float = 0.0
    # Seconds a live decode takes on one worker (ASR).
    live_decode_s: float = 0.0
    # Live streams held at the latency targets (gateway).
    live_streams: int = 0
    # "warm-up", or "warm-up and work".
    source: str = ""

    def to_proto(self) -> status_pb2.MeasuredCapacity:
        return status_pb2.MeasuredCapacity(
            audio_seconds_per_second=self.audio_seconds_per_second,
            live_decode_s=self.live_decode_s,
            live_streams=self.live_streams,
            source=self.source,
        )

    @classmethod
    def of_audio_rate(cls, rate: WorkRate, workers: int) -> MeasuredFigures | None:
        """The figures of a service whose `workers` slots each process audio
        at `rate` (seconds of a slot per second of audio); None before its
        warm-up or any work."""
        if not rate.known:
            return None
        return cls(audio_seconds_per_second=rate.units_per_second(workers), source=describe_source(rate.figures))


@dataclass(frozen=True)
class LoadFigures:
    """What a service is doing now."""

    capacity: int
    running: int = 0
    queued: int = 0
    preferred_batch_size: int = 0
    loaded_models: tuple[str, ...] = ()
    live_streams: int = 0
    live_buffered_samples: int = 0
    # What the service measured it gets through (common.machine.capacity); None: nothing measured.
    measured: MeasuredFigures | None = None
    # Gateway: seconds a job submitted now is expected to wait for its turn (gateway.jobs.admission).
    queue_wait_s: float = 0.0

    @classmethod
    def of(cls, admission: AdmissionLimit, **more: Any) -> LoadFigures:
        """The figures of a service whose work `admission` bounds."""
        return cls(admission.max_running, admission.running, admission.waiting, **more)


@dataclass(frozen=True)
class StatusReport:
    """The fixed part of a service's status, built once at start."""

    service_name: str
    hardware: Mapping[str, str] = field(default_factory=dict)
    hardware_warnings: Sequence[str] = ()
    settings: Sequence[SettingChoice] = ()
    # "0-3" when pinned, "" when not; and what the pinning did.
    cpu_affinity: str = ""
    cpu_affinity_message: str = ""
    started_at_s: float = field(default_factory=time.monotonic)
    version: str = field(default_factory=suite_version)

    def to_proto(self, figures: LoadFigures) -> status_pb2.GetStatusResponse:
        return status_pb2.GetStatusResponse(
            service_name=self.service_name,
            version=self.version,
            hardware=dict(self.hardware),
            hardware_warnings=list(self.hardware_warnings),
            settings=[
                status_pb2.Setting(name=choice.name, value=choice.value, source=choice.source)
                for choice in self.settings
            ],
            capacity=figures.capacity,
            running=figures.running,
            queued=figures.queued,
            preferred_batch_size=figures.preferred_batch_size,
            cpu_affinity=self.cpu_affinity,
            cpu_affinity_message=self.cpu_affinity_message,
            loaded_models=list(figures.loaded_models),
            live_streams=figures.live_streams,
            live_buffered_samples=figures.live_buffered_samples,
            uptime_s=time.monotonic() - self.started_at_s,
            measured_capacity=figures.measured.to_proto() if figures.measured is not None else None,
            queue_wait_s=figures.queue_wait_s,
        )


class StatusServicer(status_pb2_grpc.StatusServiceServicer):
    """Answers GetStatus from a report and the current figures."""

    def __init__(self, report: StatusReport, load: Callable[[], LoadFigures]) -> None:
        self.report = report
        self._load = load
        # The same figures go to the service's Prometheus metrics.
        metrics.track_figures(report.service_name, load)

    async def GetStatus(
        self, request: status_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.GetStatusResponse:
        return self.report.to_proto(self._load())


def status_registration(servicer: status_pb2_grpc.StatusServiceServicer) -> Registration:
    """The registration tuple `common.rpc.server.create_server` takes."""
    return (status_pb2_grpc.add_StatusServiceServicer_to_server, servicer, SERVICE_NAME)

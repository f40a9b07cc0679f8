"""Prometheus metrics of every service (prometheus_client).

Each process serves its metrics over HTTP on `SUBTITLER_<SERVICE>_METRICS_PORT`
(unset: no endpoint; 0: a free port, written to `_METRICS_PORT_FILE`):

- `subtitler_rpcs_total{service, method, code}` and
  `subtitler_rpc_duration_seconds{service, method}` (a histogram), counted by
  the interceptor every service has; `subtitler_rpcs_in_flight{service}`.
- `subtitler_work_capacity`, `_running`, `_queued{service}`: what the
  service's admission limit holds now (the status RPC's figures), and
  `subtitler_models_loaded{service, model}`, `subtitler_live_streams{service}`.
- Per service extras registered with `gauge`: shared memory held by the
  audio service; jobs by state, queue length on the gateway.
- The HTTP front's `subtitler_http_requests_total{route, method, status}`
  and `subtitler_http_request_duration_seconds{route}`, at its own `/metrics`.
- The gateway's `subtitler_jobs_finished_total{state}`,
  `subtitler_stage_duration_seconds{stage}` and
  `subtitler_job_real_time_factor` (processing time over audio time).

Metrics carry a `service` label, so several services in one process (the
in-process tests) share the process's registry without clashing.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

logger = logging.getLogger(__name__)

RPCS = Counter("subtitler_rpcs", "RPCs handled, by method and status code", ["service", "method", "code"])
RPC_SECONDS = Histogram(
    "subtitler_rpc_duration_seconds",
    "Time from an RPC's start to its status",
    ["service", "method"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
)
IN_FLIGHT = Gauge("subtitler_rpcs_in_flight", "RPCs being handled now", ["service"])
HTTP_REQUESTS = Counter(
    "subtitler_http_requests", "HTTP requests of the HTTP front, by route and status", ["route", "method", "status"]
)
HTTP_SECONDS = Histogram(
    "subtitler_http_request_duration_seconds",
    "Time from an HTTP request to its response's end (a job's whole run for a transcription)",
    ["route"],
    buckets=(0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300, 900, 3600),
)
JOBS_FINISHED = Counter("subtitler_jobs_finished", "Jobs that ended, by final state", ["state"])
STAGE_SECONDS = Histogram(
    "subtitler_stage_duration_seconds",
    "Wall time of a job's stage, from its start to its end",
    ["stage"],
    buckets=(0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600, 1800, 3600),
)
JOB_RTF = Histogram(
    "subtitler_job_real_time_factor",
    "A succeeded job's processing time over its audio's duration",
    buckets=(0.005, 0.01, 0.02, 0.03, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2),
)


class _Figures(Collector):
    """Reads every registered service's load figures at scrape time."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._figures: dict[str, Callable[[], Any]] = {}
        self._gauges: dict[tuple[str, str], tuple[str, Callable[[], float | dict[str, float]]]] = {}

    def track(self, service: str, figures: Callable[[], Any]) -> None:
        with self._lock:
            self._figures[service] = figures

    def gauge(self, service: str, name: str, documentation: str, read: Callable[[], float | dict[str, float]]) -> None:
        with self._lock:
            self._gauges[(service, name)] = (documentation, read)

    def collect(self) -> Iterator[GaugeMetricFamily]:
        with self._lock:
            figures = dict(self._figures)
            gauges = dict(self._gauges)
        families = {
            name: GaugeMetricFamily(f"subtitler_{name}", text, labels=labels)
            for name, text, labels in (
                ("work_capacity", "Units of work the service runs at once", ["service"]),
                ("work_running", "Units of work running now", ["service"]),
                ("work_queued", "Units of work waiting for a slot", ["service"]),
                ("live_streams", "Live caption streams open", ["service"]),
                ("models_loaded", "Models loaded (1 each)", ["service", "model"]),
                (
                    "measured_audio_seconds_per_second",
                    "Seconds of a file's audio the service processes per second, measured",
                    ["service"],
                ),
                (
                    "measured_live_decode_seconds",
                    "Seconds one live decode takes on one ASR worker, measured",
                    ["service"],
                ),
                ("measured_live_streams", "Live streams the gateway holds at the latency targets", ["service"]),
            )
        }
        for service, read in figures.items():
            try:
                now = read()
            except Exception:
                logger.debug("figures of %s could not be read", service, exc_info=True)
                continue
            families["work_capacity"].add_metric([service], now.capacity)
            families["work_running"].add_metric([service], now.running)
            families["work_queued"].add_metric([service], now.queued)
            families["live_streams"].add_metric([service], now.live_streams)
            for model in now.loaded_models:
                families["models_loaded"].add_metric([service, model], 1)
            if now.measured is not None:
                families["measured_audio_seconds_per_second"].add_metric(
                    [service], now.measured.audio_seconds_per_second
                )
                families["measured_live_decode_seconds"].add_metric([service], now.measured.live_decode_s)
                families["measured_live_streams"].add_metric([service], now.measured.live_streams)
        yield from families.values()
        by_name: dict[str, GaugeMetricFamily] = {}
        for (service, name), (documentation, read) in gauges.items():
            try:
                value = read()
            except Exception:
                logger.debug("gauge %s of %s could not be read", name, service, exc_info=True)
                continue
            if isinstance(value, dict):
                family = by_name.setdefault(
                    name, GaugeMetricFamily(f"subtitler_{name}", documentation, labels=["service", "state"])
                )
                for label, number in value.items():
                    family.add_metric([service, label], number)
            else:
                family = by_name.setdefault(
                    name, GaugeMetricFamily(f"subtitler_{name}", documentation, labels=["service"])
                )
                family.add_metric([service], value)
        yield from by_name.values()


_FIGURES = _Figures()
REGISTRY.register(_FIGURES)


def track_figures(service: str, figures: Callable[[], Any]) -> None:
    """Exports `figures()` (a `common.rpc.status.LoadFigures`) of `service` at each scrape."""
    _FIGURES.track(service, figures)


def gauge(service: str, name: str, documentation: str, read: Callable[[], float | dict[str, float]]) -> None:
    """A gauge `subtitler_<name>{service}` read at each scrape; a dict value
    gives one series per key (label `state`)."""
    _FIGURES.gauge(service, name, documentation, read)


class MetricsEndpoint:
    """The HTTP endpoint of a process's metrics."""

    def __init__(self, host: str, port: int, port_file: Path | None = None) -> None:
        self._server, self._thread = start_http_server(port, addr=host)
        self.port = int(self._server.server_address[1])
        if port_file is not None:
            tmp = port_file.with_suffix(".tmp")
            tmp.write_text(str(self.port))
            tmp.replace(port_file)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()

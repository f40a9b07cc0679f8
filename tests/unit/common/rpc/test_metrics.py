"""The metrics every service exports (common/rpc/metrics.py): load figures and
gauges read at scrape time, the endpoint, and the settings that turn it on."""

from __future__ import annotations

import urllib.request

from prometheus_client import REGISTRY

from common.rpc import metrics
from common.rpc.server import ServerConfig
from common.rpc.status import LoadFigures


def test_figures_and_gauges_are_read_at_each_scrape() -> None:
    figures = LoadFigures(capacity=4, running=1, queued=2, loaded_models=("embedded:tiny.en",))
    metrics.track_figures("unit-test", lambda: figures)
    jobs = {"queued": 3.0, "running": 1.0}
    metrics.gauge("unit-test", "unit_jobs", "jobs by state", lambda: jobs)
    metrics.gauge("unit-test", "unit_broken", "a gauge whose read fails", lambda: 1 / 0)
    assert REGISTRY.get_sample_value("subtitler_work_capacity", {"service": "unit-test"}) == 4
    assert REGISTRY.get_sample_value("subtitler_work_queued", {"service": "unit-test"}) == 2
    model = {"service": "unit-test", "model": "embedded:tiny.en"}
    assert REGISTRY.get_sample_value("subtitler_models_loaded", model) == 1
    assert REGISTRY.get_sample_value("subtitler_unit_jobs", {"service": "unit-test", "state": "queued"}) == 3
    jobs["queued"] = 0.0
    assert REGISTRY.get_sample_value("subtitler_unit_jobs", {"service": "unit-test", "state": "queued"}) == 0
    assert REGISTRY.get_sample_value("subtitler_unit_broken", {"service": "unit-test"}) is None


def test_the_endpoint_serves_the_text_format() -> None:
    endpoint = metrics.MetricsEndpoint("127.0.0.1", 0)
    try:
        metrics.RPCS.labels("unit-test", "Ping", "OK").inc()
        with urllib.request.urlopen(f"http://127.0.0.1:{endpoint.port}/metrics", timeout=10) as page:
            text = page.read().decode()
        assert 'subtitler_rpcs_total{code="OK",method="Ping",service="unit-test"}' in text
    finally:
        endpoint.close()


def test_metrics_are_off_unless_a_port_is_set() -> None:
    assert ServerConfig.from_env({}, "SUBTITLER_ASR_", 50054).metrics_port is None
    assert ServerConfig.from_env({"SUBTITLER_ASR_METRICS_PORT": "0"}, "SUBTITLER_ASR_", 50054).metrics_port == 0
    assert ServerConfig.from_env({"SUBTITLER_ASR_METRICS_PORT": "9104"}, "SUBTITLER_ASR_", 50054).metrics_port == 9104

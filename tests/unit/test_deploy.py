"""The deployment files (deploy/): Dockerfiles linted with hadolint, the
compose file checked against the Compose specification's schema, and the
Kubernetes manifests against Kubernetes' own schemas, strictly
(kubernetes-validate); the kustomization lists every manifest. No image is
built. The tools come from the dev extra (PyPI)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
BIN = Path(sys.executable).parent
SERVICES = ("gateway", "audio", "vad", "asr", "align", "diarize", "http")


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(command, capture_output=True, text=True, timeout=120, cwd=ROOT)


def test_every_service_has_a_linted_non_root_dockerfile() -> None:
    files = sorted((DEPLOY / "docker").glob("*.Dockerfile"))
    assert [file.name.removesuffix(".Dockerfile") for file in files] == sorted(SERVICES)
    linted = _run(str(BIN / "hadolint"), *map(str, files))
    assert linted.returncode == 0, linted.stdout + linted.stderr
    for file in files:
        text = file.read_text()
        assert "USER 10001" in text and "FROM python:3.11-slim" in text, file.name
        service = file.name.removesuffix(".Dockerfile")
        extra = "gateway" if service == "gateway" else service
        assert f'".[{extra}]"' in text, f"{file.name} installs only its extra"


def test_the_compose_file_follows_the_compose_specification() -> None:
    checked = _run(str(BIN / "check-jsonschema"), "--builtin-schema", "vendor.compose-spec", "deploy/compose.yaml")
    assert checked.returncode == 0, checked.stdout + checked.stderr
    compose = yaml.safe_load((DEPLOY / "compose.yaml").read_text())
    assert set(compose["services"]) == set(SERVICES)
    for stage in ("vad", "asr", "align", "diarize"):
        # Shared memory with the audio service: the same IPC namespace and host id.
        assert compose["services"][stage]["ipc"] == "service:audio"
        assert compose["services"][stage]["hostname"] == compose["services"]["audio"]["hostname"]


def test_the_kubernetes_manifests_are_valid_and_all_in_the_kustomization() -> None:
    base = DEPLOY / "k8s" / "base"
    manifests = sorted(path for path in base.glob("*.yaml") if path.name != "kustomization.yaml")
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(path.name for path in manifests)
    validated = _run(str(BIN / "kubernetes-validate"), "--strict", "--quiet", *map(str, manifests))
    assert validated.returncode == 0, validated.stdout + validated.stderr
    documents = [doc for path in manifests for doc in yaml.safe_load_all(path.read_text()) if doc]
    deployments = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "Deployment"}
    assert set(deployments) == set(SERVICES)
    services = {doc["metadata"]["name"]: doc for doc in documents if doc["kind"] == "Service"}
    assert services["asr"]["spec"]["clusterIP"] == "None", "a headless Service, so dns:/// balances over ASR pods"
    for name, deployment in deployments.items():
        container = deployment["spec"]["template"]["spec"]["containers"][0]
        assert container["resources"]["requests"] and container["resources"]["limits"], name
        probe = container["readinessProbe"]
        assert ("grpc" in probe) == (name != "http"), f"{name}: gRPC health probes on the gRPC services"
    assert any(
        doc["kind"] == "HorizontalPodAutoscaler" and doc["spec"]["scaleTargetRef"]["name"] == "asr" for doc in documents
    )


def test_the_dashboard_shows_only_metrics_the_services_export() -> None:
    import json
    import re

    from common.rpc import metrics

    dashboard = json.loads((DEPLOY / "grafana" / "subtitler.json").read_text())
    exported = {
        metrics.RPCS._name + "_total",
        metrics.RPC_SECONDS._name + "_bucket",
        metrics.JOBS_FINISHED._name + "_total",
        metrics.STAGE_SECONDS._name + "_bucket",
        metrics.JOB_RTF._name + "_bucket",
        metrics.HTTP_REQUESTS._name + "_total",
        metrics.HTTP_SECONDS._name + "_bucket",
        *(f"subtitler_{name}" for name in ("work_capacity", "work_running", "work_queued", "live_streams")),
        *(f"subtitler_{name}" for name in ("models_loaded", "jobs", "shared_memory_bytes", "audio_stored")),
    }
    used = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"subtitler_[a-z_]+", target["expr"])
    }
    assert used and used <= exported, used - exported

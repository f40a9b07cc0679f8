from __future__ import annotations

import dataclasses

import pytest

from common.machine.hardware import BYTES_PER_GIB, GpuInfo, HardwareInfo
from common.machine.tuning import Tuning, tune


def _hardware(
    *,
    cpus: int = 2,
    cpu_quota: float | None = None,
    memory_bytes: int = 24 * BYTES_PER_GIB,
    memory_limit_bytes: int | None = None,
    gpus: tuple[GpuInfo, ...] = (),
    cuda_device_count: int | None = None,
) -> HardwareInfo:
    return HardwareInfo(
        logical_cpus=cpus,
        physical_cpus=cpus,
        usable_cpus=tuple(range(cpus)),
        cpu_quota=cpu_quota,
        memory_total_bytes=memory_bytes,
        memory_available_bytes=memory_bytes,
        memory_limit_bytes=memory_limit_bytes,
        gpus=gpus,
        cuda_device_count=len(gpus) if cuda_device_count is None else cuda_device_count,
    )


def _gpu(free_gib: float, total_gib: float = 139.8) -> GpuInfo:
    return GpuInfo(
        index=0,
        name="NVIDIA H200",
        memory_total_bytes=int(total_gib * BYTES_PER_GIB),
        memory_free_bytes=int(free_gib * BYTES_PER_GIB),
    )


def test_two_cpus_run_two_single_threaded_workers() -> None:
    tuning = tune(_hardware(cpus=2))
    assert tuning.device == "cpu"
    assert tuning.asr_compute_type == "int8"
    assert (tuning.asr_workers, tuning.asr_threads_per_worker, tuning.asr_batch_size) == (2, 1, 6)
    assert tuning.gateway_max_concurrent_jobs == 16
    assert (tuning.vad_max_concurrent, tuning.vad_threads) == (1, 1)
    assert (tuning.align_max_concurrent, tuning.align_threads) == (1, 1)


@pytest.mark.parametrize(
    ("memory_gib", "batch_size"),
    [
        (24, 6),  # plenty: the largest CPU batch
        (3, 4),  # 1.5 GiB a worker: 0.5 GiB beyond the model, 128 MiB a chunk
        (2, 1),  # nothing beyond the model: one chunk at a time
    ],
)
def test_the_cpu_batch_follows_each_workers_share_of_the_memory(memory_gib: int, batch_size: int) -> None:
    tuning = tune(_hardware(cpus=2, memory_limit_bytes=memory_gib * BYTES_PER_GIB))
    assert (tuning.asr_workers, tuning.asr_batch_size) == (2, batch_size)
    assert f"batches of {batch_size}" in tuning.reason("asr_batch_size")


def test_sixteen_cpus_cap_the_workers_at_eight_and_share_out_threads() -> None:
    tuning = tune(_hardware(cpus=16))
    assert (tuning.asr_workers, tuning.asr_threads_per_worker) == (8, 2)
    # 8 per worker would be 64: half a GiB each of the 24 GiB allows 48.
    assert tuning.gateway_max_concurrent_jobs == 48
    assert tuning.vad_max_concurrent == 8
    assert tuning.align_max_concurrent == 8
    assert "8 workers" in tuning.reason("asr_workers")


def test_a_quota_of_one_and_a_half_cores_counts_as_two_cpus() -> None:
    tuning = tune(_hardware(cpus=16, cpu_quota=1.5))
    assert (tuning.asr_workers, tuning.asr_threads_per_worker) == (2, 1)
    assert tuning.vad_max_concurrent == 1
    assert "quota 1.5 cores" in tuning.reason("asr_workers")


def test_one_cpu_runs_eight_jobs_at_once_and_little_memory_fewer() -> None:
    tuning = tune(_hardware(cpus=1))
    assert tuning.asr_workers == 1
    assert tuning.gateway_max_concurrent_jobs == 8
    assert tune(_hardware(cpus=1, memory_limit_bytes=2 * BYTES_PER_GIB)).gateway_max_concurrent_jobs == 4
    # Never fewer than two: one job's upload overlaps another's decoding.
    assert tune(_hardware(cpus=1, memory_bytes=BYTES_PER_GIB // 2)).gateway_max_concurrent_jobs == 2


def test_little_memory_means_fewer_workers_with_more_threads() -> None:
    tuning = tune(_hardware(cpus=8, memory_limit_bytes=3 * BYTES_PER_GIB))
    assert (tuning.asr_workers, tuning.asr_threads_per_worker) == (3, 2)
    assert "3.0 GiB effective memory" in tuning.reason("asr_workers")


def test_less_than_a_gib_still_runs_one_worker() -> None:
    tuning = tune(_hardware(cpus=4, memory_bytes=BYTES_PER_GIB // 2))
    assert (tuning.asr_workers, tuning.asr_threads_per_worker) == (1, 4)


def test_a_gpu_with_139_gib_free_runs_two_float16_workers_with_the_largest_batch() -> None:
    tuning = tune(_hardware(cpus=16, gpus=(_gpu(free_gib=139.0),)))
    assert tuning.device == "cuda"
    assert tuning.asr_compute_type == "float16"
    assert (tuning.asr_workers, tuning.asr_threads_per_worker, tuning.asr_batch_size) == (2, 1, 32)
    assert "NVIDIA H200" in tuning.reason("asr_batch_size")
    assert "139.0 GiB free" in tuning.reason("asr_batch_size")


@pytest.mark.parametrize(
    ("free_gib", "workers", "batch_size"),
    [
        (15.0, 2, 14),  # (15 - 2 x 4) / (2 x 0.25)
        (6.0, 1, 8),  # too little for two replicas: (6 - 4) / 0.25
        (4.5, 1, 4),  # room for 2 chunks: the smallest batch
        (2.0, 1, 4),  # not even room for the model: still one worker
    ],
)
def test_the_cuda_batch_follows_the_free_gpu_memory(free_gib: float, workers: int, batch_size: int) -> None:
    tuning = tune(_hardware(gpus=(_gpu(free_gib=free_gib, total_gib=16.0),)))
    assert (tuning.asr_workers, tuning.asr_batch_size) == (workers, batch_size)


def test_cuda_without_nvml_uses_the_smallest_batch() -> None:
    tuning = tune(_hardware(cpus=4, cuda_device_count=1))
    assert tuning.device == "cuda"
    assert (tuning.asr_workers, tuning.asr_batch_size) == (2, 4)
    assert "unknown" in tuning.reason("asr_batch_size")


@pytest.mark.parametrize(
    "hardware",
    [_hardware(cpus=2), _hardware(cpus=16, memory_limit_bytes=BYTES_PER_GIB), _hardware(gpus=(_gpu(139.0),))],
)
def test_every_setting_has_one_reason(hardware: HardwareInfo) -> None:
    tuning = tune(hardware)
    settings = [field.name for field in dataclasses.fields(Tuning) if field.name != "reasons"]
    assert [name for name, _ in tuning.reasons] == settings
    for name in settings:
        assert str(getattr(tuning, name)) in tuning.reason(name), name
    with pytest.raises(KeyError):
        tuning.reason("no_such_setting")

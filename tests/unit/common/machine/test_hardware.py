from __future__ import annotations

import sys
import threading
import time
import types
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from common.machine import hardware
from common.machine.hardware import BYTES_PER_GIB, GpuInfo, HardwareInfo, detect_hardware

_NO_MEMBERSHIP = Path("/nonexistent/proc/self/cgroup")


def _hardware(
    *,
    usable_cpus: tuple[int, ...] = (0, 1),
    cpu_quota: float | None = None,
    memory_total_bytes: int = 24 * BYTES_PER_GIB,
    memory_limit_bytes: int | None = None,
    gpus: tuple[GpuInfo, ...] = (),
) -> HardwareInfo:
    return HardwareInfo(
        logical_cpus=len(usable_cpus),
        physical_cpus=len(usable_cpus),
        usable_cpus=usable_cpus,
        cpu_quota=cpu_quota,
        memory_total_bytes=memory_total_bytes,
        memory_available_bytes=memory_total_bytes // 2,
        memory_limit_bytes=memory_limit_bytes,
        gpus=gpus,
        cuda_device_count=len(gpus),
    )


def _write(root: Path, relative: str, text: str) -> None:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text + "\n")


def _detect_cgroups(root: Path, membership: Path = _NO_MEMBERSHIP) -> HardwareInfo:
    return detect_hardware(cgroup_root=root, proc_cgroup=membership)


# --- effective values and fields ------------------------------------------------------------------------


def test_a_fractional_quota_rounds_up_and_caps_the_usable_cpus() -> None:
    assert _hardware(usable_cpus=tuple(range(16)), cpu_quota=1.5).effective_cpus == 2
    assert _hardware(usable_cpus=tuple(range(16))).effective_cpus == 16
    assert _hardware(usable_cpus=(0, 1), cpu_quota=8.0).effective_cpus == 2
    assert _hardware(usable_cpus=(0,), cpu_quota=0.1).effective_cpus == 1
    assert _hardware(usable_cpus=()).effective_cpus == 1


def test_the_memory_limit_caps_the_total() -> None:
    assert _hardware(memory_limit_bytes=BYTES_PER_GIB).effective_memory_bytes == BYTES_PER_GIB
    assert _hardware(memory_total_bytes=4 * BYTES_PER_GIB).effective_memory_bytes == 4 * BYTES_PER_GIB
    limit_above_total = _hardware(memory_total_bytes=BYTES_PER_GIB, memory_limit_bytes=8 * BYTES_PER_GIB)
    assert limit_above_total.effective_memory_bytes == BYTES_PER_GIB


def test_fields_are_flat_readable_strings() -> None:
    h200 = GpuInfo(index=0, name="NVIDIA H200", memory_total_bytes=150_118_121_472, memory_free_bytes=149_250_000_000)
    info = HardwareInfo(
        logical_cpus=2,
        physical_cpus=None,
        usable_cpus=(0, 1),
        cpu_quota=1.5,
        memory_total_bytes=25_275_990_016,
        memory_available_bytes=24 * BYTES_PER_GIB,
        memory_limit_bytes=512 * 1024 * 1024,
        gpus=(h200,),
        cuda_device_count=1,
        disk_free_bytes=(("/models", 10 * BYTES_PER_GIB),),
        warnings=("something was assumed",),
    )
    fields = info.as_fields()
    assert fields["cpus.usable"] == "0-1"
    assert fields["cpus.physical"] == "unknown"
    assert fields["cpus.quota"] == "1.5 cores"
    assert fields["cpus.effective"] == "2"
    assert fields["memory.total"] == "23.5 GiB"
    assert fields["memory.limit"] == "512.0 MiB"
    assert fields["memory.effective"] == "512.0 MiB"
    assert fields["gpu.0"] == "NVIDIA H200, 139.8 GiB (139.0 GiB free)"
    assert fields["cuda.devices"] == "1"
    assert fields["disk./models"] == "10.0 GiB free"
    assert fields["warning.0"] == "something was assumed"
    assert all(isinstance(value, str) for value in fields.values())


def test_the_cpu_model_and_vector_extensions_are_read_from_cpuinfo(tmp_path: Path) -> None:
    cpuinfo = tmp_path / "cpuinfo"
    first = "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 26\nmodel\t\t: 2\n"
    first += "model name\t: AMD EPYC\nflags\t\t: fpu sse2 avx2 avx512f avx512_vnni avx512_bf16 sha_ni\n"
    cpuinfo.write_text(first + "\nprocessor\t: 1\nmodel name\t: Other\nflags\t\t: amx_int8\n")
    model, extensions = hardware._cpu_description(cpuinfo)
    assert model == "AMD EPYC (family 26, model 2)"
    assert extensions == ("avx2", "avx512f", "avx512_vnni", "avx512_bf16")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp sve\n")
    assert hardware._cpu_description(arm)[1] == ("asimd", "asimddp", "sve")
    fields = HardwareInfo(**{**_hardware().__dict__, "cpu_model": model, "cpu_vector_extensions": extensions})
    assert fields.as_fields()["cpus.vector"] == "avx2 avx512f avx512_vnni avx512_bf16"
    assert _hardware().as_fields()["cpus.model"] == "unknown"


# --- cgroups ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("cpu_max", "quota"), [("150000 100000", 1.5), ("max 100000", None), ("200000", 2.0), ("50000 100000", 0.5)]
)
def test_cgroup_v2_cpu_max_is_read_in_cores(tmp_path: Path, cpu_max: str, quota: float | None) -> None:
    _write(tmp_path, "cpu.max", cpu_max)
    info = _detect_cgroups(tmp_path)
    assert info.cpu_quota == quota
    assert not [warning for warning in info.warnings if "cpu" in warning.lower()]


@pytest.mark.parametrize(
    ("memory_max", "limit"), [("4294967296", 4 * BYTES_PER_GIB), ("max", None), ("9223372036854771712", None)]
)
def test_cgroup_v2_memory_max_is_read_in_bytes(tmp_path: Path, memory_max: str, limit: int | None) -> None:
    _write(tmp_path, "memory.max", memory_max)
    assert _detect_cgroups(tmp_path).memory_limit_bytes == limit


def test_cgroup_v1_files_are_read(tmp_path: Path) -> None:
    _write(tmp_path, "cpu,cpuacct/cpu.cfs_quota_us", "300000")
    _write(tmp_path, "cpu,cpuacct/cpu.cfs_period_us", "100000")
    _write(tmp_path, "memory/memory.limit_in_bytes", str(2 * BYTES_PER_GIB))
    info = _detect_cgroups(tmp_path)
    assert info.cpu_quota == 3.0
    assert info.memory_limit_bytes == 2 * BYTES_PER_GIB


def test_cgroup_v1_unlimited_values_are_no_limit(tmp_path: Path) -> None:
    _write(tmp_path, "cpu/cpu.cfs_quota_us", "-1")
    _write(tmp_path, "cpu/cpu.cfs_period_us", "100000")
    _write(tmp_path, "memory/memory.limit_in_bytes", "9223372036854771712")
    info = _detect_cgroups(tmp_path)
    assert info.cpu_quota is None
    assert info.memory_limit_bytes is None


def test_no_cgroup_files_mean_no_limits_and_no_warnings(tmp_path: Path) -> None:
    info = _detect_cgroups(tmp_path)
    assert info.cpu_quota is None
    assert info.memory_limit_bytes is None
    assert not [warning for warning in info.warnings if str(tmp_path) in warning]


def test_malformed_cgroup_files_warn_and_mean_no_limit(tmp_path: Path) -> None:
    _write(tmp_path, "cpu.max", "lots 100000")
    _write(tmp_path, "memory.max", "a little")
    info = _detect_cgroups(tmp_path)
    assert info.cpu_quota is None
    assert info.memory_limit_bytes is None
    assert any("cpu.max" in warning and "malformed" in warning for warning in info.warnings)
    assert any("memory.max" in warning and "malformed" in warning for warning in info.warnings)


def test_an_unreadable_cgroup_file_warns_and_means_no_limit(tmp_path: Path) -> None:
    (tmp_path / "memory.max").mkdir()  # reading it fails with IsADirectoryError
    info = _detect_cgroups(tmp_path)
    assert info.memory_limit_bytes is None
    assert any("memory.max" in warning and "could not be read" in warning for warning in info.warnings)


def test_the_tightest_limit_of_the_own_cgroup_and_its_ancestors_wins(tmp_path: Path) -> None:
    membership = tmp_path / "proc-self-cgroup"
    membership.write_text("4:memory:/jobs/job-1\n1:cpu,cpuacct:/jobs/job-1\n0::/\n")
    root = tmp_path / "cgroup"
    _write(root, "memory/memory.limit_in_bytes", "9223372036854771712")
    _write(root, "memory/jobs/memory.limit_in_bytes", str(3 * BYTES_PER_GIB))
    _write(root, "memory/jobs/job-1/memory.limit_in_bytes", str(5 * BYTES_PER_GIB))
    _write(root, "cpu,cpuacct/jobs/job-1/cpu.cfs_quota_us", "150000")
    _write(root, "cpu,cpuacct/jobs/job-1/cpu.cfs_period_us", "100000")
    info = _detect_cgroups(root, membership)
    assert info.memory_limit_bytes == 3 * BYTES_PER_GIB
    assert info.cpu_quota == 1.5


def test_a_v2_own_cgroup_is_read_below_the_root(tmp_path: Path) -> None:
    membership = tmp_path / "proc-self-cgroup"
    membership.write_text("0::/system.slice/subtitler-asr.service\n")
    root = tmp_path / "cgroup"
    _write(root, "system.slice/subtitler-asr.service/cpu.max", "100000 100000")
    _write(root, "system.slice/subtitler-asr.service/memory.max", str(BYTES_PER_GIB))
    info = _detect_cgroups(root, membership)
    assert info.cpu_quota == 1.0
    assert info.memory_limit_bytes == BYTES_PER_GIB


# --- failing probes ---------------------------------------------------------------------------------------


def test_a_failing_memory_probe_warns_and_assumes_little_memory(monkeypatch: pytest.MonkeyPatch) -> None:
    def broken() -> None:
        raise OSError("no /proc/meminfo")

    monkeypatch.setattr(psutil, "virtual_memory", broken)
    info = detect_hardware(cgroup_root=Path("/nonexistent"), proc_cgroup=_NO_MEMBERSHIP)
    assert info.memory_total_bytes == 2 * BYTES_PER_GIB
    assert any("memory" in warning and "no /proc/meminfo" in warning for warning in info.warnings)


def test_a_failing_affinity_probe_falls_back_to_all_logical_cpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delattr(hardware.os, "sched_getaffinity")
    monkeypatch.setattr(hardware.os, "cpu_count", lambda: 3)
    info = detect_hardware(cgroup_root=Path("/nonexistent"), proc_cgroup=_NO_MEMBERSHIP)
    assert info.usable_cpus == (0, 1, 2)
    assert any("CPUs this process may use" in warning for warning in info.warnings)


@pytest.fixture
def stuck_gpu_probe(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A GPU probe that hangs like NVML on a broken driver, until the test ends."""
    release = threading.Event()

    def hang() -> hardware._GpuProbe:
        release.wait()
        return hardware._GpuProbe((), 0, ())

    monkeypatch.setattr(hardware, "_probe_gpus", hang)
    yield
    release.set()


@pytest.mark.usefixtures("stuck_gpu_probe")
def test_a_hanging_gpu_probe_is_given_up_at_the_timeout() -> None:
    started_s = time.monotonic()
    info = detect_hardware(cgroup_root=Path("/nonexistent"), proc_cgroup=_NO_MEMBERSHIP, timeout_s=0.2)
    assert time.monotonic() - started_s < 2.0
    assert info.gpus == ()
    assert info.cuda_device_count == 0
    assert any("did not answer within 0.2 s" in warning for warning in info.warnings)


def _fake_nvml(*, fail_init: bool = False) -> types.ModuleType:
    """A pynvml with one H200 and one board that fails its queries."""

    class NVMLError(Exception):
        pass

    module = types.ModuleType("pynvml")

    def init() -> None:
        if fail_init:
            raise NVMLError("Driver Not Loaded")

    def handle(index: int) -> int:
        if index == 1:
            raise NVMLError("GPU is lost")
        return index

    module.nvmlInit = init  # type: ignore[attr-defined]
    module.nvmlShutdown = lambda: None  # type: ignore[attr-defined]
    module.nvmlDeviceGetCount = lambda: 2  # type: ignore[attr-defined]
    module.nvmlDeviceGetHandleByIndex = handle  # type: ignore[attr-defined]
    module.nvmlDeviceGetName = lambda handle: b"NVIDIA H200"  # type: ignore[attr-defined]
    module.nvmlDeviceGetMemoryInfo = lambda handle: types.SimpleNamespace(  # type: ignore[attr-defined]
        total=150_118_121_472, free=149_250_000_000
    )
    return module


def test_nvml_gpus_are_listed_and_a_failing_one_is_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml())
    monkeypatch.setitem(sys.modules, "ctranslate2", None)  # not installed, as in the gateway
    info = detect_hardware(cgroup_root=Path("/nonexistent"), proc_cgroup=_NO_MEMBERSHIP)
    assert info.gpus == (
        GpuInfo(index=0, name="NVIDIA H200", memory_total_bytes=150_118_121_472, memory_free_bytes=149_250_000_000),
    )
    assert info.cuda_device_count == 1
    assert any("GPU 1" in warning and "GPU is lost" in warning for warning in info.warnings)
    assert any("ctranslate2 is not installed" in warning for warning in info.warnings)


def test_nvml_that_fails_to_start_means_no_gpus(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "pynvml", _fake_nvml(fail_init=True))
    monkeypatch.setitem(sys.modules, "ctranslate2", None)
    info = detect_hardware(cgroup_root=Path("/nonexistent"), proc_cgroup=_NO_MEMBERSHIP)
    assert info.gpus == ()
    assert info.cuda_device_count == 0
    assert any("NVML is not available (Driver Not Loaded)" in warning for warning in info.warnings)


# --- disk and the real machine ----------------------------------------------------------------------------


def test_free_disk_is_read_for_each_path_even_one_not_created_yet(tmp_path: Path) -> None:
    not_yet = tmp_path / "cache" / "models"
    info = detect_hardware([tmp_path, not_yet], cgroup_root=Path("/nonexistent"), proc_cgroup=_NO_MEMBERSHIP)
    assert [path for path, _ in info.disk_free_bytes] == [str(tmp_path), str(not_yet)]
    assert all(free_bytes > 0 for _, free_bytes in info.disk_free_bytes)


def test_detecting_this_machine_is_quick_and_sensible(tmp_path: Path) -> None:
    started_s = time.monotonic()
    info = detect_hardware([tmp_path])
    assert time.monotonic() - started_s < 5.0
    assert info.logical_cpus >= 1
    assert 1 <= len(info.usable_cpus) <= info.logical_cpus
    assert 1 <= info.effective_cpus <= len(info.usable_cpus)
    assert 0 < info.memory_available_bytes <= info.memory_total_bytes
    assert 0 < info.effective_memory_bytes <= info.memory_total_bytes
    assert info.cuda_device_count >= 0
    assert all(gpu.memory_free_bytes <= gpu.memory_total_bytes for gpu in info.gpus)
    assert info.disk_free_bytes[0][1] > 0
    assert info.as_fields()["cpus.effective"] == str(info.effective_cpus)

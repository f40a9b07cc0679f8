"""Hardware detection: CPUs, cgroup limits, memory, NVIDIA GPUs and free disk.

`detect_hardware` runs once at start-up and never raises: every probe that
fails adds a sentence to `HardwareInfo.warnings` (the details are logged at
DEBUG) and falls back to a conservative value (one CPU, no GPUs...). The
result feeds `common.machine.tuning.tune` and the start-up log / status RPC through
`HardwareInfo.as_fields`.

What is read
------------
CPUs
    ``os.cpu_count()``, ``psutil.cpu_count(logical=False)`` and the CPUs this
    process may run on (``os.sched_getaffinity``, which already reflects
    cpusets and ``taskset``).
CPU quota and memory limit
    cgroup v2 ``cpu.max`` / ``memory.max``, or cgroup v1
    ``cpu/cpu.cfs_quota_us`` + ``cpu.cfs_period_us`` / ``memory/memory.limit_in_bytes``,
    in the process's own cgroup (from ``/proc/self/cgroup``) and every
    ancestor up to the root; the tightest limit wins.
GPUs
    NVML (``pynvml``) for names and memory, and ``ctranslate2.get_cuda_device_count()``
    for what CUDA can actually use. NVML lists every board on the host and does
    not honour ``CUDA_VISIBLE_DEVICES``; CTranslate2 does. Both run in a daemon
    thread bounded by the time left of ``timeout_s``: a broken driver can hang
    NVML initialisation, and then no GPUs are reported.
Disk
    ``shutil.disk_usage`` of each path asked for, or of its nearest existing
    parent (a cache folder that is not created yet lives on that file system).
"""

from __future__ import annotations

import logging
import math
import os
import platform
import shutil
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

import psutil

from common.machine.cpu_lists import format_cpu_list

logger = logging.getLogger(__name__)

DEFAULT_CGROUP_ROOT = Path("/sys/fs/cgroup")
# Which cgroup this process is in, one "hierarchy:controllers:path" line per hierarchy.
DEFAULT_PROC_CGROUP = Path("/proc/self/cgroup")
DEFAULT_DETECT_TIMEOUT_S = 5.0

BYTES_PER_GIB = 1024**3
_BYTES_PER_MIB = 1024**2
# A memory limit at or above this is no limit: cgroup v1 writes "unlimited" as 2**63 rounded down to a page.
_UNLIMITED_MEMORY_BYTES = 1 << 60
# Assumed when psutil cannot read the memory: small, so that tuning stays cautious.
_FALLBACK_MEMORY_BYTES = 2 * BYTES_PER_GIB
# The CFS period the kernel uses when cpu.max gives only a quota.
_DEFAULT_CFS_PERIOD_US = 100_000
# Folders a cgroup v1 CPU or memory controller is mounted on, depending on the distribution.
_V1_CPU_DIRS = ("cpu", "cpu,cpuacct", "cpuacct,cpu")
_V1_MEMORY_DIRS = ("memory",)

_T = TypeVar("_T")

# CPU flags worth reporting, in the order shown: x86's AVX family and int8 dot
# products (VNNI), bfloat16 and AMX, ARM's SIMD and dot products.
_VECTOR_EXTENSIONS = (
    "avx2",
    "avx512f",
    "avx512_vnni",
    "avx_vnni",
    "avx512_bf16",
    "amx_int8",
    "asimd",
    "asimddp",
    "sve",
)


@dataclass(frozen=True)
class _GpuProbe:
    """What the GPU probe thread found."""

    gpus: tuple[GpuInfo, ...]
    cuda_device_count: int
    warnings: tuple[str, ...]


@dataclass(frozen=True)
class GpuInfo:
    """One NVIDIA GPU as NVML reports it."""

    # NVML index (host order; not renumbered by CUDA_VISIBLE_DEVICES).
    index: int
    name: str
    memory_total_bytes: int
    # Free when detected: other processes' allocations are already taken off.
    memory_free_bytes: int


@dataclass(frozen=True)
class HardwareInfo:
    """What this process can use, detected once at start-up."""

    # os.cpu_count(): logical CPUs on the host.
    logical_cpus: int
    # psutil.cpu_count(logical=False); None where unknown.
    physical_cpus: int | None
    # The CPUs this process may run on (sched_getaffinity), sorted.
    usable_cpus: tuple[int, ...]
    # cgroup CPU quota in cores (1.5: 150 ms of CPU time per 100 ms); None: no limit.
    cpu_quota: float | None
    memory_total_bytes: int
    memory_available_bytes: int
    # cgroup memory limit; None when there is none (or it is absurdly large).
    memory_limit_bytes: int | None
    # NVIDIA GPUs through NVML; empty when NVML is absent or failed.
    gpus: tuple[GpuInfo, ...]
    # CUDA devices CTranslate2 sees (len(gpus) when CTranslate2 is not installed).
    cuda_device_count: int
    # (path, free bytes) for each path asked for.
    disk_free_bytes: tuple[tuple[str, int], ...] = ()
    # The CPU's model name ("AMD EPYC 9B45"); empty where unknown.
    cpu_model: str = ""
    # The vector instructions that speed up CTranslate2's and onnxruntime's
    # kernels (`_VECTOR_EXTENSIONS`) this CPU has, e.g. ("avx2", "avx512f",
    # "avx512_vnni"): the same code runs several times faster with them, so
    # speed figures name them.
    cpu_vector_extensions: tuple[str, ...] = ()
    # What could not be detected and what was assumed instead.
    warnings: tuple[str, ...] = field(default=())

    @property
    def effective_cpus(self) -> int:
        """CPUs worth of work this process can run at once: the usable CPUs,
        capped by the cgroup quota rounded up; at least 1."""
        cpus = len(self.usable_cpus)
        if self.cpu_quota is not None:
            cpus = min(cpus, math.ceil(self.cpu_quota))
        return max(1, cpus)

    @property
    def effective_memory_bytes(self) -> int:
        """The memory this process may use: the host's, capped by the cgroup limit."""
        if self.memory_limit_bytes is None:
            return self.memory_total_bytes
        return min(self.memory_total_bytes, self.memory_limit_bytes)

    def as_fields(self) -> dict[str, str]:
        """Flat, human-readable strings for a start-up log line or a status RPC,
        e.g. ``{"cpus.usable": "0-1", "memory.total": "23.5 GiB",
        "gpu.0": "NVIDIA H200, 139.8 GiB (139.0 GiB free)"}``."""
        fields = {
            "cpus.logical": str(self.logical_cpus),
            "cpus.physical": "unknown" if self.physical_cpus is None else str(self.physical_cpus),
            "cpus.usable": format_cpu_list(self.usable_cpus),
            "cpus.quota": "none" if self.cpu_quota is None else f"{self.cpu_quota:g} cores",
            "cpus.effective": str(self.effective_cpus),
            "cpus.model": self.cpu_model or "unknown",
            "cpus.vector": " ".join(self.cpu_vector_extensions) or "none detected",
            "memory.total": format_bytes(self.memory_total_bytes),
            "memory.available": format_bytes(self.memory_available_bytes),
            "memory.limit": "none" if self.memory_limit_bytes is None else format_bytes(self.memory_limit_bytes),
            "memory.effective": format_bytes(self.effective_memory_bytes),
            "gpus": str(len(self.gpus)) if self.gpus else "none",
            "cuda.devices": str(self.cuda_device_count),
        }
        for gpu in self.gpus:
            fields[f"gpu.{gpu.index}"] = (
                f"{gpu.name}, {format_bytes(gpu.memory_total_bytes)} ({format_bytes(gpu.memory_free_bytes)} free)"
            )
        for path, free_bytes in self.disk_free_bytes:
            fields[f"disk.{path}"] = f"{format_bytes(free_bytes)} free"
        for number, warning in enumerate(self.warnings):
            fields[f"warning.{number}"] = warning
        return fields


def format_bytes(size_bytes: int) -> str:
    """A size for people: "23.5 GiB", or MiB below one GiB."""
    if size_bytes >= BYTES_PER_GIB:
        return f"{size_bytes / BYTES_PER_GIB:.1f} GiB"
    return f"{size_bytes / _BYTES_PER_MIB:.1f} MiB"


def detect_hardware(
    paths: Sequence[Path] = (),
    *,
    cgroup_root: Path = DEFAULT_CGROUP_ROOT,
    proc_cgroup: Path = DEFAULT_PROC_CGROUP,
    timeout_s: float = DEFAULT_DETECT_TIMEOUT_S,
) -> HardwareInfo:
    """Detects the CPUs, memory, cgroup limits, GPUs and the free space of
    `paths`; never raises. The GPU probe runs in a daemon thread while the rest
    is read, and is given up (no GPUs, a warning) when `timeout_s` runs out.
    `cgroup_root` and `proc_cgroup` point elsewhere in tests."""
    deadline_s = time.monotonic() + timeout_s
    warnings: list[str] = []

    gpu_result: list[_GpuProbe] = []
    gpu_thread = threading.Thread(target=_run_gpu_probe, args=(gpu_result,), name="gpu-probe", daemon=True)
    try:
        gpu_thread.start()
    except RuntimeError as error:  # no thread can be started: the process is at its limit
        gpu_result.append(_GpuProbe((), 0, (f"the GPU probe could not start ({error}); assumed no GPUs",)))

    logical_cpus = _probe("the logical CPU count", _logical_cpu_count, 1, "1", warnings)
    physical_cpus = _probe("the physical core count", _physical_cpu_count, None, "unknown", warnings)
    usable_cpus = _probe(
        "the CPUs this process may use",
        _usable_cpus,
        tuple(range(logical_cpus)),
        f"all {logical_cpus} logical CPUs",
        warnings,
    )
    no_limits: tuple[float | None, int | None] = (None, None)
    cpu_quota, memory_limit_bytes = _probe(
        "the cgroup limits",
        lambda: _read_cgroup_limits(cgroup_root, proc_cgroup, warnings),
        no_limits,
        "no CPU quota and no memory limit",
        warnings,
    )
    memory_total_bytes, memory_available_bytes = _probe(
        "the memory size",
        _memory_sizes,
        (_FALLBACK_MEMORY_BYTES, _FALLBACK_MEMORY_BYTES),
        format_bytes(_FALLBACK_MEMORY_BYTES),
        warnings,
    )
    disk_free_bytes = tuple((str(path), _disk_free_bytes(path, warnings)) for path in paths)
    unknown_cpu: tuple[str, tuple[str, ...]] = ("", ())
    cpu_model, cpu_vector_extensions = _probe("the CPU model", _cpu_description, unknown_cpu, "none", warnings)

    if gpu_thread.is_alive():
        gpu_thread.join(max(0.0, deadline_s - time.monotonic()))
    if gpu_result:
        gpus, cuda_device_count = gpu_result[0].gpus, gpu_result[0].cuda_device_count
        warnings.extend(gpu_result[0].warnings)
    else:
        gpus, cuda_device_count = (), 0
        warnings.append(f"the GPU probe (NVML, CUDA) did not answer within {timeout_s:g} s; assumed no GPUs")

    return HardwareInfo(
        logical_cpus=logical_cpus,
        physical_cpus=physical_cpus,
        usable_cpus=usable_cpus,
        cpu_quota=cpu_quota,
        memory_total_bytes=memory_total_bytes,
        memory_available_bytes=memory_available_bytes,
        memory_limit_bytes=memory_limit_bytes,
        gpus=gpus,
        cuda_device_count=cuda_device_count,
        disk_free_bytes=disk_free_bytes,
        cpu_model=cpu_model,
        cpu_vector_extensions=cpu_vector_extensions,
        warnings=tuple(warnings),
    )


def _probe(what: str, probe: Callable[[], _T], fallback: _T, assumed: str, warnings: list[str]) -> _T:
    """The probe's answer, or `fallback` with a warning if it fails."""
    try:
        return probe()
    except Exception as error:  # detection must never stop a service from starting
        logger.debug("probing %s failed", what, exc_info=True)
        warnings.append(f"{what} could not be detected ({error}); assumed {assumed}")
        return fallback


def _cpu_description(cpuinfo: Path = Path("/proc/cpuinfo")) -> tuple[str, tuple[str, ...]]:
    """The CPU's model name and vector extensions, from Linux's cpuinfo
    (the first CPU's entry; x86 "flags", ARM "Features"); elsewhere the
    platform's processor string and no extensions."""
    if not cpuinfo.is_file():
        return platform.processor(), ()
    fields: dict[str, str] = {}
    for line in cpuinfo.read_text(errors="replace").splitlines():
        if not line.strip():
            if fields:
                break  # the first CPU is enough
            continue
        name, _, value = line.partition(":")
        fields.setdefault(name.strip().lower(), value.strip())
    model = fields.get("model name") or fields.get("hardware") or platform.processor()
    if fields.get("cpu family") and fields.get("model"):
        # Virtual machines often hide the model name's generation; these numbers keep it.
        model = f"{model} (family {fields['cpu family']}, model {fields['model']})"
    flags = set((fields.get("flags") or fields.get("features") or "").split())
    return model, tuple(extension for extension in _VECTOR_EXTENSIONS if extension in flags)


def _logical_cpu_count() -> int:
    count = os.cpu_count()
    if count is None or count < 1:
        raise ValueError("os.cpu_count() gave no answer")
    return count


def _physical_cpu_count() -> int:
    count = psutil.cpu_count(logical=False)
    if count is None or count < 1:
        raise ValueError("psutil gave no answer")
    return count


def _usable_cpus() -> tuple[int, ...]:
    if not hasattr(os, "sched_getaffinity"):
        raise OSError("os.sched_getaffinity is not available on this platform")
    cpus = tuple(sorted(os.sched_getaffinity(0)))
    if not cpus:
        raise ValueError("sched_getaffinity gave no CPUs")
    return cpus


def _memory_sizes() -> tuple[int, int]:
    memory = psutil.virtual_memory()
    if memory.total <= 0:
        raise ValueError(f"psutil reported {memory.total} bytes")
    return int(memory.total), int(memory.available)


def _disk_free_bytes(path: Path, warnings: list[str]) -> int:
    """Free bytes on the file system of `path` (or of its nearest existing
    parent); 0 with a warning when that cannot be read."""
    try:
        existing = path
        while not existing.exists() and existing != existing.parent:
            existing = existing.parent
        return shutil.disk_usage(existing).free
    except OSError as error:
        logger.debug("disk usage of %s failed", path, exc_info=True)
        warnings.append(f"free disk space at {path} could not be read ({error}); assumed 0 bytes")
        return 0


# --- cgroups -----------------------------------------------------------------------------------------


def _read_cgroup_limits(cgroup_root: Path, proc_cgroup: Path, warnings: list[str]) -> tuple[float | None, int | None]:
    """The tightest CPU quota (cores) and memory limit (bytes) over this
    process's cgroup and its ancestors, in cgroup v2 and v1 layouts; None where
    there is none."""
    memberships = _cgroup_memberships(proc_cgroup)
    quotas: list[float | None] = []
    limits: list[int | None] = []
    # cgroup v2: one unified hierarchy mounted at the root.
    for folder in _cgroup_folders(cgroup_root, memberships.get("")):
        quotas.append(_read_limit(folder / "cpu.max", _parse_cpu_max, "CPU quota", warnings))
        limits.append(_read_limit(folder / "memory.max", _parse_memory_limit, "memory limit", warnings))
    # cgroup v1: one hierarchy per controller, each in its own folder.
    for mount_name in _V1_CPU_DIRS:
        for folder in _cgroup_folders(cgroup_root / mount_name, memberships.get("cpu")):
            quotas.append(_read_v1_cpu_quota(folder, warnings))
    for mount_name in _V1_MEMORY_DIRS:
        for folder in _cgroup_folders(cgroup_root / mount_name, memberships.get("memory")):
            limits.append(_read_limit(folder / "memory.limit_in_bytes", _parse_memory_limit, "memory limit", warnings))
    known_quotas = [quota for quota in quotas if quota is not None]
    known_limits = [limit for limit in limits if limit is not None]
    return (min(known_quotas) if known_quotas else None, min(known_limits) if known_limits else None)


def _cgroup_memberships(proc_cgroup: Path) -> dict[str, str]:
    """Controller name ("" for the cgroup v2 hierarchy) -> this process's cgroup
    path, from /proc/self/cgroup; empty when that cannot be read."""
    try:
        text = proc_cgroup.read_text()
    except OSError:
        return {}
    memberships: dict[str, str] = {}
    for line in text.splitlines():
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if not controllers:
            memberships[""] = path
        for controller in controllers.split(","):
            if controller:
                memberships[controller] = path
    return memberships


def _cgroup_folders(mount: Path, own_path: str | None) -> list[Path]:
    """This process's cgroup folder under `mount` and each ancestor up to
    `mount`, deepest first. Folders that do not exist (a container that sees
    only its own cgroup at the mount) simply have no files to read."""
    folders: list[Path] = []
    relative = Path((own_path or "").lstrip("/"))
    if ".." not in relative.parts:  # outside our cgroup namespace: only the mount is ours
        current = mount / relative
        while current != mount:
            folders.append(current)
            current = current.parent
    folders.append(mount)
    return folders


def _read_limit(path: Path, parse: Callable[[str], _T | None], what: str, warnings: list[str]) -> _T | None:
    """A limit parsed from a cgroup file; None when the file is missing, or
    unreadable or malformed (then with a warning)."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except OSError as error:
        warnings.append(f"{what} in {path} could not be read ({error}); assumed no limit")
        return None
    try:
        return parse(text.strip())
    except ValueError:
        warnings.append(f"{what} in {path} is malformed ({text.strip()!r}); assumed no limit")
        return None


def _parse_cpu_max(text: str) -> float | None:
    """cgroup v2 ``cpu.max``: "150000 100000" -> 1.5 cores; "max 100000" -> None."""
    fields = text.split()
    if not 1 <= len(fields) <= 2:
        raise ValueError(text)
    period_us = int(fields[1]) if len(fields) == 2 else _DEFAULT_CFS_PERIOD_US
    if fields[0] == "max":
        return None
    quota_us = int(fields[0])
    if quota_us <= 0 or period_us <= 0:
        raise ValueError(text)
    return quota_us / period_us


def _read_v1_cpu_quota(folder: Path, warnings: list[str]) -> float | None:
    """cgroup v1 ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` in cores; -1 is no limit."""
    quota_us = _read_limit(folder / "cpu.cfs_quota_us", int, "CPU quota", warnings)
    if quota_us is None or quota_us < 0:
        return None
    period_us = _read_limit(folder / "cpu.cfs_period_us", int, "CPU period", warnings)
    if period_us is None or period_us <= 0 or quota_us == 0:
        warnings.append(f"CPU quota in {folder} is {quota_us} us per {period_us} us; assumed no limit")
        return None
    return quota_us / period_us


def _parse_memory_limit(text: str) -> int | None:
    """cgroup ``memory.max`` / ``memory.limit_in_bytes``: bytes; "max" or an
    absurdly large value -> None."""
    if text == "max":
        return None
    limit_bytes = int(text)
    if limit_bytes < 0:
        raise ValueError(text)
    return None if limit_bytes >= _UNLIMITED_MEMORY_BYTES else limit_bytes


# --- GPUs --------------------------------------------------------------------------------------------


def _run_gpu_probe(result: list[_GpuProbe]) -> None:
    """The GPU probe thread: appends `_probe_gpus`'s answer to `result`."""
    try:
        result.append(_probe_gpus())
    except Exception as error:  # a bug in the probe must not stop a service from starting
        logger.debug("the GPU probe failed", exc_info=True)
        result.append(_GpuProbe((), 0, (f"the GPU probe failed ({error}); assumed no GPUs",)))


def _probe_gpus() -> _GpuProbe:
    """NVIDIA GPUs through NVML and the CUDA device count through CTranslate2,
    with warnings for what failed. Runs in the GPU probe thread; never raises."""
    warnings: list[str] = []
    gpus = _nvml_gpus(warnings)
    try:
        import ctranslate2
    except ImportError:
        if gpus:
            warnings.append("ctranslate2 is not installed; assumed every NVML GPU is a usable CUDA device")
        return _GpuProbe(gpus, len(gpus), tuple(warnings))
    try:
        cuda_device_count = int(ctranslate2.get_cuda_device_count())
    except Exception as error:  # a broken CUDA install must not stop a service from starting
        logger.debug("ctranslate2.get_cuda_device_count failed", exc_info=True)
        warnings.append(f"the CUDA device count could not be read ({error}); assumed 0")
        cuda_device_count = 0
    return _GpuProbe(gpus, cuda_device_count, tuple(warnings))


def _nvml_gpus(warnings: list[str]) -> tuple[GpuInfo, ...]:
    """Every GPU NVML lists; empty (with a warning) when NVML is missing or fails."""
    try:
        import pynvml
    except ImportError:
        warnings.append("nvidia-ml-py (pynvml) is not installed; assumed no GPUs")
        return ()
    try:
        pynvml.nvmlInit()
    except Exception as error:  # pynvml raises its own NVMLError family, and OSError
        logger.debug("nvmlInit failed", exc_info=True)
        warnings.append(f"NVML is not available ({error}); assumed no GPUs")
        return ()
    gpus: list[GpuInfo] = []
    try:
        for index in range(int(pynvml.nvmlDeviceGetCount())):
            try:
                handle = pynvml.nvmlDeviceGetHandleByIndex(index)
                name = pynvml.nvmlDeviceGetName(handle)
                memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
            except Exception as error:  # one bad board is left out, the others still count
                logger.debug("NVML query of GPU %d failed", index, exc_info=True)
                warnings.append(f"GPU {index} could not be queried through NVML ({error}); left out")
                continue
            gpus.append(
                GpuInfo(
                    index=index,
                    name=name.decode() if isinstance(name, bytes) else str(name),
                    memory_total_bytes=int(memory.total),
                    memory_free_bytes=int(memory.free),
                )
            )
    except Exception as error:  # as for nvmlInit
        logger.debug("nvmlDeviceGetCount failed", exc_info=True)
        warnings.append(f"the GPU count could not be read through NVML ({error}); assumed no GPUs")
        return ()
    finally:
        try:
            pynvml.nvmlShutdown()
        except Exception:  # nothing is left to release if shutdown fails
            logger.debug("nvmlShutdown failed", exc_info=True)
    return tuple(gpus)

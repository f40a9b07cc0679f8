"""Settings derived from the detected hardware: how many ASR workers, threads
and chunks per batch, and how many detections and alignments run at once.

`tune` is a pure function of a `HardwareInfo`; every setting comes with a
reason (what was detected, what was chosen) for the start-up log and the
status RPC. Explicit configuration overrides these values; they are only the
defaults.

Where the rules come from
-------------------------
Measured on a 2-core machine with Whisper tiny.en, int8, beam 5, on a
10-minute recording: one CTranslate2 worker with 2 threads took 10.4 s, one
worker with 1 thread 12.7 s, two workers with 1 thread each (two halves in
parallel) 7.1 s. Parallel workers beat intra-op threads, so on CPU there is one
single-threaded worker per effective CPU, up to `_MAX_CPU_ASR_WORKERS`; beyond
that the CPUs are shared out as threads per worker.

Batches on CPU: the ASR encodes and aligns a batch's chunks one at a time
and decodes them together (services/asr/decoding.py, `StagedWhisper`), and
its allocator keeps freed buffers (common/machine/memory.py). Then the beam search
gets cheaper per chunk as the batch grows (one thread, tiny.en: 0.21 s a
chunk alone, 0.17 in 2, 0.14 in 4, 0.13 in 8), and through the suite a
10-minute job took 5.4 s with batches of 2, 5.0 s with 4 and 4.8 s with 8
(`bench.end_to_end`, two workers). A batch of 8 raised one worker's peak RSS
by 160 MiB with tiny.en and 300 MiB with base (`_CPU_MEMORY_PER_BATCH_CHUNK_BYTES`
errs above that, for bigger models); a worker whose share of the memory is
small gets a smaller batch. Before those two changes batches of 2 were the
fastest: every chunk's encoder buffers were faulted in afresh. Batches are
of 6 at most: the suite must hold a 60-minute file in 1.8 GB, all services
together (`bench.memory`), and with two workers and no solo replica the
ASR's PSS peaked at 910-955 MiB in batches of 8 and at 746 MiB in batches
of 6, for about 2% of a job (between 4 and 8 as measured above).

Memory
------
On CPU each worker is a model replica with its own decoding buffers; each is
budgeted `_CPU_MEMORY_PER_ASR_WORKER_BYTES` of the effective memory (host
memory capped by the cgroup limit), so a small container runs fewer workers
(never fewer than one). On CUDA the host memory hardly matters; the first
GPU's free memory must hold each replica (`_CUDA_MEMORY_PER_ASR_WORKER_BYTES`,
weights and working memory of a model up to large-v3 in float16) and its batch
(`_CUDA_BYTES_PER_BATCH_CHUNK` per chunk).
"""

from __future__ import annotations

from dataclasses import dataclass

from common.machine.hardware import BYTES_PER_GIB, HardwareInfo, format_bytes

DEVICE_CPU = "cpu"
DEVICE_CUDA = "cuda"
_CPU_COMPUTE_TYPE = "int8"
_CUDA_COMPUTE_TYPE = "float16"

# One single-threaded worker per effective CPU up to this many; more CPUs become threads per worker.
_MAX_CPU_ASR_WORKERS = 8
# Chunks per batch on CPU at most (see the module docstring), and the memory each takes beyond the model's.
_MAX_CPU_BATCH_SIZE = 6
_CPU_MEMORY_PER_BATCH_CHUNK_BYTES = 128 * 1024 * 1024
# Effective memory each CPU worker is budgeted: a replica of a model up to medium in int8 (~0.8 GB of weights)
# with its decoding buffers. tiny and base need far less, so this errs towards fewer workers.
_CPU_MEMORY_PER_ASR_WORKER_BYTES = 1 * BYTES_PER_GIB

# Model replicas on the first GPU: two keep it busy while one waits on the CPU side.
_CUDA_WORKERS_PER_GPU = 2
# GPU memory each replica needs besides its batch: large-v3 weights in float16 (~3.1 GB) and working memory.
_CUDA_MEMORY_PER_ASR_WORKER_BYTES = 4 * BYTES_PER_GIB
# GPU memory one chunk of a batch takes (encoder output, beams, key/value cache) for a model up to large-v3.
_CUDA_BYTES_PER_BATCH_CHUNK = BYTES_PER_GIB // 4
_MIN_CUDA_BATCH_SIZE = 4
_MAX_CUDA_BATCH_SIZE = 32

# The gateway admits at least this many jobs at once, so that one job's upload overlaps another's decoding.
_MIN_GATEWAY_CONCURRENT_JOBS = 2
# Jobs at once per ASR worker: a short job spends most of its time outside the ASR (upload, decode, speech
# detection, storing), so many at once keep the workers' batches full (bench.short_clips, 16 clips of 15 s on
# 2 workers: 1.16x a loop in one process with 2 at once, 1.25x with 8, 1.29x with 16).
_GATEWAY_JOBS_PER_ASR_WORKER = 8
# Effective memory each running job is budgeted: an hour of decoded audio in shared memory (230 MB) and the
# stages' copies of what they work on.
_MEMORY_PER_GATEWAY_JOB_BYTES = BYTES_PER_GIB // 2
# VAD and alignment each get half the effective CPUs for concurrent requests, one thread per request.
_CPUS_PER_VAD_REQUEST = 2
_CPUS_PER_ALIGN_REQUEST = 2
_VAD_THREADS = 1
_ALIGN_THREADS = 1


@dataclass(frozen=True)
class Tuning:
    """Default settings for this hardware, each with the reason it was chosen."""

    # "cpu" or "cuda".
    device: str
    # Model replicas decoding in parallel in the ASR service (CTranslate2 num_workers).
    asr_workers: int
    # CTranslate2 cpu_threads per worker (irrelevant on CUDA, set to 1).
    asr_threads_per_worker: int
    # Chunks decoded together by default.
    asr_batch_size: int
    # "int8" on CPU, "float16" on CUDA.
    asr_compute_type: str
    # Jobs the gateway runs at once.
    gateway_max_concurrent_jobs: int
    # Speech detections the VAD service runs at once.
    vad_max_concurrent: int
    # ONNX Runtime intra-op threads per detection.
    vad_threads: int
    # Alignments the align service runs at once.
    align_max_concurrent: int
    # Threads per alignment.
    align_threads: int
    # (setting name, why), one per setting above, in that order.
    reasons: tuple[tuple[str, str], ...]

    def reason(self, setting: str) -> str:
        """Why `setting` has its value; KeyError for a name that is not a setting."""
        for name, why in self.reasons:
            if name == setting:
                return why
        raise KeyError(setting)


def tune(hardware: HardwareInfo) -> Tuning:
    """The default settings for `hardware` (see the module docstring for the rules)."""
    if hardware.cuda_device_count > 0:
        return _tune_cuda(hardware)
    return _tune_cpu(hardware)


def _tune_cpu(hardware: HardwareInfo) -> Tuning:
    cpus = hardware.effective_cpus
    memory_bytes = hardware.effective_memory_bytes
    cpu_workers = min(cpus, _MAX_CPU_ASR_WORKERS)
    memory_workers = max(1, memory_bytes // _CPU_MEMORY_PER_ASR_WORKER_BYTES)
    workers = min(cpu_workers, memory_workers)
    threads = max(1, cpus // workers)
    detected = f"no CUDA device, {cpus} effective CPUs ({_describe_cpus(hardware)})"
    if workers < cpu_workers:
        workers_why = (
            f"{detected} but {format_bytes(memory_bytes)} effective memory: "
            f"{_counted(workers, 'worker')} so that each has {format_bytes(_CPU_MEMORY_PER_ASR_WORKER_BYTES)} "
            f"(CPUs alone would allow {cpu_workers})"
        )
    elif cpus > _MAX_CPU_ASR_WORKERS:
        workers_why = f"{detected}: {_counted(workers, 'worker')}, the most run in parallel on CPU"
    else:
        workers_why = f"{detected}: one single-threaded worker per CPU, {_counted(workers, 'worker')}"
    threads_why = f"{cpus} effective CPUs over {_counted(workers, 'worker')}: {_counted(threads, 'thread')} each" + (
        " (parallel workers beat threads within one)" if threads == 1 else ""
    )
    # What each worker's share of the memory leaves beyond its model, in chunks of a batch.
    spare_bytes = memory_bytes // workers - _CPU_MEMORY_PER_ASR_WORKER_BYTES
    batch_size = max(1, min(_MAX_CPU_BATCH_SIZE, spare_bytes // _CPU_MEMORY_PER_BATCH_CHUNK_BYTES))
    batch_why = (
        f"CPU: {format_bytes(memory_bytes)} effective memory over {_counted(workers, 'worker')}: batches of "
        f"{batch_size} (the beam search is cheaper per chunk in larger ones; "
        f"{format_bytes(_CPU_MEMORY_PER_BATCH_CHUNK_BYTES)} a chunk beyond the model's "
        f"{format_bytes(_CPU_MEMORY_PER_ASR_WORKER_BYTES)}, at most {_MAX_CPU_BATCH_SIZE})"
    )
    return _with_shared_settings(
        hardware,
        device=DEVICE_CPU,
        device_why=f"no CUDA device detected: {DEVICE_CPU}",
        workers=workers,
        workers_why=workers_why,
        threads=threads,
        threads_why=threads_why,
        batch_size=batch_size,
        batch_why=batch_why,
        compute_type=_CPU_COMPUTE_TYPE,
    )


def _tune_cuda(hardware: HardwareInfo) -> Tuning:
    device_why = f"{_counted(hardware.cuda_device_count, 'CUDA device')} detected: {DEVICE_CUDA} (first device only)"
    if not hardware.gpus:
        workers = _CUDA_WORKERS_PER_GPU
        batch_size = _MIN_CUDA_BATCH_SIZE
        workers_why = f"GPU memory unknown (no NVML): {_counted(workers, 'worker')} on the first GPU"
        batch_why = f"GPU memory unknown (no NVML): the smallest batch, {batch_size}"
    else:
        gpu = hardware.gpus[0]
        free_bytes = gpu.memory_free_bytes
        workers = max(1, min(_CUDA_WORKERS_PER_GPU, free_bytes // _CUDA_MEMORY_PER_ASR_WORKER_BYTES))
        batch_budget_bytes = free_bytes - workers * _CUDA_MEMORY_PER_ASR_WORKER_BYTES
        fitting_chunks = max(0, batch_budget_bytes) // (workers * _CUDA_BYTES_PER_BATCH_CHUNK)
        batch_size = max(_MIN_CUDA_BATCH_SIZE, min(_MAX_CUDA_BATCH_SIZE, fitting_chunks))
        detected = f"GPU {gpu.index} ({gpu.name}) has {format_bytes(free_bytes)} free"
        workers_why = (
            f"{detected}: {_counted(workers, 'worker')} "
            f"({format_bytes(_CUDA_MEMORY_PER_ASR_WORKER_BYTES)} each, at most {_CUDA_WORKERS_PER_GPU} per GPU)"
        )
        batch_why = (
            f"{detected}: after {workers} x {format_bytes(_CUDA_MEMORY_PER_ASR_WORKER_BYTES)} for the models, "
            f"room for {fitting_chunks} chunks per worker at {format_bytes(_CUDA_BYTES_PER_BATCH_CHUNK)} each; "
            f"batches of {batch_size} (kept within {_MIN_CUDA_BATCH_SIZE}-{_MAX_CUDA_BATCH_SIZE})"
        )
    return _with_shared_settings(
        hardware,
        device=DEVICE_CUDA,
        device_why=device_why,
        workers=workers,
        workers_why=workers_why,
        threads=1,
        threads_why="CUDA: CPU threads per worker do not matter, 1",
        batch_size=batch_size,
        batch_why=batch_why,
        compute_type=_CUDA_COMPUTE_TYPE,
    )


def _with_shared_settings(
    hardware: HardwareInfo,
    *,
    device: str,
    device_why: str,
    workers: int,
    workers_why: str,
    threads: int,
    threads_why: str,
    batch_size: int,
    batch_why: str,
    compute_type: str,
) -> Tuning:
    """The ASR settings given, completed with the gateway, VAD and align ones."""
    cpus = hardware.effective_cpus
    memory_jobs = hardware.effective_memory_bytes // _MEMORY_PER_GATEWAY_JOB_BYTES
    gateway_jobs = max(_MIN_GATEWAY_CONCURRENT_JOBS, min(_GATEWAY_JOBS_PER_ASR_WORKER * workers, memory_jobs))
    vad_concurrent = max(1, cpus // _CPUS_PER_VAD_REQUEST)
    align_concurrent = max(1, cpus // _CPUS_PER_ALIGN_REQUEST)
    return Tuning(
        device=device,
        asr_workers=workers,
        asr_threads_per_worker=threads,
        asr_batch_size=batch_size,
        asr_compute_type=compute_type,
        gateway_max_concurrent_jobs=gateway_jobs,
        vad_max_concurrent=vad_concurrent,
        vad_threads=_VAD_THREADS,
        align_max_concurrent=align_concurrent,
        align_threads=_ALIGN_THREADS,
        reasons=(
            ("device", device_why),
            ("asr_workers", workers_why),
            ("asr_threads_per_worker", threads_why),
            ("asr_batch_size", batch_why),
            ("asr_compute_type", f"{device}: {compute_type}, the fastest accurate type there"),
            (
                "gateway_max_concurrent_jobs",
                f"{_counted(workers, 'ASR worker')}: {_counted(gateway_jobs, 'job')} at once "
                f"({_GATEWAY_JOBS_PER_ASR_WORKER} per worker, so short jobs keep the batches full; at most one per "
                f"{format_bytes(_MEMORY_PER_GATEWAY_JOB_BYTES)} of the {format_bytes(hardware.effective_memory_bytes)} "
                f"effective memory; at least {_MIN_GATEWAY_CONCURRENT_JOBS})",
            ),
            (
                "vad_max_concurrent",
                f"{cpus} effective CPUs: {_counted(vad_concurrent, 'detection')} at once (half the CPUs, at least 1)",
            ),
            (
                "vad_threads",
                f"{_counted(vad_concurrent, 'concurrent detection')}: {_counted(_VAD_THREADS, 'thread')} each",
            ),
            (
                "align_max_concurrent",
                f"{cpus} effective CPUs: {_counted(align_concurrent, 'alignment')} at once (half the CPUs, at least 1)",
            ),
            (
                "align_threads",
                f"{_counted(align_concurrent, 'concurrent alignment')}: {_counted(_ALIGN_THREADS, 'thread')} each",
            ),
        ),
    )


def _describe_cpus(hardware: HardwareInfo) -> str:
    """The CPUs behind `effective_cpus`, like "16 usable, quota 1.5 cores"."""
    usable = f"{len(hardware.usable_cpus)} usable"
    return usable if hardware.cpu_quota is None else f"{usable}, quota {hardware.cpu_quota:g} cores"


def _counted(count: int, noun: str) -> str:
    """A count with its noun, singular or plural: "1 worker", "2 workers"."""
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"

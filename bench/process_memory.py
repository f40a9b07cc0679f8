"""The memory of the suite's processes, sampled while a job runs.

Two measures of each process, both from /proc:

- RSS (`statm`): its resident pages, shared ones included. Cheap (about
  10 µs a read), so sampled every 50 ms; but a page that several processes
  map counts in each, so the decoded audio, which the audio service and
  every stage service map from /dev/shm, counts once per process that has
  touched it: a sum of RSS is an upper bound.
- PSS (`smaps_rollup`): each resident page divided by the number of
  processes that map it, so a sum over processes counts every page once, the
  shared audio included. `Pss_Shmem` is the part in shared memory (the
  audio segments). The kernel walks the process's page tables for it: 1-10
  ms of CPU a read here (the ASR's is the dearest), and it holds the
  process's memory-map lock meanwhile, so it is sampled less often, at an
  interval measured from its own cost (`PSS_CPU_SHARE`).

A service's children (the audio service's multiprocessing resource tracker)
count with it.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from common.audio.shm import SEGMENT_NAME_PREFIX, SHM_DIR

MIB = 2**20
_PAGE_BYTES = os.sysconf("SC_PAGE_SIZE")
# RSS (statm) is read this often.
RSS_INTERVAL_S = 0.05
# PSS is read at most this share of one core's time, and at least every PSS_MAX_INTERVAL_S.
PSS_CPU_SHARE = 0.05
PSS_MIN_INTERVAL_S = 0.1
PSS_MAX_INTERVAL_S = 0.5
# The target: all services <= 1.8 GB on a 60-minute file, the shared audio counted once.
TARGET_BYTES = 1.8e9


def resident_bytes(pid: int) -> int:
    """A process's resident memory now (/proc/<pid>/statm: cheap to read often); 0 once it is gone."""
    try:
        return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * _PAGE_BYTES
    except (FileNotFoundError, ProcessLookupError, IndexError, ValueError):
        return 0


def peak_resident_bytes(pid: int) -> int:
    """The most resident memory a process has held since it started (VmHWM); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    except (FileNotFoundError, ProcessLookupError):
        pass
    return 0


@dataclass(frozen=True)
class ProportionalMemory:
    """A process's memory from /proc/<pid>/smaps_rollup, in bytes."""

    rss_bytes: int = 0
    pss_bytes: int = 0
    # The part of PSS in shared memory (/dev/shm: the audio segments).
    pss_shmem_bytes: int = 0
    # The part of PSS in anonymous memory (malloc's heap, model weights, buffers).
    pss_anon_bytes: int = 0

    def __add__(self, other: ProportionalMemory) -> ProportionalMemory:
        return ProportionalMemory(
            self.rss_bytes + other.rss_bytes,
            self.pss_bytes + other.pss_bytes,
            self.pss_shmem_bytes + other.pss_shmem_bytes,
            self.pss_anon_bytes + other.pss_anon_bytes,
        )


_ROLLUP_FIELDS = {
    "Rss:": "rss_bytes",
    "Pss:": "pss_bytes",
    "Pss_Shmem:": "pss_shmem_bytes",
    "Pss_Anon:": "pss_anon_bytes",
}


def parse_smaps_rollup(text: str) -> ProportionalMemory:
    """The figures of a smaps_rollup text (its kB lines); absent ones are 0."""
    values: dict[str, int] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) >= 2 and parts[0] in _ROLLUP_FIELDS:
            values[_ROLLUP_FIELDS[parts[0]]] = int(parts[1]) * 1024
    return ProportionalMemory(**values)


def proportional_memory(pid: int) -> ProportionalMemory:
    """A process's PSS and RSS now; zeros once it is gone (or when /proc will not say)."""
    try:
        return parse_smaps_rollup(Path(f"/proc/{pid}/smaps_rollup").read_text())
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return ProportionalMemory()


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants, from /proc/<pid>/task/*/children."""
    found = [pid]
    for parent in found:
        try:
            tasks = list(Path(f"/proc/{parent}/task").iterdir())
        except (FileNotFoundError, ProcessLookupError):
            continue
        for task in tasks:
            try:
                found.extend(int(child) for child in (task / "children").read_text().split())
            except (FileNotFoundError, ProcessLookupError):
                continue
    return found


def mapped_segments(pid: int) -> set[Path]:
    """The suite's audio segments a process maps (/proc/<pid>/maps)."""
    prefix = f"{SHM_DIR}/{SEGMENT_NAME_PREFIX}"
    try:
        lines = Path(f"/proc/{pid}/maps").read_text().splitlines()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return set()
    return {
        Path(fields[5])
        for fields in (line.split() for line in lines)
        if len(fields) > 5 and fields[5].startswith(prefix)
    }


def shared_audio_bytes(segments: set[Path]) -> int:
    """Bytes of these audio segments in shared memory now (0 for one that is gone)."""
    total = 0
    for path in segments:
        try:
            total += path.stat().st_size
        except FileNotFoundError:
            continue
    return total


def other_suites(own: set[int]) -> list[int]:
    """Processes of the suite's services other than `own` (another suite on
    this machine): the library pages they share with ours are divided with
    them in PSS, which then reads a little low."""
    others = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) in own:
            continue
        try:
            command = (entry / "cmdline").read_bytes().split(b"\0")
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if any(part.startswith((b"services.", b"gateway")) for part in command[1:3]):
            others.append(int(entry.name))
    return others


@dataclass
class MemoryPeaks:
    """What a `MemorySampler` saw; bytes."""

    # The audio segments the suite's processes map, in /dev/shm, at their largest.
    shm_bytes: int = 0
    # The sum over processes of RSS (statm) at its highest: shared pages counted in every process that maps them.
    rss_sum_bytes: int = 0
    # The sum over processes of PSS at its highest: every page counted once, the shared audio included.
    pss_sum_bytes: int = 0
    # The sum of their PSS outside shared memory and of the audio segments whole, at its highest: the
    # audio counted once, also the pages of it no process has touched (PSS leaves those out).
    audio_once_sum_bytes: int = 0
    # Each process's PSS at the moment the sum peaked.
    pss_at_peak: dict[str, ProportionalMemory] = field(default_factory=dict)
    # Each process's own highest PSS and RSS (sampled), reached at different times.
    pss_bytes: dict[str, int] = field(default_factory=dict)
    rss_bytes: dict[str, int] = field(default_factory=dict)
    # (seconds since the start, each process's PSS) at every PSS sample.
    timeline: list[tuple[float, dict[str, ProportionalMemory]]] = field(default_factory=list)
    # PSS rounds taken, their mean CPU cost (all processes read once) and mean interval.
    pss_rounds: int = 0
    pss_round_cpu_s: float = 0.0
    pss_interval_s: float = 0.0

    @property
    def judged_bytes(self) -> int:
        """What meets the memory target or not: all processes at once with the
        audio counted once, the larger of the two measures."""
        return max(self.pss_sum_bytes, self.audio_once_sum_bytes)


class MemorySampler(threading.Thread):
    """Samples, while it runs, the audio segments the processes map and each
    process's RSS every `RSS_INTERVAL_S` and PSS at an interval that keeps the reads
    under `PSS_CPU_SHARE` of one core (at least `PSS_MIN_INTERVAL_S`, at most
    `PSS_MAX_INTERVAL_S`). `processes`: name -> pid; each counts with its
    children."""

    def __init__(self, processes: Mapping[str, int], *, keep_timeline: bool = False) -> None:
        super().__init__(daemon=True)
        self.peaks = MemoryPeaks()
        self._processes = dict(processes)
        self._keep_timeline = keep_timeline
        self._halt = threading.Event()
        self._trees = {name: [pid] for name, pid in self._processes.items()}
        # The audio segments any of the processes maps (read with PSS).
        self._segments: set[Path] = set()

    def run(self) -> None:
        started = time.monotonic()
        next_pss = started
        pss_cpu_s = 0.0
        while not self._halt.is_set():
            now = time.monotonic()
            if now >= next_pss:
                cpu_before = time.thread_time()
                self._sample_pss(now - started)
                cost_s = time.thread_time() - cpu_before
                pss_cpu_s += cost_s
                interval_s = min(max(cost_s / PSS_CPU_SHARE, PSS_MIN_INTERVAL_S), PSS_MAX_INTERVAL_S)
                next_pss = now + interval_s
            self._sample_rss()
            self._halt.wait(RSS_INTERVAL_S)
        rounds = self.peaks.pss_rounds
        if rounds:
            self.peaks.pss_round_cpu_s = pss_cpu_s / rounds
            self.peaks.pss_interval_s = (time.monotonic() - started) / rounds

    def _sample_rss(self) -> None:
        peaks = self.peaks
        peaks.shm_bytes = max(peaks.shm_bytes, shared_audio_bytes(self._segments))
        total = 0
        for name, tree in self._trees.items():
            rss = sum(resident_bytes(pid) for pid in tree)
            peaks.rss_bytes[name] = max(peaks.rss_bytes.get(name, 0), rss)
            total += rss
        peaks.rss_sum_bytes = max(peaks.rss_sum_bytes, total)

    def _sample_pss(self, elapsed_s: float) -> None:
        peaks = self.peaks
        figures: dict[str, ProportionalMemory] = {}
        for name, pid in self._processes.items():
            self._trees[name] = tree = process_tree(pid)
            self._segments.update(*(mapped_segments(member) for member in tree))
            figures[name] = sum((proportional_memory(member) for member in tree), ProportionalMemory())
            peaks.pss_bytes[name] = max(peaks.pss_bytes.get(name, 0), figures[name].pss_bytes)
        total = sum(memory.pss_bytes for memory in figures.values())
        beside_audio = total - sum(memory.pss_shmem_bytes for memory in figures.values())
        peaks.audio_once_sum_bytes = max(peaks.audio_once_sum_bytes, beside_audio + shared_audio_bytes(self._segments))
        if total > peaks.pss_sum_bytes:
            peaks.pss_sum_bytes = total
            peaks.pss_at_peak = figures
        if self._keep_timeline:
            peaks.timeline.append((elapsed_s, figures))
        peaks.pss_rounds += 1

    def stop(self) -> MemoryPeaks:
        """Stops sampling and returns what was seen."""
        self._halt.set()
        self.join()
        return self.peaks

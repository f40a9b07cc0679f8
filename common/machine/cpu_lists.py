"""Linux cpulist notation, as `taskset -c` and /sys take it: "0-3,6" to CPU
numbers and back."""

from __future__ import annotations

from collections.abc import Sequence

# Linux supports at most 8192 CPUs (CONFIG_NR_CPUS); larger numbers are typos.
_MAX_CPU_INDEX = 8191


def parse_cpu_list(text: str) -> tuple[int, ...]:
    """The CPUs of a cpulist, sorted and without repeats: "0-3,6" -> (0, 1, 2, 3, 6).

    Raises ValueError, naming the text, for anything else: an empty list or
    item, a negative or reversed range, a CPU number above 8191."""
    if not text.strip():
        raise ValueError(f"CPU list {text!r} is empty; write CPUs like '0-3,6'")
    cpus: set[int] = set()
    for item in text.split(","):
        first_text, dash, last_text = item.strip().partition("-")
        try:
            first = int(first_text)
            last = int(last_text) if dash else first
        except ValueError:
            raise ValueError(f"CPU list {text!r}: {item.strip()!r} is not a CPU number or range like '0-3'") from None
        if first < 0 or last < first or last > _MAX_CPU_INDEX:
            raise ValueError(
                f"CPU list {text!r}: {item.strip()!r} must be a range low-high of CPUs between 0 and {_MAX_CPU_INDEX}"
            )
        cpus.update(range(first, last + 1))
    return tuple(sorted(cpus))


def format_cpu_list(cpus: Sequence[int]) -> str:
    """A cpulist for people and `taskset`: (0, 1, 2, 3, 6) -> "0-3,6"; "" for no CPUs."""
    ranges: list[str] = []
    ordered = sorted(set(cpus))
    start = 0
    for position, cpu in enumerate(ordered):
        is_last_of_run = position + 1 == len(ordered) or ordered[position + 1] != cpu + 1
        if is_last_of_run:
            first = ordered[start]
            ranges.append(str(first) if first == cpu else f"{first}-{cpu}")
            start = position + 1
    return ",".join(ranges)

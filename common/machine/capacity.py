"""Measured capacity: what a service's workers get through per second,
timed at start and kept up to date as it works.

A fixed number (16 live streams, 8 jobs per worker) holds only on the
machine it was tuned on: an ordinary AVX2 core decodes several times slower
than an AVX-512 VNNI one, and a stream admitted beyond what the machine can
hold makes every stream late. So each engine service times a calibrated
piece of work at start (its warm-up) and then every piece of real work, and
reports the rate in its status (`MeasuredCapacity`); the gateway sizes its
admissions from it.

`WorkRate` is the one estimator: seconds of a worker's time per unit of work
(per second of audio, per live decode), an average in which each
observation's weight halves every `half_life_s` of the clock, so the figure
follows the machine (another tenant, thermal limits, a different model) and
the warm-up's prior fades once real work has been seen. No heavy imports:
the gateway and every service use it.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

# How fast old observations fade: a minute of the clock halves their weight.
DEFAULT_HALF_LIFE_S = 60.0

_Result = TypeVar("_Result")


@dataclass(frozen=True)
class RateFigures:
    """A `WorkRate` at one moment."""

    # Seconds of one worker's time per unit of work.
    seconds_per_unit: float
    # Units observed since start, the warm-up's included (not decayed).
    units_observed: float
    # Whether any real work (not only the warm-up) has been observed.
    from_work: bool


class WorkRate:
    """Seconds of a worker's time per unit of work, a time-decayed average.

    `observe(units, busy_s)` records that `units` of work (seconds of audio,
    decodes) took `busy_s` seconds of one worker. Thread-safe: workers report
    from their own threads."""

    def __init__(
        self,
        *,
        half_life_s: float = DEFAULT_HALF_LIFE_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if half_life_s <= 0:
            raise ValueError("half_life_s must be positive")
        self._half_life_s = half_life_s
        self._clock = clock
        self._lock = threading.Lock()
        self._units = 0.0
        self._busy_s = 0.0
        self._at = clock()
        self._observed_units = 0.0
        self._from_work = False

    def prime(self, units: float, busy_s: float) -> None:
        """Records the warm-up's calibrated work (an observation that does
        not count as real work)."""
        self._add(units, busy_s, from_work=False)

    def observe(self, units: float, busy_s: float) -> None:
        """Records real work: `units` that took `busy_s` of one worker (0
        units: more time for work already counted)."""
        self._add(units, busy_s, from_work=True)

    @property
    def known(self) -> bool:
        """Whether anything has been observed (or primed)."""
        with self._lock:
            return self._units > 0.0

    @property
    def figures(self) -> RateFigures:
        with self._lock:
            self._decay()
            per_unit = self._busy_s / self._units if self._units > 0.0 else math.nan
            return RateFigures(per_unit, self._observed_units, self._from_work)

    @property
    def seconds_per_unit(self) -> float:
        """The average; NaN before any observation."""
        return self.figures.seconds_per_unit

    def units_per_second(self, workers: int) -> float:
        """Units `workers` such workers get through per second together (0 before any observation)."""
        per_unit = self.seconds_per_unit
        if not math.isfinite(per_unit) or per_unit <= 0.0:
            return 0.0
        return max(1, workers) / per_unit

    def _add(self, units: float, busy_s: float, *, from_work: bool) -> None:
        # (No units with some time: work whose result is counted elsewhere, such as a chunk's words.)
        if not (math.isfinite(units) and math.isfinite(busy_s)) or units < 0.0 or busy_s < 0.0:
            return
        with self._lock:
            self._decay()
            self._units += units
            self._busy_s += busy_s
            self._observed_units += units
            self._from_work = self._from_work or from_work

    def _decay(self) -> None:
        now = self._clock()
        elapsed_s = max(0.0, now - self._at)
        self._at = now
        if elapsed_s and self._units:
            factor = 0.5 ** (elapsed_s / self._half_life_s)
            # Both sides fade alike: the ratio keeps, recent work weighs more.
            self._units *= factor
            self._busy_s *= factor


def timed(rate: WorkRate, units: float, call: Callable[[], _Result]) -> Callable[[], _Result]:
    """`call`, made to record in `rate` that it did `units` of work in the
    time it took, timed in the thread that runs it (a worker's time, not the
    wait for one). A call that raises records nothing: its work was not done."""

    def run() -> _Result:
        started = time.perf_counter()
        result = call()
        rate.observe(units, time.perf_counter() - started)
        return result

    return run


def slowest_on_every_worker(work: Callable[[], float], workers: int) -> float:
    """Runs `work` (a calibrated piece of work that returns the seconds it
    took) on `workers` threads at once, as the service's slots run, and
    returns the slowest's seconds: what one slot gets through while every
    other is busy too. Raises if any of them fails."""
    times: list[float] = []
    errors: list[BaseException] = []

    def one() -> None:
        try:
            times.append(work())
        except BaseException as error:  # noqa: BLE001 - passed on to the caller below
            errors.append(error)

    threads = [threading.Thread(target=one, name=f"calibration-{number}") for number in range(max(1, workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    return max(times)


async def calibrate(rate: WorkRate, work: Callable[[], float], units: float, workers: int) -> float:
    """A service's warm-up: `slowest_on_every_worker(work, workers)` off the
    event loop, then `rate` primed with `units` done in the slowest's
    seconds, which it returns (for the service's log line)."""
    busy_s = await asyncio.get_running_loop().run_in_executor(None, slowest_on_every_worker, work, workers)
    rate.prime(units, busy_s)
    return busy_s


def describe_source(figures: RateFigures) -> str:
    """Where a rate comes from, for the status: "warm-up" or "warm-up and work"."""
    if figures.units_observed <= 0:
        return "not measured yet"
    return "warm-up and work" if figures.from_work else "warm-up"


@dataclass(frozen=True)
class LiveLoadModel:
    """What one live stream asks of the ASR workers, and how busy they may be
    kept while the latency targets hold.

    `decodes_per_stream_s`: decodes a stream needs per second of its audio
    when it sheds everything optional (interim steps only on spare workers,
    long steps; gateway.live.stream), measured on continuous speech.
    `utilization`: the share of the workers' time live decodes may take: a
    final waits for the decodes ahead of it, and near full use the wait
    grows without bound."""

    decodes_per_stream_s: float
    utilization: float

    def streams(self, workers: int, decode_s: float) -> int:
        """Streams `workers` hold when a decode takes `decode_s` (0 if unknown)."""
        if not math.isfinite(decode_s) or decode_s <= 0.0:
            return 0
        return max(0, math.floor(max(1, workers) * self.utilization / (decode_s * self.decodes_per_stream_s)))

"""Shared batches: the chunks of every Transcribe request a replica holds
are decoded together when their options match.

A request used to own a model worker for all its chunks, so sixteen short
clips sent at once were sixteen batches of one. Here each admitted request
puts its chunks in one pool, and each of the replica's model workers takes
the next batch from it: the oldest request's next chunks, then, while the
batch has room, the chunks of later requests with the same model and
decoding options (`PreparedTranscription.batch_key`). On a GPU a batch of
sixteen costs little more than a batch of one; on a CPU it costs about the
same per chunk, so nothing is lost there.

A request's chunks may be decoded by several workers at once; its results
still come back in its own order.

On a CPU a chunk's words are timed in a step of their own after its batch
(`PendingWords`, about a tenth of the chunk's work), which any worker takes
next. For a request that is part of a longer job (`throughput`: the
gateway's file jobs) that step waits while fewer chunks than a full batch
wait to be decoded (the job's last), up to `WORDS_WAITING_PER_WORKER` chunks
a worker: a job's last batch is then decoded while the other workers time
the words of the batches before it, instead of one worker decoding it alone
at the end while the others idle (bench.end_to_end: 4.39 s to 4.19 s, two
workers). While full batches wait the words come first, so the job's
segments still stream as it goes.

A request that holds its job's last chunks (`last_of_job`), taken while
nothing else waits and the other workers are at most a chunk from the end
of their batches, is decoded by the model's solo replica
(`LoadedModel.solo`: one replica with the threads of all the workers) where
it has one: two threads decode a chunk 1.6x as fast as one, and the other
workers would idle until the job ends (a 10-minute job without alignment:
median of six 3.96 s without it, 3.90 s with it).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import logging
import time
from collections.abc import AsyncIterator
from concurrent.futures import Executor
from dataclasses import dataclass, field
from typing import Any

from common.errors import UnavailableError
from common.machine.capacity import WorkRate
from services.asr.chunks import PreparedTranscription
from services.asr.engine import Calibration, ChunkTranscript, PendingWords, Transcriber

logger = logging.getLogger(__name__)

# Chunks whose words wait to be timed while chunks wait to be decoded, per
# model worker, at most (a CPU batch; each holds its audio and encoder output,
# about 4 MB for tiny.en, 10 MB for large-v3).
WORDS_WAITING_PER_WORKER = 8


@dataclass(eq=False)
class _Work:
    """One request in the pool."""

    prepared: PreparedTranscription
    # Its words may wait while chunks are decoded (see the module docstring).
    throughput: bool = False
    # It holds its job's last chunks (see the module docstring).
    last_of_job: bool = False
    # Position of its next chunk not yet in a batch.
    next_position: int = 0
    # (position, transcript) or (-1, error), as batches finish.
    done: asyncio.Queue[tuple[int, ChunkTranscript | BaseException]] = field(default_factory=asyncio.Queue)
    # Batches that hold some of its chunks and have not finished.
    in_flight: set[asyncio.Future[Any]] = field(default_factory=set)
    closed: bool = False

    @property
    def waiting(self) -> int:
        return len(self.prepared.chunks) - self.next_position


@dataclass(frozen=True)
class WorkRates:
    """What the workers' time goes to, measured (common.machine.capacity): seconds of
    one worker per second of a file job's audio (its batches and its words),
    and per live decode (a chunk of a request that is not part of a job)."""

    file: WorkRate = field(default_factory=WorkRate)
    live: WorkRate = field(default_factory=WorkRate)

    def prime(self, calibration: Calibration) -> None:
        """Starts both from the warm-up's calibrated decodes."""
        self.file.prime(1.0, calibration.file_seconds_per_audio_second)
        self.live.prime(1.0, calibration.live_decode_s)

    def observe_batch(self, batch: list[tuple[_Work, int]], busy_s: float) -> None:
        """A decoded batch: its time shared out by chunk over file and live work."""
        share_s = busy_s / len(batch)
        file_audio_s = sum(
            work.prepared.chunks[position].decoded_range.duration_s for work, position in batch if work.throughput
        )
        live_chunks = sum(1 for work, _ in batch if not work.throughput)
        if live_chunks:
            self.live.observe(live_chunks, share_s * live_chunks)
        if live_chunks < len(batch):
            self.file.observe(file_audio_s, share_s * (len(batch) - live_chunks))

    def observe_words(self, work: _Work, busy_s: float) -> None:
        """A chunk's words timed: time of its kind of work, no more of it done."""
        (self.file if work.throughput else self.live).observe(0.0, busy_s)


@dataclass(frozen=True)
class BatchFigures:
    """What the pool has done, for status and tests."""

    # Batches decoded.
    batches: int
    # Of those, batches that held chunks of more than one request.
    shared_batches: int
    # Chunks decoded.
    chunks: int


class BatchPool:
    """Decodes the chunks of the requests it holds with `workers` model
    workers running at once. Used from one event loop."""

    def __init__(
        self,
        transcriber: Transcriber,
        executor: Executor,
        *,
        workers: int,
        preferred_batch_size: int = 0,
        rates: WorkRates | None = None,
    ) -> None:
        """`preferred_batch_size`: the most chunks a batch takes whatever the
        requests ask (the size tuned to the machine; 0: the requests' own). A
        request's batch size bounds the batches it is in, as it always did;
        batches of other requests' chunks never grow past this. `rates`: where
        the workers' time is recorded (common.machine.capacity)."""
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self.rates = rates or WorkRates()
        self._preferred_batch_size = preferred_batch_size
        self._transcriber = transcriber
        self._executor = executor
        self._workers = workers
        self._pending: list[_Work] = []
        # Chunks decoded whose words wait to be timed, oldest first.
        self._words: collections.deque[tuple[_Work, int, PendingWords]] = collections.deque()
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._batches = 0
        self._shared_batches = 0
        self._chunks = 0
        # The batches being decoded (one a busy worker): (when started, chunks), by batch.
        self._running: dict[int, tuple[float, int]] = {}
        # Seconds a chunk takes in a batch, averaged over recent batches; None before the first.
        self._seconds_per_chunk: float | None = None
        # A batch is being decoded by the solo replica (it has one worker).
        self._solo_busy = False

    @property
    def figures(self) -> BatchFigures:
        return BatchFigures(self._batches, self._shared_batches, self._chunks)

    @property
    def waiting_chunks(self) -> int:
        """Chunks in the pool that no batch holds yet."""
        return self._waiting()

    def _waiting(self, *, throughput_only: bool = False) -> int:
        """Chunks no batch holds yet, of every request or of longer jobs' only."""
        return sum(
            work.waiting for work in self._pending if not work.closed and (work.throughput or not throughput_only)
        )

    async def transcribe(
        self, prepared: PreparedTranscription, *, throughput: bool = False, last_of_job: bool = False
    ) -> AsyncIterator[ChunkTranscript]:
        """The transcripts of `prepared`'s chunks, in order, as their batches
        finish. Its language must be known (`Transcriber.detect`).
        `throughput`: the request is part of a longer job, and its words may
        be timed after later chunks are decoded; `last_of_job`: nothing of
        its job follows, so when nothing else waits its batch may be decoded
        by the solo replica (see the module docstring)."""
        if prepared.language is None:
            raise ValueError("detect the language before pooling a request")
        if not prepared.chunks:
            return
        self._start()
        work = _Work(prepared, throughput, last_of_job)
        self._pending.append(work)
        self._wake.set()
        ready: dict[int, ChunkTranscript] = {}
        try:
            for position in range(len(prepared.chunks)):
                while position not in ready:
                    finished, result = await work.done.get()
                    if isinstance(result, BaseException):
                        raise result
                    ready[finished] = result
                yield ready.pop(position)
        finally:
            work.closed = True
            with contextlib.suppress(ValueError):
                self._pending.remove(work)
            await _outlast(work.in_flight)

    async def close(self) -> None:
        """Stops the workers (the service is stopping)."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        self._tasks.clear()

    def _start(self) -> None:
        if not self._tasks:
            self._tasks = [
                asyncio.create_task(self._worker(), name=f"asr-batch-worker-{number}")
                for number in range(self._workers)
            ]

    def _take_batch(self) -> list[tuple[_Work, int]]:
        """The next batch: the oldest request's next chunks, then those of
        later requests that share its options, up to its batch size, and no
        more than this worker's share of what waits (`_share`)."""
        self._pending = [work for work in self._pending if work.waiting and not work.closed]
        if not self._pending:
            return []
        head = self._pending[0]
        key = head.prepared.batch_key
        same = sum(work.waiting for work in self._pending if work is head or work.prepared.batch_key == key)
        size = min(self._full_batch_size(), self._share(same))
        batch: list[tuple[_Work, int]] = []
        for work in self._pending:
            if work is not head and work.prepared.batch_key != key:
                continue
            while work.waiting and len(batch) < size:
                batch.append((work, work.next_position))
                work.next_position += 1
            if len(batch) == size:
                break
        self._pending = [work for work in self._pending if work.waiting]
        return batch

    def _take_words(self) -> tuple[_Work, int, PendingWords] | None:
        """The next chunk whose words to time, if it is their turn: the
        oldest of a request that wants its results soonest, else the oldest
        unless the chunks of longer jobs waiting to be decoded are their last
        few (fewer than a full batch) and not too many words wait. (Chunks of
        live requests waiting do not hold the words back: they could keep a
        job's words, and so its next calls, waiting as long as they come.)"""
        self._words = collections.deque(entry for entry in self._words if not entry[0].closed)
        if not self._words:
            return None
        for entry in self._words:
            if not entry[0].throughput:
                self._words.remove(entry)
                return entry
        waiting = self._waiting(throughput_only=True)
        if 0 < waiting < self._full_batch_size() and len(self._words) < WORDS_WAITING_PER_WORKER * self._workers:
            return None
        return self._words.popleft()

    def _full_batch_size(self) -> int:
        """The most chunks the next batch may take (its oldest request's batch size, or the machine's)."""
        head = next((work for work in self._pending if work.waiting and not work.closed), None)
        size = head.prepared.options.batch_size if head is not None else 1
        return min(size, self._preferred_batch_size) if self._preferred_batch_size else size

    def _share(self, waiting: int) -> int:
        """Chunks of the `waiting` ones a worker takes now, so that the
        workers end together: an even share among the idle workers (on a
        CPU, one worker decoding eight chunks while another idles takes
        twice as long as both decoding four), less when the busy workers are
        about to finish (what they have left counts, in chunks at the recent
        rate: with four chunks waiting and the other worker a chunk from its
        end, this one takes two, not four, and the other the last two)."""
        idle = max(1, self._workers - len(self._running))
        even = -(-waiting // idle)
        if self._seconds_per_chunk is None or not self._running:
            return even
        share = round((waiting + self._busy_chunks_left()) / (idle + len(self._running)))
        return max(1, min(even, share))

    def _busy_chunks_left(self) -> float:
        """What the batches being decoded have left, in chunks at the recent
        rate (each of them all its chunks before a rate is known)."""
        if self._seconds_per_chunk is None:
            return float(sum(chunks for _, chunks in self._running.values()))
        now = time.monotonic()
        return sum(
            max(0.0, chunks - (now - started) / self._seconds_per_chunk) for started, chunks in self._running.values()
        )

    async def _worker(self) -> None:
        while True:
            words = self._take_words()
            if words is not None:
                await self._time_words(*words)
                continue
            batch = self._take_batch()
            if not batch:
                self._wake.clear()
                await self._wake.wait()
                continue
            await self._decode(batch)

    async def _time_words(self, work: _Work, position: int, pending: PendingWords) -> None:
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, pending.time_words)
        work.in_flight.add(future)
        started = time.monotonic()
        try:
            transcript = await _outlast({future})
        except BaseException as error:
            work.done.put_nowait((-1, _failure(error)))
            if not isinstance(error, Exception) and not future.cancelled():
                raise
        else:
            self.rates.observe_words(work, time.monotonic() - started)
            if not work.closed:
                work.done.put_nowait((position, transcript))
        finally:
            work.in_flight.discard(future)

    async def _decode(self, batch: list[tuple[_Work, int]]) -> None:
        loop = asyncio.get_running_loop()
        works = list(dict.fromkeys(work for work, _ in batch))
        # A job's last chunks, and nothing else to decode or time: the model's
        # solo replica (more threads) takes them, as the other workers would idle.
        solo = (
            self._workers > 1
            and not self._solo_busy
            and any(work.last_of_job for work in works)
            and not self.waiting_chunks
            and not self._words
            and self._busy_chunks_left() <= 1.0
        )
        future = loop.run_in_executor(
            self._executor,
            functools.partial(
                self._transcriber.decode_text, [(work.prepared, position) for work, position in batch], solo=solo
            ),
        )
        for work in works:
            work.in_flight.add(future)
        self._solo_busy = self._solo_busy or solo
        started = time.monotonic()
        self._running[id(future)] = (started, len(batch))
        try:
            decoded = await _outlast({future})
        except BaseException as error:
            # Each request raises it; a batch the executor dropped, or one
            # this worker was stopped in, means the service is stopping.
            failure = _failure(error)
            for work in works:
                work.done.put_nowait((-1, failure))
            if not isinstance(error, Exception) and not future.cancelled():
                raise
        else:
            if not solo:  # (the solo replica has every worker's threads: not one worker's time)
                self.rates.observe_batch(batch, time.monotonic() - started)
            per_chunk = max(1e-6, (time.monotonic() - started) / len(batch))
            self._seconds_per_chunk = (
                per_chunk if self._seconds_per_chunk is None else 0.7 * self._seconds_per_chunk + 0.3 * per_chunk
            )
            self._batches += 1
            self._shared_batches += len(works) > 1
            self._chunks += len(batch)
            if len(works) > 1:
                logger.info("decoded %d chunks of %d requests in one batch", len(batch), len(works))
            for (work, position), result in zip(batch, decoded, strict=True):
                if work.closed:
                    continue
                if isinstance(result, ChunkTranscript):
                    work.done.put_nowait((position, result))
                else:
                    self._words.append((work, position, result))
                    self._wake.set()
        finally:
            if solo:
                self._solo_busy = False
            del self._running[id(future)]
            for work in works:
                work.in_flight.discard(future)


def _failure(error: BaseException) -> Exception:
    """What a request whose batch or words ended in `error` raises."""
    return error if isinstance(error, Exception) else UnavailableError("the ASR service is stopping")


async def _outlast(futures: set[asyncio.Future[Any]]) -> Any:
    """Waits for `futures` (threads that read a request's audio) even when
    cancelled meanwhile, then re-raises the cancellation; with one future,
    returns its result."""
    pending = set(futures)
    cancelled = False
    while pending:
        try:
            await asyncio.wait(pending)
        except asyncio.CancelledError:
            cancelled = True
        pending = {future for future in pending if not future.done()}
    if cancelled:
        raise asyncio.CancelledError
    if len(futures) == 1:
        return next(iter(futures)).result()
    return []

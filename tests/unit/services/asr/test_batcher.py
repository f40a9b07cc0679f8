"""The ASR's shared batches (services/asr/batcher.py) with a recording
stand-in for the engine's decode: which chunks go together, in what order
results come back, and what a request that ends early leaves running."""

from __future__ import annotations

import asyncio
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any, cast

import pytest

from common.transcript import TimeRange
from services.asr.batcher import WORDS_WAITING_PER_WORKER, BatchPool
from services.asr.chunks import PreparedTranscription
from services.asr.engine import ChunkTranscript, Transcriber


@dataclass(frozen=True)
class _Request:
    """What the pool reads of a prepared request."""

    name: str
    chunk_count: int
    key: str = "tiny.en/en/beam 5"
    batch_size: int = 4
    language: str | None = "en"
    # Its chunks come back from a batch with their words still to time (a CPU with word timestamps).
    words: bool = False

    @property
    def chunks(self) -> tuple[Any, ...]:
        # Each a second of audio (what the pool's work rates count).
        return tuple(SimpleNamespace(decoded_range=TimeRange(index, index + 1.0)) for index in range(self.chunk_count))

    @property
    def batch_key(self) -> str:
        return self.key

    @property
    def options(self) -> Any:
        return SimpleNamespace(batch_size=self.batch_size)


@dataclass
class _Decoder:
    """Records each batch as [(request, position)]; `delay_s` per batch."""

    delay_s: float = 0.0
    delay_per_chunk_s: float = 0.0
    fail_on: str = ""
    batches: list[list[tuple[str, int]]] = field(default_factory=list)
    threads: set[int] = field(default_factory=set)
    busy: int = 0
    started: threading.Event = field(default_factory=threading.Event)
    # ("batch", [(request, position)]) and ("words", (request, position)), in the order they ran.
    steps: list[tuple[str, Any]] = field(default_factory=list)
    # Words still to time when each batch started.
    words_waiting_at_batches: list[int] = field(default_factory=list)
    words_waiting: int = 0
    # Whether each batch went to the solo replica.
    solo_batches: list[bool] = field(default_factory=list)

    def decode_text(self, items: list[tuple[Any, int]], *, solo: bool = False) -> list[Any]:
        self.words_waiting_at_batches.append(self.words_waiting)
        self.solo_batches.append(solo)
        self.steps.append(("batch", [(request.name, position) for request, position in items]))
        self.batches.append([(request.name, position) for request, position in items])
        self.threads.add(threading.get_ident())
        self.busy += 1
        self.started.set()
        try:
            time.sleep(self.delay_s + self.delay_per_chunk_s * len(items))
            if any(request.name == self.fail_on for request, _ in items):
                raise RuntimeError("the model failed")
            done = [
                ChunkTranscript(position, TimeRange(position, position + 1), (), "en", 1.0, request.name)
                for request, position in items
            ]
            pending = [_Pending(self, transcript) for transcript in done]
            self.words_waiting += sum(request.words for request, _ in items)
            return [
                waiting if request.words else transcript
                for (request, _), transcript, waiting in zip(items, done, pending, strict=True)
            ]
        finally:
            self.busy -= 1


@dataclass
class _Pending:
    """A chunk whose words are still to time (`PendingWords`)."""

    decoder: _Decoder
    transcript: ChunkTranscript

    def time_words(self) -> ChunkTranscript:
        self.decoder.words_waiting -= 1
        self.decoder.steps.append(("words", (self.transcript.model, self.transcript.chunk_index)))
        return self.transcript


def _pool(decoder: _Decoder, workers: int) -> tuple[BatchPool, ThreadPoolExecutor]:
    executor = ThreadPoolExecutor(max_workers=workers)
    return BatchPool(cast(Transcriber, decoder), executor, workers=workers), executor


async def _collect(pool: BatchPool, request: _Request) -> list[tuple[str, int]]:
    return [(t.model, t.chunk_index) async for t in pool.transcribe(cast(PreparedTranscription, request))]


def test_short_requests_that_wait_together_share_a_batch() -> None:
    async def main() -> None:
        decoder = _Decoder()
        pool, executor = _pool(decoder, workers=1)
        requests = [_Request(f"clip-{number}", 1) for number in range(6)]
        results = await asyncio.gather(*(_collect(pool, request) for request in requests))
        assert results == [[(request.name, 0)] for request in requests]
        # Six one-chunk requests, batches of four: two batches, not six.
        assert [len(batch) for batch in decoder.batches] == [4, 2]
        assert pool.figures.shared_batches == 2 and pool.figures.chunks == 6
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_requests_with_other_options_are_never_mixed() -> None:
    async def main() -> None:
        decoder = _Decoder()
        pool, executor = _pool(decoder, workers=1)
        english = [_Request(f"en-{number}", 1) for number in range(2)]
        french = [_Request(f"fr-{number}", 1, key="tiny/fr/beam 5") for number in range(2)]
        await asyncio.gather(*(_collect(pool, request) for request in (english[0], french[0], english[1], french[1])))
        assert sorted(sorted(batch) for batch in decoder.batches) == [
            [("en-0", 0), ("en-1", 0)],
            [("fr-0", 0), ("fr-1", 0)],
        ]
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_one_request_is_spread_over_the_workers_and_comes_back_in_order() -> None:
    async def main() -> None:
        decoder = _Decoder(delay_s=0.05)
        pool, executor = _pool(decoder, workers=2)
        long = _Request("long", 8, batch_size=2)
        assert await _collect(pool, long) == [("long", position) for position in range(8)]
        assert len(decoder.batches) == 4 and len(decoder.threads) == 2
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_a_request_that_ends_early_waits_for_its_batch_and_leaves_the_rest() -> None:
    async def main() -> None:
        decoder = _Decoder(delay_s=0.2)
        pool, executor = _pool(decoder, workers=1)
        long = _Request("long", 8, batch_size=2)
        consumer = asyncio.create_task(_collect(pool, long))
        await asyncio.to_thread(decoder.started.wait, 5)
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        # The request's audio may go: no thread reads it any more.
        assert decoder.busy == 0
        await asyncio.sleep(0.3)
        assert len(decoder.batches) == 1 and pool.waiting_chunks == 0
        # The pool goes on serving others.
        assert await _collect(pool, _Request("next", 1)) == [("next", 0)]
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_a_failed_batch_fails_each_of_its_requests_only() -> None:
    async def main() -> None:
        decoder = _Decoder(fail_on="bad")
        pool, executor = _pool(decoder, workers=1)
        bad, good, other = _Request("bad", 1), _Request("good", 1), _Request("other", 1, key="base/fr")
        results = await asyncio.gather(
            _collect(pool, bad), _collect(pool, good), _collect(pool, other), return_exceptions=True
        )
        assert isinstance(results[0], RuntimeError) and isinstance(results[1], RuntimeError)
        assert results[2] == [("other", 0)]
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_what_waits_is_spread_over_idle_workers_before_batches_fill() -> None:
    async def main() -> None:
        decoder = _Decoder(delay_s=0.05)
        pool, executor = _pool(decoder, workers=2)
        await asyncio.gather(*(_collect(pool, _Request(f"clip-{number}", 1)) for number in range(4)))
        # Two workers, four waiting: two each at once, not four on one worker while the other idles.
        assert sorted(len(batch) for batch in decoder.batches) == [2, 2] and len(decoder.threads) == 2
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_batches_never_grow_past_the_size_tuned_to_the_machine() -> None:
    async def main() -> None:
        decoder = _Decoder()
        executor = ThreadPoolExecutor(max_workers=1)
        pool = BatchPool(cast(Transcriber, decoder), executor, workers=1, preferred_batch_size=4)
        # Two requests of four chunks that ask for batches of eight: still batches of four.
        await asyncio.gather(*(_collect(pool, _Request(f"r{n}", 4, batch_size=8)) for n in range(2)))
        assert [len(batch) for batch in decoder.batches] == [4, 4]
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_words_of_a_long_job_wait_for_its_last_batch() -> None:
    """A request that is part of a longer job: while full batches wait, its
    chunks' words are timed as they come (its segments stream as it goes);
    its last, partial batch is decoded before the words still waiting, so
    another worker can time them meanwhile. Results come back in order."""

    async def main() -> None:
        decoder = _Decoder()
        pool, executor = _pool(decoder, workers=1)
        job = _Request("job", 10, words=True)
        assert await _collect_throughput(pool, job) == [("job", position) for position in range(10)]
        assert decoder.steps == [
            ("batch", [("job", position) for position in range(4)]),
            *[("words", ("job", position)) for position in range(4)],
            ("batch", [("job", position) for position in range(4, 8)]),
            ("batch", [("job", 8), ("job", 9)]),
            *[("words", ("job", position)) for position in range(4, 10)],
        ]
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_words_of_a_live_request_are_timed_before_the_next_batch() -> None:
    """A request that wants each result soonest (the default): its words
    come before any further batch, its own or a long job's."""

    async def main() -> None:
        decoder = _Decoder()
        pool, executor = _pool(decoder, workers=1)
        live = _Request("live", 8, words=True)
        job = _Request("job", 4, words=True, key="other options")
        job_results = asyncio.create_task(_collect_throughput(pool, job))
        assert await _collect(pool, live) == [("live", position) for position in range(8)]
        await job_results
        live_steps = [step for step in decoder.steps if "live" in str(step)]
        assert [kind for kind, _ in live_steps] == ["batch"] + ["words"] * 4 + ["batch"] + ["words"] * 4
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_words_waiting_are_bounded_per_worker() -> None:
    async def main() -> None:
        decoder = _Decoder()
        pool, executor = _pool(decoder, workers=1)
        job = _Request("job", 32, words=True)
        assert await _collect_throughput(pool, job) == [("job", position) for position in range(32)]
        assert max(decoder.words_waiting_at_batches) <= WORDS_WAITING_PER_WORKER
        assert decoder.words_waiting == 0
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_the_words_of_a_request_that_ended_are_not_timed() -> None:
    async def main() -> None:
        decoder = _Decoder(delay_s=0.1)
        pool, executor = _pool(decoder, workers=1)
        job = _Request("job", 8, words=True)
        consumer = asyncio.create_task(_collect_throughput(pool, job))
        await asyncio.to_thread(decoder.started.wait, 5)
        # It gives up while its first batch is decoded: that batch's words are never timed.
        consumer.cancel()
        with pytest.raises(asyncio.CancelledError):
            await consumer
        await asyncio.sleep(0.3)
        assert [kind for kind, _ in decoder.steps] == ["batch"]
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


async def _collect_throughput(pool: BatchPool, request: _Request) -> list[tuple[str, int]]:
    return [
        (t.model, t.chunk_index) async for t in pool.transcribe(cast(PreparedTranscription, request), throughput=True)
    ]


def test_a_jobs_last_chunks_go_to_the_solo_replica_when_nothing_else_waits() -> None:
    async def main() -> None:
        decoder = _Decoder()
        pool, executor = _pool(decoder, workers=2)
        job = _Request("job", 10)
        stream = pool.transcribe(cast(PreparedTranscription, job), throughput=True)
        assert len([transcript async for transcript in stream]) == 10
        last = _Request("last", 2)
        stream = pool.transcribe(cast(PreparedTranscription, last), throughput=True, last_of_job=True)
        assert len([transcript async for transcript in stream]) == 2
        # Only the last request's batch, and none while chunks of others wait.
        assert decoder.solo_batches[-1] and not any(decoder.solo_batches[:-1])
        # Six one-chunk jobs at once: the first batch leaves chunks waiting, so goes to a worker.
        decoder.solo_batches.clear()
        await asyncio.gather(*(_collect_last(pool, _Request(f"clip-{number}", 1)) for number in range(6)))
        assert decoder.solo_batches[0] is False
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


async def _collect_last(pool: BatchPool, request: _Request) -> list[tuple[str, int]]:
    return [
        (t.model, t.chunk_index)
        async for t in pool.transcribe(cast(PreparedTranscription, request), throughput=True, last_of_job=True)
    ]


def test_a_worker_leaves_its_share_to_one_about_to_finish() -> None:
    """Four chunks wait while the other worker is a chunk from the end of
    its batch: the idle worker takes two, not four, and the other worker the
    last two once done, so both end together."""

    async def main() -> None:
        decoder = _Decoder(delay_per_chunk_s=0.2)
        pool, executor = _pool(decoder, workers=2)
        await _collect(pool, _Request("first", 1, batch_size=1))  # the pool learns a chunk's time
        long = asyncio.create_task(_collect(pool, _Request("long", 4)))
        await asyncio.sleep(0.6)
        assert await _collect(pool, _Request("tail", 4)) == [("tail", position) for position in range(4)]
        await long
        assert [len(batch) for batch in decoder.batches if batch[0][0] == "tail"] == [2, 2]
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_live_chunks_waiting_do_not_hold_back_a_jobs_words() -> None:
    """A job's words wait only for the job's (or another job's) last chunks,
    not for live chunks: those could keep coming, and the job's next calls
    wait for its results."""

    async def main() -> None:
        decoder = _Decoder(delay_s=0.05)
        pool, executor = _pool(decoder, workers=1)
        job = _Request("job", 4, words=True)
        live = _Request("live", 2, key="other options")
        job_results = asyncio.create_task(_collect_throughput(pool, job))
        await asyncio.to_thread(decoder.started.wait, 5)
        await _collect(pool, live)
        await job_results
        assert [kind for kind, _ in decoder.steps] == ["batch"] + ["words"] * 4 + ["batch"]
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_the_solo_replica_takes_one_batch_at_a_time() -> None:
    """It is one replica: a second job ending while it decodes goes to a worker."""

    async def main() -> None:
        decoder = _Decoder(delay_s=0.2)
        pool, executor = _pool(decoder, workers=2)
        first = asyncio.create_task(_collect_last(pool, _Request("first", 1)))
        await asyncio.to_thread(decoder.started.wait, 5)
        await _collect_last(pool, _Request("second", 1, key="other options"))
        await first
        assert decoder.solo_batches == [True, False]
        await pool.close()
        executor.shutdown()

    asyncio.run(main())


def test_the_pool_measures_its_workers_file_and_live_work_apart() -> None:
    async def main() -> None:
        decoder = _Decoder(delay_per_chunk_s=0.05)
        pool, executor = _pool(decoder, workers=1)
        job = _Request("job", 4)
        async for _ in pool.transcribe(cast(PreparedTranscription, job), throughput=True):
            pass
        # Four chunks of a second each, 0.05 s a chunk: 0.05 s of a worker per second of audio.
        assert pool.rates.file.seconds_per_unit == pytest.approx(0.05, rel=0.5)
        assert not pool.rates.live.known
        await _collect(pool, _Request("live", 1))
        assert pool.rates.live.seconds_per_unit == pytest.approx(0.05, rel=0.5)
        assert pool.rates.live.figures.from_work
        await pool.close()
        executor.shutdown()

    asyncio.run(main())

"""One decoder for every live stream of a gateway: steps of different streams
that are ready together go to the ASR service in one Transcribe call, decoded
in one batch by its already-loaded model.

Why the audio travels inline (bytes in the request) rather than in shared
memory: a step is a few seconds of audio that changes at every step and lives
only until its answer comes, it reached the gateway over the network anyway,
and a stream that dies must leave nothing behind. A shared-memory segment per
step would cost a create, a map and an unlink for every few hundred
kilobytes, and a leak on every crash; bytes cost a copy of about 1 ms per
second of audio on loopback and work across hosts unchanged.

Each request may carry the text said before it (`context`, the stream's
finals so far), which the ASR service gives the model as previous text, and
the text its audio begins with (`prefix`, the last finals, whose audio leads
the request's), which the model continues; neither is part of what a batch
must share, so steps of streams with different histories still go in one
batch.

Scheduling: finals go first, then the first step of an utterance (its
first interim result), then other steps, the oldest first.
Calls in flight are bounded by the ASR workers (so a request waits here,
where newer audio can still join it, not in the service's queue); batches
are sized so that every free worker gets a share (on a CPU a batch of n
costs n times one chunk, so four chunks on one worker would make the last
stream wait four decodes). Each call also takes a slot of the gateway's
`AsrCapacity`, ahead of any waiting file job.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np
import numpy.typing as npt

from common.limits import SAMPLE_RATE_HERTZ
from common.rpc.convert import duration_to_seconds, seconds_to_duration
from common.transcript import Word
from gateway.asr_capacity import AsrCapacity
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc
from subtitler.common.v1 import common_pb2

logger = logging.getLogger(__name__)

# Inline audio one call carries at most (the ASR service takes 4 MiB).
MAX_CALL_BYTES = 3 * 1024 * 1024
# Retries of a call the ASR service refused for now (UNAVAILABLE, RESOURCE_EXHAUSTED).
MAX_RETRIES = 2
RETRY_BACKOFF_S = 0.2

Samples = npt.NDArray[np.float32]

# Request priorities, most urgent first.
PRIORITY_FINAL = 0
PRIORITY_FIRST_STEP = 1
PRIORITY_INTERIM = 2
# A request that waits this long for a worker means the streams ask more than
# the workers give: `pressure` reaches 1 and the streams shed optional work.
PRESSURE_WAIT_S = 0.6
# How fast the recent wait follows the latest (the weight of each new wait).
WAIT_SMOOTHING = 0.3


@dataclass(frozen=True)
class Hypothesis:
    """What the model heard in one step's audio."""

    # The text, segments joined by spaces.
    text: str
    # Its words, with times from the start of the step's audio.
    words: tuple[Word, ...]
    # BCP-47 code of the language decoded.
    language_code: str


@dataclass(eq=False)
class _Request:
    samples: Samples
    options: asr_pb2.TranscriptionOptions
    context: str
    prefix: str
    key: bytes
    priority: int
    order: int
    future: asyncio.Future[Hypothesis]
    enqueued: float = field(default_factory=time.monotonic)


class LiveDecoder:
    """Batches the decode requests of every live stream. Used from the
    gateway's event loop only."""

    def __init__(
        self,
        asr: asr_pb2_grpc.AsrServiceStub,
        capacity: AsrCapacity,
        *,
        call_timeout_s: float = 60.0,
        max_call_bytes: int = MAX_CALL_BYTES,
    ) -> None:
        self._asr = asr
        self._capacity = capacity
        self._call_timeout_s = call_timeout_s
        self._max_call_bytes = max_call_bytes
        self._queue: list[_Request] = []
        self._in_flight = 0
        self._order = itertools.count()
        self._tasks: set[asyncio.Task[None]] = set()
        # How long requests recently waited for a worker, smoothed (seconds).
        self._recent_wait_s = 0.0
        # Figures for the status and the bench.
        self.calls = 0
        self.chunks = 0

    @property
    def queued(self) -> int:
        return len(self._queue)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def oldest_wait_s(self) -> float:
        """How long the oldest waiting request has waited (0 when none waits)."""
        if not self._queue:
            return 0.0
        return time.monotonic() - min(request.enqueued for request in self._queue)

    @property
    def pressure(self) -> float:
        """How far behind the workers are, as the streams see it: the wait of
        the oldest waiting request or of recent ones, whichever is longer,
        over `PRESSURE_WAIT_S` (0: a request starts at once; 1 and more: the
        streams ask more than the workers give, and shed optional work)."""
        return max(self.oldest_wait_s, self._recent_wait_s) / PRESSURE_WAIT_S

    @property
    def idle(self) -> bool:
        """Whether a request made now would start at once and, with several
        workers, still leave one free: nothing waits, and at least two
        workers are free (one with a single worker). Interim steps wait for
        this, so a final never waits for a worker busy with interims (a
        decode costs about as much whatever it holds: Whisper's encoder
        always reads a 30 s window)."""
        workers = max(1, self._capacity.figures.workers)
        return not self._queue and self._in_flight < max(1, workers - 1)

    async def decode(
        self,
        samples: Samples,
        options: asr_pb2.TranscriptionOptions,
        *,
        priority: int = PRIORITY_INTERIM,
        context: str = "",
        prefix: str = "",
    ) -> Hypothesis:
        """The hypothesis of `samples` (16 kHz mono, at most 30 s) with
        `options` (words are timed when they ask for it), knowing that
        `context` was said just before and that the audio begins with
        `prefix` (left out of the hypothesis); raises the ASR service's error.
        Requests of a lower `priority` number go first (finals, then an
        utterance's first step, then other steps), the oldest first. Cancelling the caller drops its
        request if it is still waiting."""
        await self._capacity.refresh()  # the ASR workers (asked again at most every 30 s)
        future: asyncio.Future[Hypothesis] = asyncio.get_running_loop().create_future()
        request = _Request(
            samples=samples,
            options=options,
            context=context,
            prefix=prefix,
            key=options.SerializeToString(deterministic=True),
            priority=priority,
            order=next(self._order),
            future=future,
        )
        self._queue.append(request)
        self._dispatch()
        try:
            return await future
        finally:
            if request in self._queue:
                self._queue.remove(request)

    async def close(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        for task in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError):
                await task

    def _dispatch(self) -> None:
        """Starts calls while there are requests and free workers."""
        workers = max(1, self._capacity.figures.workers)
        while self._queue and self._in_flight < workers:
            batch = self._take_batch(workers - self._in_flight)
            self._in_flight += 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def _take_batch(self, free_workers: int) -> list[_Request]:
        now = time.monotonic()
        self._queue.sort(key=lambda request: (request.priority, request.order))
        first = self._queue[0]
        same = [request for request in self._queue if request.key == first.key]
        preferred = self._capacity.figures.preferred_batch_size or len(same)
        size = max(1, min(preferred, math.ceil(len(same) / free_workers)))
        batch: list[_Request] = []
        total_bytes = 0
        for request in same[:size]:
            if batch and total_bytes + request.samples.nbytes > self._max_call_bytes:
                break
            batch.append(request)
            total_bytes += request.samples.nbytes
        for request in batch:
            self._queue.remove(request)
            wait_s = now - request.enqueued
            self._recent_wait_s += WAIT_SMOOTHING * (wait_s - self._recent_wait_s)
        return batch

    async def _run(self, batch: list[_Request]) -> None:
        try:
            live = [request for request in batch if not request.future.done()]
            if live:
                results = await self._call(live)
                for request, result in zip(live, results, strict=True):
                    if not request.future.done():
                        request.future.set_result(result)
        except asyncio.CancelledError:
            for request in batch:
                if not request.future.done():
                    request.future.cancel()
            raise
        except grpc.aio.AioRpcError as error:
            for request in batch:
                if not request.future.done():
                    request.future.set_exception(error)
        finally:
            self._in_flight -= 1
            self._dispatch()

    async def _call(self, batch: Sequence[_Request]) -> list[Hypothesis]:
        offsets = [0, *itertools.accumulate(request.samples.shape[0] for request in batch)]
        audio = np.concatenate([request.samples for request in batch]).astype("<f4", copy=False)
        options = asr_pb2.TranscriptionOptions()
        options.CopyFrom(batch[0].options)
        options.batch_size = len(batch)
        message = asr_pb2.TranscribeRequest(
            inline_audio=asr_pb2.InlineAudio(samples=audio.tobytes()),
            chunks=[
                common_pb2.TimeRange(
                    start_offset=seconds_to_duration(start / SAMPLE_RATE_HERTZ),
                    end_offset=seconds_to_duration(end / SAMPLE_RATE_HERTZ),
                )
                for start, end in itertools.pairwise(offsets)
            ],
            options=options,
            chunk_contexts=[request.context for request in batch] if any(request.context for request in batch) else [],
            chunk_prefixes=[request.prefix for request in batch] if any(request.prefix for request in batch) else [],
        )
        for attempt in itertools.count():
            await self._capacity.acquire(urgent=True)
            try:
                responses = [response async for response in self._asr.Transcribe(message, timeout=self._call_timeout_s)]
                break
            except grpc.aio.AioRpcError as error:
                retriable = error.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.RESOURCE_EXHAUSTED)
                if not retriable or attempt >= MAX_RETRIES:
                    raise
                logger.info("live decode refused (%s); retrying", error.code().name)
            finally:
                self._capacity.release()
            await asyncio.sleep(RETRY_BACKOFF_S * (attempt + 1))
        self.calls += 1
        self.chunks += len(batch)
        by_chunk = {response.chunk_index: response for response in responses}
        return [
            _hypothesis(by_chunk.get(position), start / SAMPLE_RATE_HERTZ)
            for position, start in enumerate(offsets[:-1])
        ]


def _hypothesis(response: asr_pb2.TranscribeResponse | None, offset_s: float) -> Hypothesis:
    if response is None:
        return Hypothesis("", (), "")
    words = tuple(
        Word(
            text=word.text,
            start_s=max(0.0, duration_to_seconds(word.start_offset) - offset_s),
            end_s=max(0.0, duration_to_seconds(word.end_offset) - offset_s),
            probability=word.probability,
            interpolated=word.interpolated,
        )
        for segment in response.segments
        for word in segment.words
    )
    text = " ".join(segment.text.strip() for segment in response.segments if segment.text.strip())
    return Hypothesis(text, words, response.language_code)

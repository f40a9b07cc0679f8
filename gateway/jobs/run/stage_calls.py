"""Calls from a job to the stage services under the retry policy.

UNAVAILABLE means a service is down or loading: the call waits, its reason
visible on the job and to watchers, up to `RetryPolicy.max_unavailable_wait_s`.
DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED from a busy service (one that says
when to retry) and ABORTED are retried with exponential backoff and full
jitter (or the service's `retry-after-s` hint) up to `RetryPolicy.max_retries`
times; a RESOURCE_EXHAUSTED without a hint is a limit of the input (audio over
the maximum duration) and fails at once. A NOT_FOUND after the job's audio went
away is handed to `on_not_found`, which may get the audio back (the call is
then tried again). Any other code fails the job with the service's message.
Every failed attempt is stored on the job and published as a `retry` event.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import grpc

from common.rpc.convert import epoch_to_timestamp, seconds_to_duration
from common.rpc.retry_hint import is_busy, retry_after_s
from gateway.config import RetryPolicy
from gateway.jobs.events import EventHub
from gateway.records import JobRecord, Stage
from gateway.store.async_store import AsyncJobStore
from subtitler.common.v1 import common_pb2
from subtitler.gateway.v1 import gateway_pb2

logger = logging.getLogger(__name__)

T = TypeVar("T")

# Codes worth another attempt; UNAVAILABLE is waited out rather than counted.
RETRIED_CODES = frozenset(
    {grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.ABORTED}
)
STAGE_SERVICES = {
    Stage.DECODE: "audio",
    Stage.DETECT_SPEECH: "vad",
    Stage.TRANSCRIBE: "asr",
    Stage.ALIGN: "align",
    Stage.DIARIZE: "diarize",
}


class StageFailedError(Exception):
    """A peer service refused a stage: the job fails with its status."""

    def __init__(self, stage: Stage, code: grpc.StatusCode, message: str) -> None:
        super().__init__(message)
        self.stage = stage
        self.code = code
        self.message = message


def backoff_s(policy: RetryPolicy, attempt: int) -> float:
    """Exponential backoff with full jitter before attempt `attempt` + 1."""
    ceiling_s = min(policy.max_backoff_s, policy.initial_backoff_s * 2 ** (attempt - 1))
    return random.uniform(ceiling_s / 2, ceiling_s)


class LostAudioRecovery(Protocol):
    """What the caller needs of the job's audio: the handle in use, and a way
    to get the audio back when a call finds it gone."""

    @property
    def handle(self) -> common_pb2.AudioHandle | None: ...

    async def replace_if_lost(self, used: common_pb2.AudioHandle | None) -> bool: ...


class StageCaller:
    """Runs one job's stage calls under the retry policy and keeps the job's
    waiting reason: calls of several stages run at once, and the reason shown
    is that of the latest call still waiting."""

    def __init__(self, job: JobRecord, store: AsyncJobStore, events: EventHub, policy: RetryPolicy) -> None:
        self._job = job
        self._store = store
        self._events = events
        self._policy = policy
        # Why each call now waiting for a service waits, in the order they began.
        self._waiting: dict[object, str] = {}

    async def call(
        self,
        stage: Stage,
        chunk_index: int,
        attempt: Callable[[], Awaitable[T]],
        audio: LostAudioRecovery | None = None,
    ) -> T:
        """Runs `attempt` (one call, its stream consumed) until it succeeds
        or the policy gives up (`StageFailedError`). `audio`: asked after a
        NOT_FOUND whether the job's audio was lost and is back (then the call
        is tried again)."""
        policy = self._policy
        retries = 0
        waits = 0
        waited_s = 0.0
        wait_key = object()
        while True:
            used = audio.handle if audio is not None else None
            try:
                result = await attempt()
            except grpc.aio.AioRpcError as error:
                code, details = error.code(), error.details() or error.code().name
                if (
                    code == grpc.StatusCode.NOT_FOUND
                    and audio is not None
                    and stage != Stage.DECODE
                    and await audio.replace_if_lost(used)
                ):
                    # The audio went away under the job and is decoded again.
                    retries += 1
                    if retries > policy.max_retries:
                        raise StageFailedError(stage, code, details) from error
                    await self.record_retry(stage, chunk_index, retries, policy.max_retries + 1, code, details, 0.0)
                    continue
                if code == grpc.StatusCode.UNAVAILABLE:
                    waits += 1
                    delay_s = backoff_s(policy, waits)
                    if waited_s + delay_s > policy.max_unavailable_wait_s:
                        message = f"the {STAGE_SERVICES[stage]} service was unavailable for {waited_s:.0f} s: {details}"
                        raise StageFailedError(stage, code, message) from error
                    waited_s += delay_s
                    await self._wait_for_service(wait_key, stage, details, delay_s)
                    # Waits are bounded by time, not by a count.
                    await self.record_retry(stage, chunk_index, waits, 0, code, details, delay_s)
                elif code == grpc.StatusCode.RESOURCE_EXHAUSTED and not is_busy(error):
                    # A limit (audio over the maximum duration, an upload too
                    # large), not a busy service: the same call fails again.
                    raise StageFailedError(stage, code, details) from error
                elif code in RETRIED_CODES:
                    retries += 1
                    if retries > policy.max_retries:
                        raise StageFailedError(stage, code, f"{details} (gave up after {retries} attempts)") from error
                    delay_s = retry_after_s(error) or backoff_s(policy, retries)
                    await self.record_retry(stage, chunk_index, retries, policy.max_retries + 1, code, details, delay_s)
                else:
                    raise StageFailedError(stage, code, details) from error
                await asyncio.sleep(delay_s)
                continue
            if self._waiting.pop(wait_key, None) is not None:
                # Another stage may still be waiting: its reason stays.
                self._job.waiting_reason = next(reversed(self._waiting.values()), "")
                await self._store.save(self._job)
                await self._events.publish(self._job, waiting_reason=self._job.waiting_reason)
            return result

    async def _wait_for_service(self, wait_key: object, stage: Stage, details: str, delay_s: float) -> None:
        reason = f"waiting for the {STAGE_SERVICES[stage]} service ({details}); next try in {delay_s:.1f} s"
        self._waiting[wait_key] = reason
        self._job.waiting_reason = reason
        await self._store.save(self._job)
        await self._events.publish(self._job, waiting_reason=self._job.waiting_reason)

    async def record_retry(
        self,
        stage: Stage,
        chunk_index: int,
        attempt: int,
        max_attempts: int,
        code: grpc.StatusCode,
        details: str,
        delay_s: float,
    ) -> None:
        """Stores a failed attempt on the job and publishes it."""
        retry = gateway_pb2.RetryAttempt(
            stage=int(stage),  # type: ignore[arg-type]
            chunk_index=chunk_index,
            attempt=attempt,
            max_attempts=max_attempts,
            code=code.name,
            message=details,
            backoff=seconds_to_duration(delay_s),
            attempt_time=epoch_to_timestamp(time.time()),
        )
        logger.info(
            "job %s: %s call failed with %s (%s); attempt %d, next in %.1f s",
            self._job.job_id,
            STAGE_SERVICES[stage],
            code.name,
            details,
            attempt,
            delay_s,
        )
        await self._store.add_retry(self._job.job_id, retry)
        await self._events.publish(self._job, retry=retry)

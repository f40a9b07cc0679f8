"""A stage call under the retry policy: transient codes retried and every attempt
kept, a service out of reach waited out with a reason, limits not retried."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import grpc
import pytest

from gateway.jobs.run.stage_calls import StageFailedError
from gateway.records import Stage
from gateway.store.job_store import JobStore
from tests.unit.gateway.jobs.job_fakes import FAST, new_job, rpc_error, stage_caller


def failing(*errors: grpc.aio.AioRpcError, result: str = "done") -> tuple[Callable[[], Awaitable[str]], list[int]]:
    """An attempt that raises `errors` one by one, then returns `result`; and its call count."""
    calls = [0]

    async def attempt() -> str:
        calls[0] += 1
        if calls[0] <= len(errors):
            raise errors[calls[0] - 1]
        return result

    return attempt, calls


def test_transient_codes_are_retried_and_every_attempt_is_kept(store: JobStore) -> None:
    job = new_job(store)
    attempt, calls = failing(
        rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "busy", retry_after="0.01"),
        rpc_error(grpc.StatusCode.DEADLINE_EXCEEDED),
    )
    assert asyncio.run(stage_caller(store, job).call(Stage.TRANSCRIBE, 3, attempt)) == "done"
    assert calls[0] == 3
    retries = store.get_job(job.job_id).retries
    assert [(retry.code, retry.attempt, retry.chunk_index) for retry in retries] == [
        ("RESOURCE_EXHAUSTED", 1, 3),
        ("DEADLINE_EXCEEDED", 2, 3),
    ]


def test_retries_end_with_the_services_message(store: JobStore) -> None:
    job = new_job(store)
    attempt, calls = failing(*[rpc_error(grpc.StatusCode.ABORTED, "conflict")] * 5)
    with pytest.raises(StageFailedError) as raised:
        asyncio.run(stage_caller(store, job).call(Stage.ALIGN, 0, attempt))
    assert calls[0] == FAST.max_retries + 1
    assert raised.value.code == grpc.StatusCode.ABORTED and "gave up after 3 attempts" in raised.value.message


def test_other_codes_fail_at_once(store: JobStore) -> None:
    job = new_job(store)
    attempt, calls = failing(rpc_error(grpc.StatusCode.INVALID_ARGUMENT, "not media"))
    with pytest.raises(StageFailedError) as raised:
        asyncio.run(stage_caller(store, job).call(Stage.DECODE, -1, attempt))
    assert calls[0] == 1 and raised.value.message == "not media"


def test_unavailable_is_waited_out_with_a_reason_then_cleared(store: JobStore) -> None:
    job = new_job(store)
    reasons: list[str] = []
    attempt, _ = failing(rpc_error(grpc.StatusCode.UNAVAILABLE, "connection refused"))

    async def watched() -> str:
        async def run() -> str:
            return await stage_caller(store, job).call(Stage.TRANSCRIBE, 0, attempt)

        task = asyncio.create_task(run())
        await asyncio.sleep(0.005)
        reasons.append(job.waiting_reason)
        return await task

    assert asyncio.run(watched()) == "done"
    assert "waiting for the asr service (connection refused)" in reasons[0]
    assert job.waiting_reason == ""


def test_unavailable_for_too_long_fails(store: JobStore) -> None:
    job = new_job(store)
    attempt, _ = failing(*[rpc_error(grpc.StatusCode.UNAVAILABLE)] * 100)
    with pytest.raises(StageFailedError) as raised:
        asyncio.run(stage_caller(store, job).call(Stage.DETECT_SPEECH, -1, attempt))
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE and "vad service was unavailable" in raised.value.message


def test_a_limit_is_not_retried_but_a_busy_service_is(store: JobStore) -> None:
    job = new_job(store)
    attempt, calls = failing(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "audio lasts 5 h; at most 4 h"))
    with pytest.raises(StageFailedError):
        asyncio.run(stage_caller(store, job).call(Stage.DECODE, -1, attempt))
    assert calls[0] == 1  # one decode, not four
    attempt, calls = failing(rpc_error(grpc.StatusCode.RESOURCE_EXHAUSTED, "Concurrent RPC limit exceeded!"))
    assert asyncio.run(stage_caller(store, job).call(Stage.DECODE, -1, attempt)) == "done"
    assert calls[0] == 2

"""gateway.live.finals: finals are sent in the order they were made whatever
the order their decodes end in, at most MAX_PENDING_FINALS wait, and their
errors are told."""

from __future__ import annotations

import asyncio

from gateway.live.decoder import Hypothesis
from gateway.live.finals import MAX_PENDING_FINALS, FinalChain, resolved


def heard(text: str) -> Hypothesis:
    return Hypothesis(text, (), "en")


async def later(text: str | None, ticks: int) -> Hypothesis | None:
    for _ in range(ticks):
        await asyncio.sleep(0)
    return None if text is None else heard(text)


def test_finals_are_sent_in_order_whatever_order_their_decodes_end_in() -> None:
    async def run() -> list[str]:
        sent: list[str] = []
        chain = FinalChain(lambda task: None)
        assert not chain.pending
        chain.add(later("slow", 20), lambda hypothesis: sent.append(hypothesis.text))
        chain.add(later(None, 0), lambda hypothesis: sent.append(hypothesis.text))  # nothing to send
        chain.add(resolved(heard("known")), lambda hypothesis: sent.append(hypothesis.text))
        assert chain.pending
        await chain.wait()
        assert not chain.pending and not chain.unfinished()
        return sent

    assert asyncio.run(run()) == ["slow", "known"]


def test_at_most_max_pending_finals_wait() -> None:
    async def run() -> int:
        chain = FinalChain(lambda task: None)
        for index in range(MAX_PENDING_FINALS + 3):
            chain.add(later(str(index), 50), lambda hypothesis: None)
        await chain.bound()
        waiting = len(chain.unfinished())
        await chain.wait()
        return waiting

    assert asyncio.run(run()) <= MAX_PENDING_FINALS


def test_a_failed_final_is_told() -> None:
    async def fails() -> Hypothesis | None:
        raise RuntimeError("decode failed")

    async def run() -> list[BaseException | None]:
        told: list[BaseException | None] = []
        chain = FinalChain(lambda task: told.append(task.exception()))
        chain.add(fails(), lambda hypothesis: None)
        for _ in range(3):
            await asyncio.sleep(0)
        return told

    [error] = asyncio.run(run())
    assert isinstance(error, RuntimeError)

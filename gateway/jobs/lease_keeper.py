"""The heartbeat of this gateway's leases: renews the lease of every job it
runs, on a store connection of its own, and stops the jobs whose lease it
no longer holds."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.config import GatewayConfig
from gateway.jobs.running import RunningJobs, Spawn
from gateway.store.async_store import AsyncJobStore
from gateway.store.errors import StoreUnavailableError

logger = logging.getLogger(__name__)


class LeaseKeeper:
    """Renews the leases of the jobs this gateway runs every third of
    `lease_s`; stops those another gateway took over (this one's lease
    lapsed) and cancels those a client asked, on any gateway, to cancel."""

    def __init__(self, store: AsyncJobStore, config: GatewayConfig, running: RunningJobs, spawn: Spawn) -> None:
        self._store = store
        self._config = config
        self._running = running
        self._spawn = spawn

    async def keep_forever(self) -> None:
        """The heartbeat, until the gateway stops. When renewals have failed
        for a whole lease (the store out of reach), every job here is
        stopped: another gateway may have taken it, or it is taken again
        from its checkpoint once the store answers."""
        interval_s = self._config.lease_s / 3
        renewed_at = time.monotonic()
        while True:
            try:
                leases = await self._store.companion()
                break
            except Exception as error:  # noqa: BLE001 - the store out of reach: the heartbeat waits for it
                logger.warning("the heartbeat cannot reach the job store (%s); trying again", error)
                await asyncio.sleep(interval_s)
        try:
            while not self._running.stopping:
                await asyncio.sleep(interval_s)
                renewed_at = await self.renew(leases, renewed_at)
        finally:
            await leases.close()

    async def renew(self, leases: AsyncJobStore, renewed_at: float) -> float:
        """One round of the heartbeat on the store connection `leases`;
        returns when leases were last renewed (`renewed_at`, the last time,
        if they could not be now)."""
        job_ids = list(self._running)
        try:
            kept, cancelled = await leases.renew_leases(job_ids, self._config.lease_s)
        except StoreUnavailableError as error:
            logger.warning("could not renew the leases of %d jobs: %s", len(job_ids), error)
            if time.monotonic() - renewed_at > self._config.lease_s:
                for job_id in job_ids:
                    self._running.stop_lost(job_id)
            return renewed_at
        for job_id in job_ids:
            if job_id not in self._running:
                continue  # finished meanwhile
            if job_id not in kept:
                logger.warning("job %s was taken over by another gateway: stopping it here", job_id)
                self._running.stop_lost(job_id)
            elif job_id in cancelled and not self._running.cancel_requested(job_id):
                self._spawn(self._running.drop(job_id))
        return time.monotonic()

"""Retention: deletes finished jobs once they are older than
SUBTITLER_GATEWAY_RETENTION_S, with their records and uploads."""

from __future__ import annotations

import asyncio
import logging
import time

from gateway.config import GatewayConfig
from gateway.jobs.uploads import discard_upload
from gateway.store.async_store import AsyncJobStore

logger = logging.getLogger(__name__)


class RetentionSweeper:
    """Sweeps the store for expired jobs, once or every
    `retention_sweep_interval_s`."""

    def __init__(self, store: AsyncJobStore, config: GatewayConfig) -> None:
        self._store = store
        self._config = config

    async def sweep_expired(self) -> int:
        """Deletes finished jobs older than the retention, with their files."""
        expired = await self._store.expired_jobs(time.time() - self._config.retention_s)
        for job in expired:
            discard_upload(job)
            await self._store.delete_job(job.job_id)
        if expired:
            logger.info("deleted %d jobs past their retention", len(expired))
        return len(expired)

    async def sweep_forever(self) -> None:
        while True:
            try:
                await self.sweep_expired()
            except Exception:
                logger.exception("retention sweep failed")
            await asyncio.sleep(self._config.retention_sweep_interval_s)

"""The one thread a job store's connection is used on: async code hands it
each operation, so the event loop never blocks on the database and the
store's writes are serialised. An operation that met a dropped connection
is tried once more; a database out of reach becomes StoreUnavailableError."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from gateway.store.database import DATABASE_ERRORS, Database
from gateway.store.errors import StoreUnavailableError

T = TypeVar("T")

logger = logging.getLogger(__name__)


class StoreThread:
    """Runs the operations of the store on `database`, one at a time, on a thread of its own."""

    def __init__(self, database: Database) -> None:
        self._database = database
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="job-store")

    async def run(self, operation: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        """Runs a store operation on the store's own thread. An operation
        that met a connection the server had dropped (a restart, a failover)
        is tried once more on a new one: each is one transaction, undone
        when it failed. StoreUnavailableError: the database cannot be
        reached."""

        def attempt() -> T:
            try:
                return operation(*args, **kwargs)
            except DATABASE_ERRORS:
                if not self._database.lost():
                    raise
                logger.warning("the job store's connection was lost; connecting again")
                return operation(*args, **kwargs)

        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, attempt)
        except DATABASE_ERRORS as error:
            logger.warning("job store operation %s failed: %s", getattr(operation, "__name__", operation), error)
            raise StoreUnavailableError("the job store is unavailable; try again shortly") from error

    def close(self) -> None:
        """Waits for the operation under way, if any, and ends the thread."""
        self._executor.shutdown(wait=True)

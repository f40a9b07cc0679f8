"""The jobs this gateway runs now: each a JobPipeline in its own task, run
to its end (recorded by gateway.jobs.outcomes), or stopped: cancelled by a
client, taken over by another gateway, or left to the next start."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Coroutine, Iterator
from typing import Any

import grpc

from common.transcript import Segment
from gateway.config import GatewayConfig
from gateway.jobs.events import EventHub
from gateway.jobs.outcomes import OutcomeRecorder
from gateway.jobs.run.pipeline import JobPipeline, Peers, StageFailedError
from gateway.records import JobFailure, JobRecord, JobState
from gateway.store.async_store import AsyncJobStore
from gateway.store.errors import CorruptRecordError, LeaseLostError, StoreUnavailableError
from gateway.store.stage_outputs import Checkpoint

logger = logging.getLogger(__name__)

# Runs a coroutine in a task of its own, kept until it ends (cancelled at shutdown).
Spawn = Callable[[Coroutine[Any, Any, object]], None]


class RunningJobs:
    """The task and pipeline of each job this gateway runs, at most as many
    as the dispatcher gives it. `wake` is set whenever a job stops here (a
    slot frees)."""

    def __init__(
        self,
        store: AsyncJobStore,
        events: EventHub,
        peers: Peers,
        config: GatewayConfig,
        outcomes: OutcomeRecorder,
        spawn: Spawn,
        wake: asyncio.Event,
    ) -> None:
        self._store = store
        self._events = events
        self._peers = peers
        self._config = config
        self._outcomes = outcomes
        self._spawn = spawn
        self._wake = wake
        self._running: dict[str, tuple[asyncio.Task[None], JobPipeline]] = {}
        # The pipeline task of each running job, the jobs asked to stop, and
        # those another gateway took over (stopped without a word more).
        self._work: dict[str, asyncio.Future[list[Segment]]] = {}
        self._cancel_requested: set[str] = set()
        self._lost: set[str] = set()
        # Set when the gateway shuts down: jobs stopped then stay RUNNING in the store.
        self.stopping = False

    def __len__(self) -> int:
        return len(self._running)

    def __contains__(self, job_id: object) -> bool:
        return job_id in self._running

    def __iter__(self) -> Iterator[str]:
        """The ids of the jobs running here now."""
        return iter(self._running)

    def cancel_requested(self, job_id: str) -> bool:
        """Whether this gateway was asked to stop `job_id` already."""
        return job_id in self._cancel_requested

    def start(self, job: JobRecord, checkpoint: Checkpoint | None = None) -> bool:
        """Starts running a leased job (from `checkpoint`, if any); False if
        it runs here already (claims pass over this gateway's own jobs)."""
        if job.job_id in self._running:
            return False
        pipeline = JobPipeline(job, self._peers, self._store, self._events, self._config, checkpoint)
        task = asyncio.get_running_loop().create_task(self._run(job, pipeline), name=f"job-{job.job_id}")
        self._running[job.job_id] = (task, pipeline)
        logger.info("job %s runs on this gateway (%s)", job.job_id, self._store.owner_id)
        self._watch(job, task)
        return True

    def _watch(self, job: JobRecord, task: asyncio.Task[None]) -> None:
        """Forgets a job once its task ends, freeing its slot."""

        def finished(_: asyncio.Task[None]) -> None:
            self._running.pop(job.job_id, None)
            self._work.pop(job.job_id, None)
            self._cancel_requested.discard(job.job_id)
            lost = job.job_id in self._lost
            self._lost.discard(job.job_id)
            if not job.state.finished and not lost and not self.stopping:
                # Stopped unfinished (the store out of reach): free its lease
                # so that it is taken again as soon as the store answers.
                self._spawn(self._release_lease(job.job_id))
            self._wake.set()

        task.add_done_callback(finished)

    async def _release_lease(self, job_id: str) -> None:
        with contextlib.suppress(Exception):  # unreachable still: the lease lapses instead
            await self._store.release_leases([job_id])
        self._wake.set()

    def stop_lost(self, job_id: str) -> None:
        """Stops a job another gateway took over, writing nothing more of it
        and keeping its audio (its new gateway goes on with it)."""
        running = self._running.get(job_id)
        if running is None:
            return
        self._lost.add(job_id)
        running[1].keep_audio = True  # its new gateway goes on with it
        running[0].cancel()

    async def drop(self, job_id: str) -> None:
        """Stops a job this gateway runs; its task records it as cancelled."""
        running = self._running.get(job_id)
        if running is None:
            return
        self._cancel_requested.add(job_id)
        work = self._work.get(job_id)
        if work is not None:
            work.cancel()
        # Waits without passing a cancellation of this call on to the job.
        await asyncio.wait({running[0]})

    def stop_all(self) -> list[tuple[str, asyncio.Task[None]]]:
        """Stops every running job without marking it, keeping its audio (for
        shutdown, once `stopping` is set); returns each job id with its task."""
        running = list(self._running.items())
        for _, (task, pipeline) in running:
            pipeline.keep_audio = True
            task.cancel()
        return [(job_id, task) for job_id, (task, _) in running]

    async def _run(self, job: JobRecord, pipeline: JobPipeline) -> None:
        """Runs a job and records how it ended. CancelJob cancels only the
        pipeline's own task (`_work`), never this bookkeeping; gateway shutdown
        cancels this task, leaving the job to the next start (or another
        gateway). A job another gateway took over is left to it unwritten."""
        try:
            await self._run_leased(job, pipeline)
        except LeaseLostError as error:
            logger.warning("stopped job %s: %s", job.job_id, error)
        except StoreUnavailableError:
            # Nothing more can be stored: leave the job to be taken again
            # (here or elsewhere) from its checkpoint once its lease lapses
            # and the store answers again.
            logger.warning("stopped job %s: the job store is unavailable; it resumes later", job.job_id)

    async def _run_leased(self, job: JobRecord, pipeline: JobPipeline) -> None:
        started = time.monotonic() - job.processing_s
        previous, job.state = job.state, JobState.RUNNING
        await self._store.save(job)
        await self._events.publish(job, state_changed=True, previous_state=previous)
        if job.job_id in self._cancel_requested:
            await self._outcomes.cancelled(job, started)
            return
        work = asyncio.ensure_future(pipeline.run())
        self._work[job.job_id] = work
        try:
            segments = await work
        except asyncio.CancelledError:
            if job.job_id in self._lost:
                raise  # another gateway runs it now: not a word more from this one
            if self.stopping or not work.cancelled():
                # Left RUNNING in the store, its audio kept: the next start resumes it.
                job.processing_s = time.monotonic() - started
                with contextlib.suppress(Exception):
                    await asyncio.shield(self._store.save(job))
                raise
            await self._outcomes.cancelled(job, started)
            return
        except StageFailedError as failure:
            await self._outcomes.failed(job, JobFailure(failure.code.name, failure.message, failure.stage), started)
            return
        except CorruptRecordError as error:
            await self._outcomes.failed(job, JobFailure("DATA_LOSS", str(error), job.stage), started)
            return
        except (LeaseLostError, StoreUnavailableError):
            raise
        except Exception:  # a bug fails this job, not the gateway
            logger.exception("job %s failed with a bug", job.job_id)
            internal = JobFailure(grpc.StatusCode.INTERNAL.name, "internal error in the gateway", job.stage)
            await self._outcomes.failed(job, internal, started)
            return
        await self._outcomes.succeeded(job, segments, started)

"""A job's decoded audio on the audio service: decoded (or reused after a
restart), kept alive by renewing its lease, decoded again when a stage finds
it gone, and given back when the job ends.

`release_audio` is the one way the gateway gives audio back (jobs that end,
and jobs recovery will not run again).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import grpc

from common.limits import UPLOAD_CHUNK_BYTES
from common.rpc.convert import timestamp_to_epoch
from gateway.jobs.run.stage_calls import StageCaller, StageFailedError
from gateway.records import JobRecord, Stage
from gateway.store.async_store import AsyncJobStore
from subtitler.audio.v1 import audio_pb2, audio_pb2_grpc
from subtitler.common.v1 import common_pb2

logger = logging.getLogger(__name__)

# A running job renews its audio's lease at half of what is left, at least this often.
MAX_LEASE_RENEWAL_INTERVAL_S = 300.0
RELEASE_TIMEOUT_S = 10.0


async def release_audio(
    audio: audio_pb2_grpc.AudioServiceStub, store: AsyncJobStore, job_id: str, handle: common_pb2.AudioHandle
) -> None:
    """Gives a job's audio back and forgets its handle. Never fails: audio
    not given back is freed by its lease."""
    try:
        await audio.ReleaseAudio(audio_pb2.ReleaseAudioRequest(audio_id=handle.audio_id), timeout=RELEASE_TIMEOUT_S)
    except grpc.aio.AioRpcError as error:
        logger.warning("could not release the audio of job %s: %s", job_id, error.details())
    with contextlib.suppress(Exception):
        await store.save_audio_handle(job_id, None)


class AudioLease:
    """The audio of one job. `decoded` is called once a decode is stored
    (the pipeline reports progress and the duration from it)."""

    def __init__(
        self,
        job: JobRecord,
        audio: audio_pb2_grpc.AudioServiceStub,
        store: AsyncJobStore,
        calls: StageCaller,
        call_options: Callable[[], dict[str, Any]],
        enter_decode: Callable[[], Any],
        decoded: Callable[[common_pb2.AudioHandle], Any],
        resumed_handle: common_pb2.AudioHandle | None = None,
    ) -> None:
        self._job = job
        self._audio = audio
        self._store = store
        self._calls = calls
        self._call_options = call_options
        self._enter_decode = enter_decode
        self._decoded = decoded
        self._resumed_handle = resumed_handle
        self._handle: common_pb2.AudioHandle | None = None
        self._redecode_lock = asyncio.Lock()

    @property
    def handle(self) -> common_pb2.AudioHandle | None:
        """The handle in use now (None before the decode and after release)."""
        return self._handle

    @property
    def resumed(self) -> bool:
        """Whether the job came with a stored handle (a resumed job)."""
        return self._resumed_handle is not None

    async def reuse(self) -> bool:
        """Takes the stored handle of a resumed job again if the audio service
        still holds its audio; False when there is none to take (decode then)."""
        if self._resumed_handle is None:
            return False
        self._handle = self._resumed_handle
        if await self.alive(self._resumed_handle):
            return True
        self._handle = None
        return False

    async def replace_if_lost(self, used: common_pb2.AudioHandle | None) -> bool:
        """After a NOT_FOUND from a call made with `used`: whether the audio
        was lost and is now decoded again (False: the NOT_FOUND was about
        something else). Stages run concurrently; one decode serves them all."""
        async with self._redecode_lock:
            if self._handle is not used:
                return True  # another stage decoded it again meanwhile
            if await self.alive(used):
                return False
            stage = self._job.stage
            await self.decode()
            self._job.stage = stage  # back to the stage that lost it
            return True

    async def alive(self, handle: common_pb2.AudioHandle | None) -> bool:
        """Whether the audio service still holds `handle`'s audio (renewing its lease)."""
        if handle is None:
            return False
        request = audio_pb2.RenewLeaseRequest(audio_id=handle.audio_id)
        try:
            await self._calls.call(Stage.DECODE, -1, lambda: self._audio.RenewLease(request, **self._call_options()))
        except StageFailedError as failure:
            if failure.code == grpc.StatusCode.NOT_FOUND:
                return False
            raise
        return True

    async def decode(self) -> common_pb2.AudioHandle:
        """Decodes the job's media (the kept upload or the server path)."""
        await self._enter_decode()

        async def decode_once() -> audio_pb2.DecodeResponse:
            if self._job.uploaded:
                return await self._audio.UploadAudio(
                    self._upload_requests(Path(self._job.media_path)), **self._call_options()
                )
            return await self._audio.DecodeFile(
                audio_pb2.DecodeFileRequest(path=self._job.media_path), **self._call_options()
            )

        handle = (await self._calls.call(Stage.DECODE, -1, decode_once)).audio
        self._handle = handle  # released by `release` from now on, whatever happens next
        await self._store.save_audio_handle(self._job.job_id, handle)
        await self._decoded(handle)
        return handle

    async def _upload_requests(self, path: Path) -> AsyncIterator[audio_pb2.UploadAudioRequest]:
        media = await asyncio.to_thread(open, path, "rb")
        try:
            size = os.fstat(media.fileno()).st_size
            yield audio_pb2.UploadAudioRequest(
                metadata=audio_pb2.UploadMetadata(file_name=self._job.source.removeprefix("upload:"), size_bytes=size)
            )
            while block := await asyncio.to_thread(media.read, UPLOAD_CHUNK_BYTES):
                yield audio_pb2.UploadAudioRequest(chunk=block)
        finally:
            media.close()

    async def renew_forever(self) -> None:
        """Renews the lease when half of what is left of it has passed."""
        expire_s = timestamp_to_epoch(self._handle.lease_expire_time) if self._handle else 0.0
        while True:
            await asyncio.sleep(min(MAX_LEASE_RENEWAL_INTERVAL_S, max(1.0, (expire_s - time.time()) / 2)))
            if self._handle is None:
                continue
            try:
                response = await self._audio.RenewLease(
                    audio_pb2.RenewLeaseRequest(audio_id=self._handle.audio_id), **self._call_options()
                )
                expire_s = timestamp_to_epoch(response.lease_expire_time)
            except grpc.aio.AioRpcError as error:
                logger.warning("lease renewal failed for job %s: %s", self._job.job_id, error.details())

    async def release(self) -> None:
        """Gives the audio back (idempotent)."""
        if self._handle is None:
            return
        handle, self._handle = self._handle, None
        await release_audio(self._audio, self._store, self._job.job_id, handle)

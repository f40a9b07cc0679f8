"""Access to decoded audio from the VAD, ASR and align services.

The audio service answers a decode with an `AudioHandle`; `AudioRef` is its
domain twin. `AudioReader` turns a handle into samples: on the audio
service's host it maps the shared-memory segment read-only (zero-copy);
anywhere else, or when the segment is not there, it streams the samples of
the wanted range with `AudioService.ReadSamples`.

A servicer does::

    async with self._audio_reader.open(request.audio, time_range) as samples:
        result = await loop.run_in_executor(self._executor, engine.run, samples)

and never keeps `samples` (or a slice of it) past the block.
"""

from __future__ import annotations

import contextlib
import logging
import math
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime

import grpc
import numpy as np

from common.audio.shm import BYTES_PER_SAMPLE, SAMPLE_DTYPE, SEGMENT_NAME_PREFIX, Samples, attach_samples, host_id
from common.errors import InvalidInputError, NotFoundError, PermissionDeniedError, UnavailableError
from common.rpc.channels import open_channel
from common.rpc.convert import datetime_to_timestamp, seconds_to_duration, time_range_to_proto
from common.transcript import TimeRange
from subtitler.audio.v1 import audio_pb2, audio_pb2_grpc
from subtitler.common.v1 import common_pb2

logger = logging.getLogger(__name__)

# A segment name as the audio service makes them: the prefix and hex digits, no path.
_SEGMENT_NAME = re.compile(r"[A-Za-z0-9_-]{1,200}")
_VERIFY_TIMEOUT_S = 10.0
_MAX_VERIFIED_HANDLES = 4096

AUDIO_SERVICE_NAME = audio_pb2.DESCRIPTOR.services_by_name["AudioService"].full_name
"""Full name of the audio service, for channels' service config and health checks."""


@dataclass(frozen=True)
class AudioRef:
    """Decoded audio held by the audio service (the domain `AudioHandle`)."""

    # Opaque id, used to read, renew and release the audio.
    audio_id: str
    # Shared-memory segment (no leading slash) holding the samples.
    segment_name: str
    sample_count: int
    sample_rate_hertz: int
    # `common.audio.shm.host_id()` of the host whose /dev/shm holds the segment.
    host_id: str
    # When the audio service frees it unless the lease is renewed.
    lease_expire_time: datetime | None
    # "host:port" of the owning audio service; "": the configured one.
    audio_service_target: str = ""

    @property
    def duration_s(self) -> float:
        return self.sample_count / self.sample_rate_hertz if self.sample_rate_hertz else 0.0


def audio_ref_to_proto(ref: AudioRef) -> common_pb2.AudioHandle:
    handle = common_pb2.AudioHandle(
        audio_id=ref.audio_id,
        segment_name=ref.segment_name,
        sample_count=ref.sample_count,
        sample_rate_hertz=ref.sample_rate_hertz,
        duration=seconds_to_duration(ref.duration_s),
        host_id=ref.host_id,
        audio_service_target=ref.audio_service_target,
    )
    if ref.lease_expire_time is not None:
        handle.lease_expire_time.CopyFrom(datetime_to_timestamp(ref.lease_expire_time))
    return handle


def audio_ref_from_proto(handle: common_pb2.AudioHandle) -> AudioRef:
    """The domain twin of a handle; `InvalidInputError` for an incomplete one."""
    if not handle.audio_id:
        raise InvalidInputError("the audio handle has no audio_id: pass the handle DecodeFile or UploadAudio returned")
    if handle.sample_count < 0 or handle.sample_rate_hertz <= 0:
        raise InvalidInputError(
            f"audio handle {handle.audio_id} has sample_count={handle.sample_count} and "
            f"sample_rate_hertz={handle.sample_rate_hertz}"
        )
    return AudioRef(
        audio_id=handle.audio_id,
        segment_name=handle.segment_name,
        sample_count=handle.sample_count,
        sample_rate_hertz=handle.sample_rate_hertz,
        host_id=handle.host_id,
        lease_expire_time=(
            handle.lease_expire_time.ToDatetime(tzinfo=UTC) if handle.HasField("lease_expire_time") else None
        ),
        audio_service_target=handle.audio_service_target,
    )


def sample_range(time_range: TimeRange | None, sample_rate_hertz: int, sample_count: int) -> tuple[int, int]:
    """Samples [start, end) of `time_range`, clamped to the audio.

    None means the whole audio. Both ends are rounded to the nearest sample;
    the audio service and `AudioReader` use this same rule, so a range read
    locally and over gRPC gives the same samples.
    """
    if time_range is None:
        return 0, sample_count
    if not (math.isfinite(time_range.start_s) and math.isfinite(time_range.end_s)):
        raise InvalidInputError(f"time range {time_range} is not finite")
    if time_range.end_s < time_range.start_s:
        raise InvalidInputError(f"time range ends ({time_range.end_s} s) before it starts ({time_range.start_s} s)")
    start = min(max(round(time_range.start_s * sample_rate_hertz), 0), sample_count)
    end = min(max(round(time_range.end_s * sample_rate_hertz), start), sample_count)
    return start, end


ChannelFactory = Callable[[str], grpc.aio.Channel]


def _open_audio_channel(target: str, credentials: grpc.ChannelCredentials | None = None) -> grpc.aio.Channel:
    return open_channel(target, AUDIO_SERVICE_NAME, credentials=credentials)


class AudioReader:
    """Samples of decoded audio, mapped locally or read from the audio service.

    `default_target` is the audio service used for handles without an
    `audio_service_target` (the SUBTITLER_AUDIO_TARGET of the consumer).
    Channels are opened with `channel_factory` (default: `common.rpc.channels`,
    round robin, UNAVAILABLE retried) once per target, lazily, and closed by
    `close()`. `local_host_id` defaults to this host's `host_id()`;
    `map_local=False` always reads over gRPC (e.g. when services share a
    hostname but not /dev/shm).
    """

    def __init__(
        self,
        default_target: str = "",
        *,
        channel_factory: ChannelFactory | None = None,
        local_host_id: str | None = None,
        map_local: bool = True,
        credentials: grpc.ChannelCredentials | None = None,
    ) -> None:
        """`credentials`: TLS of the channels to the audio service (None: plaintext)."""
        self._default_target = default_target
        self._channel_factory = channel_factory or (lambda target: _open_audio_channel(target, credentials))
        self._local_host_id = local_host_id if local_host_id is not None else host_id()
        self._map_local = map_local
        self._stubs: dict[str, audio_pb2_grpc.AudioServiceStub] = {}
        self._channels: list[grpc.aio.Channel] = []
        # The configured target and each address it lists: the only ones a handle may name.
        self._allowed_targets = {
            _loopback_as_one(target)
            for target in (default_target, *(item.strip() for item in default_target.split(",") if item.strip()))
        }
        # Handles confirmed by the audio service, by audio_id (oldest dropped first).
        self._verified: dict[str, AudioRef] = {}

    @contextlib.asynccontextmanager
    async def open(
        self,
        audio: AudioRef | common_pb2.AudioHandle,
        time_range: TimeRange | None = None,
    ) -> AsyncIterator[Samples]:
        """Yield the samples of `time_range` (None: all) as a 1-D float32 array.

        Zero-copy and read-only when mapped locally; a fresh array when read
        over gRPC. Do not keep it past the block. Raises `NotFoundError` for
        unknown or released audio, `UnavailableError` when the audio service
        cannot be reached.
        """
        ref = audio if isinstance(audio, AudioRef) else audio_ref_from_proto(audio)
        ref = await self._checked(ref)
        start, end = sample_range(time_range, ref.sample_rate_hertz, ref.sample_count)
        with contextlib.ExitStack() as stack:
            mapped = self._map(ref, stack)
            if mapped is not None:
                yield mapped[start:end]
                return
            yield await self._read_remote(ref, start, end)

    async def read(self, audio: AudioRef | common_pb2.AudioHandle, time_range: TimeRange | None = None) -> Samples:
        """Like `open`, but returns a private copy the caller may keep."""
        async with self.open(audio, time_range) as samples:
            return np.array(samples, dtype=np.float32, copy=True)

    async def _checked(self, ref: AudioRef) -> AudioRef:
        """The handle as the audio service issued it. Its target must be the
        configured audio service (never an address a caller names), its
        segment one of the suite's; and with an audio service configured, the
        handle must match what that service says of its audio_id (checked
        once per audio_id), so a forged handle maps no other memory."""
        if ref.audio_service_target and _loopback_as_one(ref.audio_service_target) not in self._allowed_targets:
            raise PermissionDeniedError(
                f"audio {ref.audio_id} names the audio service {ref.audio_service_target!r}, which is not the one "
                "this service is configured to read from (SUBTITLER_AUDIO_TARGET)"
            )
        if ref.segment_name and (
            not ref.segment_name.startswith(SEGMENT_NAME_PREFIX) or not _SEGMENT_NAME.fullmatch(ref.segment_name)
        ):
            raise InvalidInputError(
                f"audio {ref.audio_id} names the shared-memory segment {ref.segment_name!r}, which the audio service "
                "never issues: pass the handle DecodeFile or UploadAudio returned"
            )
        if not (self._default_target and self._maps_locally(ref)):
            return ref  # not mapped here: read over gRPC, where the audio service itself checks the audio_id
        issued = self._verified.get(ref.audio_id)
        if issued is None:
            try:
                handle = await self._stub(self._default_target).GetAudio(
                    audio_pb2.GetAudioRequest(audio_id=ref.audio_id), timeout=_VERIFY_TIMEOUT_S
                )
            except grpc.aio.AioRpcError as error:
                if error.code() == grpc.StatusCode.UNIMPLEMENTED:
                    raise UnavailableError("the audio service is too old to confirm handles; upgrade it") from error
                raise _domain_error(error, ref, self._default_target) from error
            issued = audio_ref_from_proto(handle)
            if len(self._verified) >= _MAX_VERIFIED_HANDLES:
                self._verified.pop(next(iter(self._verified)))
            self._verified[ref.audio_id] = issued
        if (issued.segment_name, issued.sample_count, issued.sample_rate_hertz, issued.host_id) != (
            ref.segment_name,
            ref.sample_count,
            ref.sample_rate_hertz,
            ref.host_id,
        ):
            raise PermissionDeniedError(
                f"the handle of audio {ref.audio_id} is not the one the audio service issued: pass the handle "
                "DecodeFile or UploadAudio returned, unchanged"
            )
        return ref

    def _maps_locally(self, ref: AudioRef) -> bool:
        """Whether `ref`'s segment is mapped from this host's shared memory (else read over gRPC)."""
        return self._map_local and bool(ref.segment_name) and ref.host_id == self._local_host_id

    def _map(self, ref: AudioRef, stack: contextlib.ExitStack) -> Samples | None:
        if not self._maps_locally(ref):
            return None
        try:
            return stack.enter_context(attach_samples(ref.segment_name, ref.sample_count))
        except NotFoundError:
            logger.debug("segment %s of audio %s is not mapped here; reading over gRPC", ref.segment_name, ref.audio_id)
            return None

    def _stub(self, target: str) -> audio_pb2_grpc.AudioServiceStub:
        stub = self._stubs.get(target)
        if stub is None:
            channel = self._channel_factory(target)
            self._channels.append(channel)
            stub = self._stubs[target] = audio_pb2_grpc.AudioServiceStub(channel)
        return stub

    async def _read_remote(self, ref: AudioRef, start: int, end: int) -> Samples:
        # The handle's own target only when it is one of the configured ones (checked in _checked).
        target = ref.audio_service_target or self._default_target
        if not target:
            raise UnavailableError(
                f"audio {ref.audio_id} is not in this host's shared memory and no audio service target is "
                "configured to read it from (set SUBTITLER_AUDIO_TARGET)"
            )
        samples = np.empty(end - start, dtype=np.float32)
        if end == start:
            return samples
        request = audio_pb2.ReadSamplesRequest(
            audio_id=ref.audio_id,
            range=time_range_to_proto(TimeRange(start / ref.sample_rate_hertz, end / ref.sample_rate_hertz)),
        )
        received = 0
        try:
            async for response in self._stub(target).ReadSamples(request):
                chunk = np.frombuffer(response.samples_f32le, dtype=SAMPLE_DTYPE)
                position = response.offset_samples - start
                if position < 0 or position + chunk.size > samples.size:
                    raise UnavailableError(
                        f"audio service at {target} sent samples [{response.offset_samples}, "
                        f"{response.offset_samples + chunk.size}) outside the range [{start}, {end}) asked for"
                    )
                samples[position : position + chunk.size] = chunk
                received += chunk.size
        except grpc.aio.AioRpcError as error:
            raise _domain_error(error, ref, target) from error
        if received != samples.size:
            raise UnavailableError(
                f"audio service at {target} sent {received} of the {samples.size} samples of audio "
                f"{ref.audio_id} asked for; retry"
            )
        logger.debug(
            "read %d samples (%d bytes) of audio %s from %s",
            received,
            received * BYTES_PER_SAMPLE,
            ref.audio_id,
            target,
        )
        return samples

    async def close(self) -> None:
        """Close the channels this reader opened."""
        channels, self._channels = self._channels, []
        self._stubs.clear()
        for channel in channels:
            await channel.close()


def _loopback_as_one(target: str) -> str:
    """`target` with "localhost" written as 127.0.0.1, so the two name one address."""
    host, separator, port = target.rpartition(":")
    return f"127.0.0.1:{port}" if separator and host == "localhost" else target


def _domain_error(error: grpc.aio.AioRpcError, ref: AudioRef, target: str) -> Exception:
    code = error.code()
    if code == grpc.StatusCode.NOT_FOUND:
        return NotFoundError(
            f"audio {ref.audio_id} is unknown to the audio service at {target} or was released "
            "(its lease may have expired): decode the media again, and renew the lease while the "
            "audio is in use"
        )
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return UnavailableError(f"audio service at {target} is unavailable: {error.details()}")
    return error

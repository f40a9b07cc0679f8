"""How many live streams the gateway takes at once: as many as its ASR
workers hold at the latency targets, measured, not a fixed number.

A stream at real-time pace asks the workers for the decodes it cannot shed
(finals, an utterance's first step, the steps long speech is cut at: interim
steps wait for spare workers, and a stream behind lengthens its steps,
gateway.live.stream), and a final waits for the decodes ahead of it. So the
streams held are the workers' time, kept below full use, over what one
stream needs of it (`common.machine.capacity.LiveLoadModel`): the time of a live
decode as the ASR service measured it on this machine (its warm-up, then its
live work), times the decodes a stream needs a second, as the gateway
measures them on the streams it serves. A stream beyond that, or any new stream while
the workers are behind, is refused at once with RESOURCE_EXHAUSTED and a
retry delay, rather than admitted to make every stream late.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from common.errors import ResourceExhaustedError
from common.machine.capacity import LiveLoadModel, WorkRate
from gateway.asr_capacity import AsrCapacity
from gateway.config import LiveConfig
from gateway.live.decoder import LiveDecoder

logger = logging.getLogger(__name__)

# The share of the workers' time live decodes may take while the latency
# targets hold (bench.streaming --ramp: at 0.7 the gateway admitted 12
# streams where 10 held natively and 7 where 4-6 held with AVX2 forced; at
# 0.6 it takes 10 and 6), and what a stream needs before any has been
# measured: decodes it cannot shed per second of its audio (bench.streaming:
# about 0.4 on speech with pauses; long continuous speech needs more).
UTILIZATION = 0.6
DEFAULT_DECODES_PER_STREAM_S = 0.5
LIVE_LOAD = LiveLoadModel(decodes_per_stream_s=DEFAULT_DECODES_PER_STREAM_S, utilization=UTILIZATION)
# Stream audio between two reports of a stream's decodes to the measure.
REPORT_EVERY_S = 20.0
# Streams a gateway takes at most whatever the measure says (each holds a
# VAD stream, buffers and a gRPC call).
MAX_STREAMS_CEILING = 64
# Behind by this much (`LiveDecoder.pressure`: the oldest request waited
# twice what marks the streams as behind), new streams wait for the catch-up.
REFUSE_PRESSURE = 2.0


@dataclass(frozen=True)
class StreamLimit:
    """The streams the gateway takes now, and why."""

    streams: int
    reason: str


class StreamAdmission:
    """Admits a new live stream or refuses it. Used from the gateway's event loop."""

    def __init__(self, capacity: AsrCapacity, decoder: LiveDecoder, config: LiveConfig) -> None:
        self._capacity = capacity
        self._decoder = decoder
        self._config = config
        self._last_limit: StreamLimit | None = None
        # Decodes the streams could not shed per second of their audio (the
        # WorkRate's "seconds" are decodes here), recent streams weighing most.
        self._needed = WorkRate(half_life_s=300.0)
        self._needed.prime(60.0, 60.0 * DEFAULT_DECODES_PER_STREAM_S)

    def observe(self, audio_s: float, needed_decodes: int) -> None:
        """A stream's `audio_s` more seconds needed `needed_decodes` decodes it could not shed."""
        self._needed.observe(audio_s, float(needed_decodes))

    @property
    def decodes_per_stream_s(self) -> float:
        """Decodes a stream needs a second of its audio, as measured so far."""
        return self._needed.seconds_per_unit

    async def limit(self) -> StreamLimit:
        """The streams held now, with the ASR's figures asked again if they are old."""
        await self._capacity.refresh()
        return self.current()

    def current(self) -> StreamLimit:
        """The streams held: the operator's SUBTITLER_GATEWAY_MAX_STREAMS,
        else what the ASR's last measured live decode time allows."""
        if self._config.max_streams:
            return StreamLimit(self._config.max_streams, "SUBTITLER_GATEWAY_MAX_STREAMS")
        figures = self._capacity.figures
        if figures.live_decode_s <= 0.0:
            # Not measured yet (the ASR is still warming up, or predates the measure): one per worker.
            limit = StreamLimit(figures.workers, f"{figures.workers} ASR workers, live decode time not measured yet")
        else:
            needed = self.decodes_per_stream_s
            model = LiveLoadModel(decodes_per_stream_s=needed, utilization=UTILIZATION)
            streams = min(MAX_STREAMS_CEILING, max(1, model.streams(figures.workers, figures.live_decode_s)))
            limit = StreamLimit(
                streams,
                f"{figures.workers} ASR workers measured at {figures.live_decode_s:.2f} s a live decode, "
                f"{needed:.2f} decodes a second a stream",
            )
        if limit != self._last_limit:
            logger.info("live streams held: %d (%s)", limit.streams, limit.reason)
            self._last_limit = limit
        return limit

    async def check(self, open_streams: int) -> None:
        """Raises `ResourceExhaustedError` when a new stream must wait:
        `open_streams` are already what the machine holds, or the streams
        open are behind."""
        limit = await self.limit()
        retry_s = self._config.retry_after_s
        if open_streams >= limit.streams:
            raise ResourceExhaustedError(
                f"the gateway holds {limit.streams} live streams at once on this machine ({limit.reason}) and "
                f"has them open; retry in {retry_s:g} s",
                retry_after_s=retry_s,
            )
        if self._decoder.pressure >= REFUSE_PRESSURE:
            raise ResourceExhaustedError(
                f"live captions are behind on this machine now ({self._decoder.oldest_wait_s:.1f} s of decoding "
                f"waits); retry in {retry_s:g} s",
                retry_after_s=retry_s,
            )

"""Builds the gateway: machine plan, store, event hub, peer channels, ASR
capacity, scheduler, servicers."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
from collections.abc import Callable

import grpc

from common.rpc import metrics
from common.rpc.channels import open_channel
from common.rpc.machine_plan import plan_machine_in_thread
from common.rpc.server import RunningServer, ServerConfig, create_server
from common.rpc.status import LoadFigures, MeasuredFigures, StatusReport, StatusServicer, choose, status_registration
from gateway.api.auth import Authenticator, TokenTable
from gateway.api.live_servicer import LiveCaptioner
from gateway.api.servicer import GatewayServicer
from gateway.asr_capacity import AsrCapacity
from gateway.config import GatewayConfig
from gateway.jobs.events import EventHub
from gateway.jobs.run.pipeline import Peers
from gateway.jobs.scheduler import JobScheduler
from gateway.live.admission import MAX_STREAMS_CEILING, StreamAdmission
from gateway.live.decoder import LiveDecoder
from gateway.store.async_store import AsyncJobStore
from subtitler.align.v1 import align_pb2, align_pb2_grpc
from subtitler.asr.v1 import asr_pb2, asr_pb2_grpc
from subtitler.audio.v1 import audio_pb2, audio_pb2_grpc
from subtitler.diarize.v1 import diarize_pb2, diarize_pb2_grpc
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc
from subtitler.status.v1 import status_pb2, status_pb2_grpc
from subtitler.vad.v1 import vad_pb2, vad_pb2_grpc

logger = logging.getLogger(__name__)

PEER_STATUS_TIMEOUT_S = 3.0
# How often a watcher on a shared store reads it even when it heard of no event.
WATCH_FALLBACK_READ_S = 5.0


def _service_name(module: object, service: str) -> str:
    return module.DESCRIPTOR.services_by_name[service].full_name  # type: ignore[attr-defined]


def replica_count(target: str) -> int:
    """Replicas a target lists (a comma-separated list), else 1."""
    return max(1, len([item for item in target.split(",") if item.strip()]))


class GatewayStatusServicer(StatusServicer):
    """The gateway's status, with each stage service's when asked."""

    def __init__(
        self,
        report: StatusReport,
        figures: Callable[[], LoadFigures],
        peers: dict[str, status_pb2_grpc.StatusServiceStub],
        auth: Authenticator,
    ) -> None:
        super().__init__(report, figures)
        self._peers = peers
        self._auth = auth

    async def GetStatus(
        self, request: status_pb2.GetStatusRequest, context: grpc.aio.ServicerContext
    ) -> status_pb2.GetStatusResponse:
        self._auth.caller(context)  # any client with a valid token may look
        reply = await super().GetStatus(request, context)
        if not request.include_peers:
            return reply

        async def ask(name: str, stub: status_pb2_grpc.StatusServiceStub) -> status_pb2.GetStatusResponse | str:
            try:
                return await stub.GetStatus(status_pb2.GetStatusRequest(), timeout=PEER_STATUS_TIMEOUT_S)
            except grpc.aio.AioRpcError as error:
                return f"{name}: {error.code().name}: {error.details()}"

        answers = await asyncio.gather(*(ask(name, stub) for name, stub in self._peers.items()))
        for answer in answers:
            if isinstance(answer, str):
                reply.unreachable_peers.append(answer)
            else:
                reply.peers.append(answer)
        return reply


async def create(config: GatewayConfig) -> RunningServer:
    """Starts the gateway on `config.server` and recovers unfinished jobs."""
    plan = await plan_machine_in_thread("gateway", config.server.cpu_affinity, [config.data_dir])
    jobs, jobs_choice = choose(
        "SUBTITLER_GATEWAY_MAX_CONCURRENT_JOBS",
        config.max_concurrent_jobs,
        plan.tuning.gateway_max_concurrent_jobs,
        plan.tuning.reason("gateway_max_concurrent_jobs"),
    )
    config = dataclasses.replace(config, max_concurrent_jobs=int(jobs))
    store = await AsyncJobStore.open(config.store or config.data_dir / "jobs.sqlite3")
    # On a shared store, watchers hear of other gateways' events (NOTIFY),
    # and read the store now and then in case a notice was missed.
    events = EventHub(store, max_watchers=config.max_watchers, poll_s=WATCH_FALLBACK_READ_S if store.shared else None)
    await events.listen()
    channels = _open_channels(config)
    status_stubs = {name: status_pb2_grpc.StatusServiceStub(channel) for name, channel in channels.items()}
    asr_capacity = AsrCapacity(
        status_stubs["asr"],
        replica_count=replica_count(config.asr_target),
        fixed_workers=config.asr_workers,
        fixed_batch_size=config.asr_batch_size,
    )
    peers = _peers(channels, asr_capacity)
    scheduler = JobScheduler(store, events, peers, config)
    auth = Authenticator(TokenTable.from_file(config.tokens_file) if config.tokens_file else None)
    decoder = LiveDecoder(peers.asr, asr_capacity)
    admission = StreamAdmission(asr_capacity, decoder, config.live)
    live = LiveCaptioner(peers.vad, peers.asr, decoder, config.live, admission, peers.audio)
    servicer = GatewayServicer(store, events, scheduler, config.max_upload_bytes, auth, live, peers.asr)
    report = plan.report([jobs_choice])
    _track_jobs(scheduler)
    figures = functools.partial(_figures, config, scheduler, asr_capacity, live, admission)
    status = GatewayStatusServicer(report, figures, status_stubs, auth)
    running = create_server(
        _server_config(config),
        "gateway",
        [
            (
                gateway_pb2_grpc.add_GatewayServiceServicer_to_server,
                servicer,
                _service_name(gateway_pb2, "GatewayService"),
            ),
            status_registration(status),
        ],
    )
    await _recover_jobs_and_serve(running, store, events, channels, scheduler, asr_capacity, decoder)
    return running


async def _recover_jobs_and_serve(
    running: RunningServer,
    store: AsyncJobStore,
    events: EventHub,
    channels: dict[str, grpc.aio.Channel],
    scheduler: JobScheduler,
    asr_capacity: AsrCapacity,
    decoder: LiveDecoder,
) -> None:
    """Takes the jobs left unfinished, starts the server, the sweeper and the
    ASR capacity's refresh, and turns SERVING; on stop, ends those and closes
    the decoder, the scheduler, the event hub, the channels and the store."""
    loop = asyncio.get_running_loop()

    async def stop_jobs_and_close() -> None:
        sweeper.cancel()
        capacity_watch.cancel()
        await decoder.close()
        await scheduler.shutdown()
        await events.close()
        for channel in channels.values():
            await channel.close()
        await store.close()

    running.on_stop.append(stop_jobs_and_close)
    # Jobs left unfinished are taken before the server takes calls.
    unfinished = await scheduler.start()
    if unfinished:
        logger.info("the store holds %d unfinished jobs", unfinished)
    await running.start()
    sweeper = loop.create_task(scheduler.sweep_forever())
    capacity_watch = loop.create_task(asr_capacity.keep_fresh())
    await running.set_serving(True)


def _open_channels(config: GatewayConfig) -> dict[str, grpc.aio.Channel]:
    """A channel to each stage service, by its name ("audio", "vad", "asr", "align", "diarize")."""
    targets = {
        "audio": (config.audio_target, _service_name(audio_pb2, "AudioService")),
        "vad": (config.vad_target, _service_name(vad_pb2, "VadService")),
        "asr": (config.asr_target, _service_name(asr_pb2, "AsrService")),
        "align": (config.align_target, _service_name(align_pb2, "AlignService")),
        "diarize": (config.diarize_target, _service_name(diarize_pb2, "DiarizeService")),
    }
    credentials = config.server.tls.channel_credentials()
    return {name: open_channel(target, service, credentials=credentials) for name, (target, service) in targets.items()}


def _peers(channels: dict[str, grpc.aio.Channel], asr_capacity: AsrCapacity) -> Peers:
    """The stage services' stubs on `channels`, which the jobs and live captions call."""
    return Peers(
        audio=audio_pb2_grpc.AudioServiceStub(channels["audio"]),
        vad=vad_pb2_grpc.VadServiceStub(channels["vad"]),
        asr=asr_pb2_grpc.AsrServiceStub(channels["asr"]),
        align=align_pb2_grpc.AlignServiceStub(channels["align"]),
        diarize=diarize_pb2_grpc.DiarizeServiceStub(channels["diarize"]),
        asr_capacity=asr_capacity,
    )


def _track_jobs(scheduler: JobScheduler) -> None:
    """The gateway's own Prometheus gauges: jobs by state, and the expected wait of a job submitted now."""
    metrics.gauge(
        "gateway",
        "jobs",
        "Jobs by state now (queued: the queue's length)",
        lambda: {"queued": float(scheduler.queued_count), "running": float(scheduler.running_count)},
    )
    metrics.gauge(
        "gateway",
        "queue_wait_seconds",
        "Seconds a job submitted now is expected to wait for its turn, at the ASR's measured rate",
        lambda: scheduler.queue_wait.wait_s,
    )


def _figures(
    config: GatewayConfig,
    scheduler: JobScheduler,
    asr_capacity: AsrCapacity,
    live: LiveCaptioner,
    admission: StreamAdmission,
) -> LoadFigures:
    """What the status reports now: jobs running and queued, live streams, the ASR's measured capacity."""
    return LoadFigures(
        capacity=config.max_concurrent_jobs,
        running=scheduler.running_count,
        queued=scheduler.queued_count,
        preferred_batch_size=asr_capacity.figures.preferred_batch_size,
        live_streams=live.open_streams,
        live_buffered_samples=live.buffered_samples,
        measured=MeasuredFigures(
            audio_seconds_per_second=asr_capacity.figures.audio_seconds_per_second,
            live_decode_s=asr_capacity.figures.live_decode_s,
            live_streams=admission.current().streams,
            source="the ASR's measure" if asr_capacity.figures.live_decode_s else "not measured yet",
        ),
        queue_wait_s=scheduler.queue_wait.wait_s,
    )


def _server_config(config: GatewayConfig) -> ServerConfig:
    """`config.server`, with room for the watch and live streams."""
    # Watch and live streams count against gRPC's limit too: give them room of their own.
    return config.server.with_more_rpcs(config.max_watchers + (config.live.max_streams or MAX_STREAMS_CEILING))

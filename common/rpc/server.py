"""Server bootstrap shared by every service: a `grpc.aio` server with the
standard health service, server reflection, one interceptor that maps domain
errors to status codes and writes one log line per RPC, and graceful shutdown
on SIGTERM.

A service's `server.py` does::

    async def create(config: VadConfig) -> RunningServer:
        engine = SpeechDetector(...)
        running = create_server(config.server, "vad", [
            (vad_pb2_grpc.add_VadServiceServicer_to_server, VadServicer(engine),
             vad_pb2.DESCRIPTOR.services_by_name["VadService"].full_name),
        ])
        await running.start()
        running.serve_when_ready(load_model)   # health SERVING once loaded
        return running

(the stage services, VAD among them, do it through
`common.rpc.stage.start_stage_server`, which adds the status service and
releases their audio reader and model threads on stop), and its
`__main__.py` does::

    config = VadConfig.from_env(os.environ)
    run_service("vad", config.server, lambda: create(config))

Tests call `create(config)` with port 0 and read `running.port`.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import logging
import os
import signal
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import grpc
import structlog
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from common import errors
from common.config import ConfigError, env_choice, env_float, env_int, env_path, env_str
from common.machine.affinity import validate_affinity_spec
from common.machine.memory import IdleMemoryRelease
from common.rpc import metrics
from common.rpc.retry_hint import RETRY_AFTER_KEY
from common.rpc.tls import TlsConfig

log = structlog.get_logger(__name__)

REQUEST_ID_KEY = "x-request-id"
JOB_ID_KEY = "x-job-id"

_STATUS_OF_ERROR: dict[type[errors.SuiteError], grpc.StatusCode] = {
    errors.InvalidInputError: grpc.StatusCode.INVALID_ARGUMENT,
    errors.NotFoundError: grpc.StatusCode.NOT_FOUND,
    errors.PermissionDeniedError: grpc.StatusCode.PERMISSION_DENIED,
    errors.ResourceExhaustedError: grpc.StatusCode.RESOURCE_EXHAUSTED,
    errors.UnavailableError: grpc.StatusCode.UNAVAILABLE,
    errors.FailedPreconditionError: grpc.StatusCode.FAILED_PRECONDITION,
    errors.CancelledError: grpc.StatusCode.CANCELLED,
    errors.DataLossError: grpc.StatusCode.DATA_LOSS,
    errors.UnauthenticatedError: grpc.StatusCode.UNAUTHENTICATED,
    errors.OutOfRangeError: grpc.StatusCode.OUT_OF_RANGE,
    errors.DeadlineExceededError: grpc.StatusCode.DEADLINE_EXCEEDED,
}


@dataclass(frozen=True)
class ServerConfig:
    """Where and how a service listens."""

    host: str = "127.0.0.1"
    # 0 picks a free port (tests); the bound port is written to port_file if set.
    port: int = 0
    port_file: Path | None = None
    # Concurrent RPCs beyond this are refused with RESOURCE_EXHAUSTED by gRPC.
    max_concurrent_rpcs: int = 64
    # Time in-flight RPCs get to finish after SIGTERM.
    grace_period_s: float = 10.0
    # Largest message accepted or sent (bytes).
    max_message_bytes: int = 64 * 1024 * 1024
    # Level of the process's logs (SUBTITLER_LOG_LEVEL, shared by every service).
    log_level: str = "INFO"
    # CPUs to run on: "auto" (the ASR's cores kept apart from the others' on
    # machines with 4 or more), "none", or a list like "0-3,6".
    cpu_affinity: str = "auto"
    # TLS of the listener and of the channels to peers (common.rpc.tls); default plaintext.
    tls: TlsConfig = field(default_factory=TlsConfig)
    # Prometheus metrics over HTTP on this port (common.rpc.metrics); None: none; 0: a free port.
    metrics_port: int | None = None
    metrics_port_file: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str], prefix: str, default_port: int) -> ServerConfig:
        """Reads `<prefix>HOST`, `PORT`, `PORT_FILE`, `MAX_CONCURRENT_RPCS`, `GRACE_PERIOD_S`, `CPU_AFFINITY`."""
        port_file = env.get(f"{prefix}PORT_FILE")
        cpu_affinity = env_str(env, f"{prefix}CPU_AFFINITY", "auto")
        try:
            validate_affinity_spec(cpu_affinity)
        except ValueError as error:
            raise ConfigError(f"{prefix}CPU_AFFINITY={cpu_affinity!r}: {error}") from None
        metrics_port_file = env.get(f"{prefix}METRICS_PORT_FILE")
        metrics_port = (
            env_int(env, f"{prefix}METRICS_PORT", 0, minimum=0)
            if env.get(f"{prefix}METRICS_PORT", "").strip()
            else None
        )
        return cls(
            metrics_port=metrics_port,
            metrics_port_file=env_path(env, f"{prefix}METRICS_PORT_FILE", "") if metrics_port_file else None,
            host=env_str(env, f"{prefix}HOST", "127.0.0.1"),
            port=env_int(env, f"{prefix}PORT", default_port, minimum=0),
            port_file=env_path(env, f"{prefix}PORT_FILE", "") if port_file else None,
            max_concurrent_rpcs=env_int(env, f"{prefix}MAX_CONCURRENT_RPCS", 64, minimum=1),
            grace_period_s=env_float(env, f"{prefix}GRACE_PERIOD_S", 10.0, minimum=0.0),
            log_level=env_choice(env, "SUBTITLER_LOG_LEVEL", "INFO", ("DEBUG", "INFO", "WARNING", "ERROR")),
            cpu_affinity=cpu_affinity,
            tls=TlsConfig.from_env(env, prefix),
        )

    def with_more_rpcs(self, rpcs: int) -> ServerConfig:
        """This config with room for `rpcs` more at once: streams that hold
        an RPC each for as long as they run, beside the ordinary calls."""
        return replace(self, max_concurrent_rpcs=self.max_concurrent_rpcs + rpcs)


REFLECTION_V1 = "grpc.reflection.v1.ServerReflection"


def _enable_reflection(service_names: Sequence[str], server: grpc.aio.Server) -> None:
    """Server reflection as v1 (what current grpcurl and Postman ask first)
    and v1alpha. grpcio-reflection ships v1alpha only; v1's messages are the
    same on the wire, so the one servicer answers both names."""
    from grpc_reflection.v1alpha import _async as reflection_aio
    from grpc_reflection.v1alpha import reflection_pb2

    servicer = reflection_aio.ReflectionServicer((*service_names, reflection.SERVICE_NAME))
    for name in (reflection.SERVICE_NAME, REFLECTION_V1):
        handlers = {
            "ServerReflectionInfo": grpc.stream_stream_rpc_method_handler(
                servicer.ServerReflectionInfo,
                request_deserializer=reflection_pb2.ServerReflectionRequest.FromString,
                response_serializer=reflection_pb2.ServerReflectionResponse.SerializeToString,
            )
        }
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(name, handlers),))


def status_of(error: BaseException) -> tuple[grpc.StatusCode, str]:
    """The status code and message a caller gets for an exception."""
    if isinstance(error, errors.SuiteError):
        for kind in type(error).__mro__:
            if kind in _STATUS_OF_ERROR:
                return _STATUS_OF_ERROR[kind], str(error)
    if isinstance(error, grpc.aio.AioRpcError):
        # A peer service's answer keeps its meaning for our caller.
        return error.code(), error.details() or error.code().name
    return grpc.StatusCode.INTERNAL, "internal error"


class _RpcScope:
    """Request id, logging and error mapping around one RPC."""

    def __init__(self, service: str, method: str, context: grpc.aio.ServicerContext) -> None:
        self.service = service
        self.method = method
        self.context = context
        metrics.IN_FLIGHT.labels(service).inc()
        metadata = {item.key: item.value for item in (context.invocation_metadata() or ())}
        self.request_id = str(metadata.get(REQUEST_ID_KEY) or uuid.uuid4().hex[:16])
        self.job_id = str(metadata.get(JOB_ID_KEY, ""))
        self.started = time.perf_counter()
        # Read now: asking a cancelled call for its peer can crash grpc's core.
        self.peer = context.peer()

    def bind(self) -> None:
        structlog.contextvars.bind_contextvars(request_id=self.request_id, job_id=self.job_id or None)

    async def fail(self, error: BaseException) -> None:
        code, message = status_of(error)
        if code == grpc.StatusCode.INTERNAL:
            log.error("rpc failed with a bug", method=self.method, exc_info=error)
            message = f"internal error (request id {self.request_id})"
        if isinstance(error, errors.ResourceExhaustedError) and error.retry_after_s is not None:
            self.context.set_trailing_metadata(((RETRY_AFTER_KEY, f"{error.retry_after_s:g}"),))
        # Bounded: a message that echoes a huge request value would be refused by the client.
        await self.context.abort(code, errors.bounded_message(message))

    def finish(self, code: grpc.StatusCode) -> None:
        duration_s = time.perf_counter() - self.started
        metrics.IN_FLIGHT.labels(self.service).dec()
        metrics.RPCS.labels(self.service, self.method, code.name).inc()
        metrics.RPC_SECONDS.labels(self.service, self.method).observe(duration_s)
        log.info(
            "rpc",
            method=self.method,
            peer=self.peer,
            code=code.name,
            duration_ms=round(duration_s * 1000, 1),
        )
        structlog.contextvars.unbind_contextvars("request_id", "job_id")


class ErrorMappingInterceptor(grpc.aio.ServerInterceptor):
    """Maps domain errors to status codes, logs one canonical line per RPC
    and counts it in the metrics of `service`."""

    def __init__(self, service: str = "", idle_release: IdleMemoryRelease | None = None) -> None:
        self._service = service
        self._idle_release = idle_release

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(handler_call_details)
        if handler is None:
            return handler
        method = handler_call_details.method.rsplit("/", 1)[-1]
        deserializer = _tolerant(handler.request_deserializer)
        work = self._idle_release if IdleMemoryRelease.is_work(handler_call_details.method) else None
        if handler.unary_unary:
            return grpc.unary_unary_rpc_method_handler(
                _wrap_unary(self._service, method, handler.unary_unary, work=work),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.stream_unary:
            return grpc.stream_unary_rpc_method_handler(
                _wrap_unary(self._service, method, handler.stream_unary, streamed=True, work=work),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        if handler.unary_stream:
            return grpc.unary_stream_rpc_method_handler(
                _wrap_stream(self._service, method, handler.unary_stream, work=work),
                request_deserializer=deserializer,
                response_serializer=handler.response_serializer,
            )
        return grpc.stream_stream_rpc_method_handler(
            _wrap_stream(self._service, method, handler.stream_stream, streamed=True, work=work),
            request_deserializer=deserializer,
            response_serializer=handler.response_serializer,
        )


@dataclass(frozen=True)
class _Undecodable:
    """A request message that could not be parsed (bad bytes, a string that is not UTF-8)."""

    reason: str


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    """`deserializer`, answering `_Undecodable` instead of raising, so the
    RPC fails with INVALID_ARGUMENT and a message rather than gRPC's UNKNOWN."""
    if deserializer is None:
        return None

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as error:  # noqa: BLE001 - protobuf raises DecodeError, and ValueError for bad UTF-8
            return _Undecodable(str(error) or type(error).__name__)

    return parse


def _checked(request: Any) -> Any:
    if isinstance(request, _Undecodable):
        raise errors.InvalidInputError(
            f"the request is not a valid message ({request.reason}); text fields must be UTF-8"
        )
    return request


async def _checked_stream(requests: AsyncIterator[Any]) -> AsyncIterator[Any]:
    async for request in requests:
        yield _checked(request)


@contextlib.asynccontextmanager
async def _rpc_scope(
    service: str, method: str, context: grpc.aio.ServicerContext, work: IdleMemoryRelease | None = None
) -> AsyncIterator[None]:
    """Around the body of one RPC: binds its request and job ids to the logs,
    maps an error to its status (a bug to INTERNAL with the request id and no
    stack trace), and writes the canonical log line with the final code.

    Cancellation and aborts pass through unchanged (logged as CANCELLED and
    as the aborted code). `work`: told when the RPC starts and ends (what
    the service does counts as work; health probes do not)."""
    scope = _RpcScope(service, method, context)
    scope.bind()
    code = grpc.StatusCode.OK
    if work is not None:
        work.started()
    try:
        yield
    except asyncio.CancelledError:
        code = grpc.StatusCode.CANCELLED
        raise
    except grpc.aio.AbortError:
        code = context.code() or grpc.StatusCode.UNKNOWN
        raise
    except Exception as error:  # noqa: BLE001 - every error is mapped to a status here, once
        code = status_of(error)[0]
        await scope.fail(error)
    finally:
        scope.finish(code)
        if work is not None:
            work.ended()


def _wrap_unary(
    service: str,
    method: str,
    behaviour: Callable[..., Any],
    *,
    streamed: bool = False,
    work: IdleMemoryRelease | None = None,
) -> Callable[..., Awaitable[Any]]:
    async def run(request: Any, context: grpc.aio.ServicerContext) -> Any:
        async with _rpc_scope(service, method, context, work):
            return await behaviour(_checked_stream(request) if streamed else _checked(request), context)

    return run


def _wrap_stream(
    service: str,
    method: str,
    behaviour: Callable[..., Any],
    *,
    streamed: bool = False,
    work: IdleMemoryRelease | None = None,
) -> Callable[..., AsyncIterator[Any]]:
    async def run(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        async with _rpc_scope(service, method, context, work):
            produced = behaviour(_checked_stream(request) if streamed else _checked(request), context)
            if inspect.isasyncgen(produced):
                async for response in produced:
                    yield response
            else:
                await produced

    return run


Registration = tuple[Callable[[Any, grpc.aio.Server], None], Any, str]


@dataclass
class RunningServer:
    """A started (or startable) service: its server, bound port and health."""

    name: str
    server: grpc.aio.Server
    port: int
    health: health.aio.HealthServicer
    service_names: tuple[str, ...]
    config: ServerConfig
    # Told of every RPC by the interceptor; hands back the memory malloc keeps once the service is idle.
    idle_release: IdleMemoryRelease
    # Called after the server stopped, in order (release resources).
    on_stop: list[Callable[[], Awaitable[None]]] = field(default_factory=list)
    # The Prometheus endpoint, when the config asks for one.
    metrics_endpoint: metrics.MetricsEndpoint | None = None
    _background: set[asyncio.Task[None]] = field(default_factory=set)

    async def start(self) -> None:
        await self.set_serving(False)
        await self.server.start()
        watch = asyncio.get_running_loop().create_task(self.idle_release.watch())
        self._background.add(watch)
        watch.add_done_callback(self._background.discard)
        if self.config.metrics_port is not None and self.metrics_endpoint is None:
            self.metrics_endpoint = metrics.MetricsEndpoint(
                self.config.host, self.config.metrics_port, self.config.metrics_port_file
            )
            url = f"http://{self.config.host}:{self.metrics_endpoint.port}/metrics"
            log.info("metrics", service=self.name, url=url)
        if self.config.port_file is not None:
            tmp = self.config.port_file.with_suffix(".tmp")
            tmp.write_text(str(self.port))
            tmp.replace(self.config.port_file)
        log.info("listening", service=self.name, host=self.config.host, port=self.port)

    async def set_serving(self, serving: bool = True) -> None:
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        for name in ("", *self.service_names):
            await self.health.set(name, status)

    def serve_when_ready(self, load: Callable[[], Awaitable[None]]) -> None:
        """Runs `load` (e.g. model loading) in the background and marks the
        service SERVING once it succeeds. Until then health says NOT_SERVING."""

        async def load_then_serve() -> None:
            started = time.perf_counter()
            try:
                await load()
            except Exception:
                log.exception("loading failed; the service stays NOT_SERVING", service=self.name)
                return
            # What the loading and warm-up freed goes back once the service idles.
            self.idle_release.worked()
            await self.set_serving(True)
            log.info("ready", service=self.name, load_s=round(time.perf_counter() - started, 2))

        task = asyncio.get_running_loop().create_task(load_then_serve())
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    async def stop(self, grace_s: float | None = None) -> None:
        """Graceful stop: health NOT_SERVING, in-flight RPCs get the grace
        period, then resources are released."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(self.config.grace_period_s if grace_s is None else grace_s)
        for task in list(self._background):
            task.cancel()
        if self.metrics_endpoint is not None:
            self.metrics_endpoint.close()
            self.metrics_endpoint = None
        for callback in self.on_stop:
            try:
                await callback()
            except Exception:
                log.exception("stop callback failed", service=self.name)


def create_server(config: ServerConfig, name: str, registrations: Sequence[Registration]) -> RunningServer:
    """Builds a server with health, reflection and the error-mapping
    interceptor, bound to `config.host:config.port` (0: a free port)."""
    options = [
        ("grpc.max_receive_message_length", config.max_message_bytes),
        ("grpc.max_send_message_length", config.max_message_bytes),
        ("grpc.so_reuseport", 0),
    ]
    idle_release = IdleMemoryRelease()
    server = grpc.aio.server(
        interceptors=[ErrorMappingInterceptor(name, idle_release)],
        options=options,
        maximum_concurrent_rpcs=config.max_concurrent_rpcs,
    )
    service_names = []
    for add, servicer, full_name in registrations:
        add(servicer, server)
        service_names.append(full_name)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    _enable_reflection(
        (*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name),
        server,
    )
    credentials = config.tls.server_credentials()
    address = f"{config.host}:{config.port}"
    port = server.add_secure_port(address, credentials) if credentials else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"could not bind {config.host}:{config.port}")
    return RunningServer(name, server, port, health_servicer, tuple(service_names), config, idle_release)


def service_main(name: str, load: Callable[[], Any], create: Callable[[Any], Awaitable[RunningServer]]) -> None:
    """`python -m <service>`: reads the configuration with `load` (from the
    environment) and runs the service; a bad setting or a port that cannot
    be bound ends the process with one line that says what to change, never
    a traceback (exit 2 for configuration, 1 for the port)."""
    try:
        config = load()
        run_service(name, config.server, lambda: create(config))
    except ConfigError as error:
        print(f"{name}: configuration error: {error}", file=sys.stderr)  # noqa: T201 - before logging exists
        sys.exit(2)
    except (OSError, RuntimeError) as error:
        if "bind" not in str(error).lower() and not isinstance(error, OSError):
            raise
        variable = f"SUBTITLER_{name.upper()}_PORT"
        reason = str(error).split(";")[0]
        print(  # noqa: T201
            f"{name}: cannot listen: {reason}; is another process using the port? Choose another with {variable}",
            file=sys.stderr,
        )
        sys.exit(1)


def ignore_late_signals(loop: asyncio.AbstractEventLoop) -> None:
    """Once a process has stopped cleanly: Ctrl-C in a terminal signals the
    whole process group and a supervisor's SIGTERM may follow, so a second
    signal while Python shuts down must not turn the clean stop into a kill
    (exit -15)."""
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.remove_signal_handler(signum)
        signal.signal(signum, signal.SIG_IGN)


def run_service(name: str, config: ServerConfig, create: Callable[[], Awaitable[RunningServer]]) -> None:
    """Entry point of a service process: logs, start, wait for SIGTERM or
    SIGINT, graceful stop, exit 0."""
    from common.machine.memory import tune_malloc
    from common.machine.native_threads import limit_blas_threads
    from common.rpc.logs import configure_logging

    malloc = tune_malloc(os.environ)
    configure_logging(name, level=config.log_level)
    log.info("malloc tuned", service=name, arenas=malloc.arenas, keep_bytes=malloc.keep_bytes)
    log.info("BLAS threads limited", service=name, threads=limit_blas_threads())

    async def main() -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        running = await create()
        with contextlib.suppress(asyncio.CancelledError):
            await stop.wait()
        log.info("stopping", service=name, grace_s=running.config.grace_period_s)
        await running.stop()
        log.info("stopped", service=name)
        ignore_late_signals(loop)

    asyncio.run(main())
    logging.shutdown()

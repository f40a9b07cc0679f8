"""Live captions over a WebSocket: `GET /v1/live` bridges a browser (or any
WebSocket client) to the gateway's StreamingTranscribe.

The client's first message is text: a StreamingConfig in proto3 JSON (for
example `{"encoding": "AUDIO_ENCODING_FLOAT32", "sample_rate_hertz": 48000,
"interim_results": true}`). Then binary messages carry the audio bytes in
that format, and a text message `{"end": true}` says the audio is over (the
server then sends what is pending and closes). Each of the server's messages
is text: a StreamingTranscribeResponse in proto3 JSON (`interim`, `final`,
`speech_begin`, `speech_end`, `summary`), or `{"error": {"code", "message"}}`
before it closes when the gateway refuses or ends the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator

import aiohttp
import grpc
from aiohttp import web
from google.protobuf import json_format

from services.http.errors import auth_metadata
from services.http.jobs_api import to_json
from subtitler.gateway.v1 import gateway_pb2, gateway_pb2_grpc

logger = logging.getLogger(__name__)

# Largest WebSocket message taken (a second of 8-channel 192 kHz float32 is 6 MB).
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
# How long a client may take to send its config.
CONFIG_TIMEOUT_S = 30.0


class LiveApi:
    def __init__(self, gateway: gateway_pb2_grpc.GatewayServiceStub) -> None:
        self._gateway = gateway

    def add_routes(self, app: web.Application) -> None:
        app.router.add_get("/v1/live", self.live)

    async def live(self, request: web.Request) -> web.WebSocketResponse:
        socket = web.WebSocketResponse(max_msg_size=MAX_MESSAGE_BYTES, heartbeat=30)
        await socket.prepare(request)
        try:
            config = await self._config(socket)
        except ValueError as error:
            await _close_with_error(socket, "invalid_argument", str(error))
            return socket
        call = self._gateway.StreamingTranscribe(_requests(socket, config), metadata=auth_metadata(request))
        try:
            async for response in call:
                await socket.send_str(json.dumps(to_json(response), ensure_ascii=False))
        except grpc.aio.AioRpcError as error:
            if error.code() != grpc.StatusCode.CANCELLED or not socket.closed:
                await _close_with_error(socket, error.code().name.lower(), error.details() or error.code().name)
            return socket
        except (ConnectionResetError, aiohttp.ClientConnectionResetError):
            pass  # the client went away: the call is cancelled below
        except asyncio.CancelledError:
            # grpc raises this when the request iterator raised (the socket closed), though
            # this task was not cancelled; a real cancellation goes on.
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
            return socket
        finally:
            call.cancel()
        await socket.close()
        return socket

    async def _config(self, socket: web.WebSocketResponse) -> gateway_pb2.StreamingConfig:
        try:
            message = await socket.receive(timeout=CONFIG_TIMEOUT_S)
        except TimeoutError:
            raise ValueError(f"no config within {CONFIG_TIMEOUT_S:g} s: send a StreamingConfig as JSON first") from None
        if message.type != aiohttp.WSMsgType.TEXT:
            raise ValueError("the first message must be a StreamingConfig as JSON text, before any audio")
        config = gateway_pb2.StreamingConfig()
        try:
            json_format.Parse(message.data, config)
        except json_format.ParseError as error:
            raise ValueError(f"config: {error}") from None
        return config


async def _requests(
    socket: web.WebSocketResponse, config: gateway_pb2.StreamingConfig
) -> AsyncIterator[gateway_pb2.StreamingTranscribeRequest]:
    """The config, then the client's audio until it says the end (or goes)."""
    yield gateway_pb2.StreamingTranscribeRequest(config=config)
    async for message in socket:
        if message.type == aiohttp.WSMsgType.BINARY:
            yield gateway_pb2.StreamingTranscribeRequest(audio=message.data)
        elif message.type == aiohttp.WSMsgType.TEXT:
            with contextlib.suppress(json.JSONDecodeError, AttributeError):
                if json.loads(message.data).get("end"):
                    return
            await socket.send_str(json.dumps({"warning": 'text messages after the config: only {"end": true}'}))
        else:
            break
    # The socket closed without saying the end: raising cancels the call
    # (rather than finishing the utterance for nobody).
    raise ConnectionResetError("the client closed the socket")


async def _close_with_error(socket: web.WebSocketResponse, code: str, message: str) -> None:
    with contextlib.suppress(ConnectionResetError, aiohttp.ClientConnectionResetError):
        await socket.send_str(json.dumps({"error": {"code": code, "message": message}}))
    await socket.close(code=aiohttp.WSCloseCode.POLICY_VIOLATION if code == "invalid_argument" else 1011)

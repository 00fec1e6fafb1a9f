"""A scripted WebSocket app-server on loopback (wsproto on AnyIO), for the faults the real
one cannot produce on demand: a close frame mid-turn, an over-long message, pings, a peer that
stops reading. Everything real is tested against the real runtime; keep this file small.

``async with fake_ws_server(handler) as url`` serves ``handler(peer)`` for each connection
that presents ``Authorization: Bearer <token>`` (401 otherwise) and answers ``GET /readyz``.
"""

from __future__ import annotations

import json
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import anyio.abc
from anyio.streams.tls import TLSListener
from wsproto import ConnectionType, WSConnection
from wsproto.connection import ConnectionState
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Message,
    Ping,
    Pong,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.utilities import RemoteProtocolError

INITIALIZE_RESULT = {
    "userAgent": "fake_ws_server/0.0.0 (test)",
    "codexHome": "/tmp/fake-codex-home",
    "platformFamily": "unix",
    "platformOs": "linux",
}


class Peer:
    """The server's side of one accepted connection."""

    def __init__(self, stream: anyio.abc.ByteStream, ws: WSConnection) -> None:
        self.stream = stream
        self.ws = ws
        self.pongs: list[bytes] = []
        self.close_code: int | None = None
        """The code of the client's close frame, once it sent one."""
        self.pong_received = anyio.Event()
        self._parts: list[str] = []
        self._messages: list[dict[str, Any]] = []

    async def _pump(self) -> None:
        data = await self.stream.receive(65536)
        self.ws.receive_data(data)
        for event in self.ws.events():
            if isinstance(event, TextMessage):
                self._parts.append(event.data)
                if event.message_finished:
                    self._messages.append(json.loads("".join(self._parts)))
                    self._parts.clear()
            elif isinstance(event, Ping):
                await self.stream.send(self.ws.send(event.response()))
            elif isinstance(event, Pong):
                self.pongs.append(bytes(event.payload))
                self.pong_received.set()
            elif isinstance(event, CloseConnection):
                self.close_code = event.code
                if self.ws.state == ConnectionState.REMOTE_CLOSING:
                    await self.stream.send(self.ws.send(event.response()))
                raise anyio.EndOfStream

    async def read(self) -> dict[str, Any]:
        while not self._messages:
            await self._pump()
        return self._messages.pop(0)

    async def expect(self, method: str) -> dict[str, Any]:
        while True:
            message = await self.read()
            if message.get("method") == method:
                return message

    async def send(self, message: Any) -> None:
        await self.send_text(json.dumps(message))

    async def send_text(self, text: str) -> None:
        await self.stream.send(self.ws.send(Message(data=text)))

    async def reply(self, request: dict[str, Any], result: Any) -> None:
        await self.send({"id": request["id"], "result": result})

    async def handshake(self) -> None:
        await self.reply(await self.expect("initialize"), INITIALIZE_RESULT)
        await self.expect("initialized")

    async def ping(self, payload: bytes) -> None:
        await self.stream.send(self.ws.send(Ping(payload=payload)))

    async def close(self, code: int, reason: str) -> None:
        await self.stream.send(self.ws.send(CloseConnection(code=code, reason=reason)))

    async def hold(self) -> None:
        """Keep reading (answering pings and the close) until the client goes."""
        try:
            while True:
                await self._pump()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass


Handler = Callable[[Peer], Awaitable[None]]


async def _serve_one(stream: anyio.abc.ByteStream, handler: Handler, token: str | None) -> None:
    async with stream:
        ws = WSConnection(ConnectionType.SERVER)
        request: Request | None = None
        while request is None:
            try:
                data = await stream.receive(65536)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            if data.startswith(b"GET /readyz"):
                await stream.send(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n")
                return
            try:
                ws.receive_data(data)
                for event in ws.events():
                    if isinstance(event, Request):
                        request = event
            except RemoteProtocolError:  # not HTTP at all (a TLS ClientHello): hang up
                return
        headers = {bytes(k).lower(): bytes(v) for k, v in request.extra_headers}
        if token is not None and headers.get(b"authorization") != f"Bearer {token}".encode():
            await stream.send(ws.send(RejectConnection(status_code=401)))
            return
        await stream.send(ws.send(AcceptConnection()))
        try:
            await handler(Peer(stream, ws))
        except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass


@asynccontextmanager
async def fake_ws_server(
    handler: Handler,
    *,
    token: str | None = "right-token",
    unix_path: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
) -> AsyncIterator[str]:
    """Serve ``handler`` on 127.0.0.1 (or ``unix_path``); yields the URL to connect to."""
    listener: anyio.abc.Listener[Any]
    if unix_path is not None:
        listener = await anyio.create_unix_listener(unix_path)
        url = f"unix://{unix_path}"
    else:
        tcp = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        port = tcp.extra(anyio.abc.SocketAttribute.local_port)
        listener = tcp
        if ssl_context is not None:
            listener = TLSListener(tcp, ssl_context, standard_compatible=False)
        url = f"{'wss' if ssl_context else 'ws'}://127.0.0.1:{port}"

    async def serve_one(stream: anyio.abc.ByteStream) -> None:
        await _serve_one(stream, handler, token)

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(_serve_listener, listener, serve_one)
        yield url
        tg.cancel_scope.cancel()


async def _serve_listener(
    listener: anyio.abc.Listener[Any], serve_one: Callable[[Any], Awaitable[None]]
) -> None:
    try:
        await listener.serve(serve_one)
    except (anyio.BrokenResourceError, ssl.SSLError, OSError):
        pass

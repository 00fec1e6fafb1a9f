"""The HTTP/1.1 side of the gateway: h11 on an AnyIO byte stream, one task per connection.

h11 does the protocol (framing, keep-alive, chunked bodies), this module the I/O, as
``wsproto`` does for the WebSocket transport. Each request is read whole (bounded by
:data:`MAX_REQUEST_BYTES`) and handed to the gateway with a :class:`ResponseWriter`; while the
answer runs, a watcher reads the connection, so a runtime that goes away (an interrupted turn
drops its stream) cancels the answer at once instead of when the next write fails. The
connection is kept alive between requests, as the runtime's HTTP client expects, and closed
after :data:`IDLE_TIMEOUT` seconds without one.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable
from contextlib import suppress
from http import HTTPStatus
from typing import Final

import anyio
import anyio.abc
import attrs
import h11

from ._events import ClientGone

__all__ = [
    "IDLE_TIMEOUT",
    "MAX_REQUEST_BYTES",
    "HttpRequest",
    "ResponseWriter",
    "serve_connection",
]

logger = logging.getLogger("codex_anyio.gateway")

MAX_REQUEST_BYTES: Final = 64 * 1024 * 1024
"""Largest request body accepted (413 beyond): a long session's history with images stays
well below it, and a runaway client cannot exhaust memory."""

MAX_HEAD_BYTES: Final = 256 * 1024
"""Largest request line plus headers (h11's ``max_incomplete_event_size``)."""

IDLE_TIMEOUT: Final = 120.0
"""Seconds a kept-alive connection may wait for its next request (or a request for its
body) before it is closed; the runtime's client reconnects when it needs to."""

_READ_CHUNK: Final = 65536

_REASONS: Final = {status.value: status.phrase.encode() for status in HTTPStatus}


@attrs.frozen
class HttpRequest:
    """A complete request: method, target, lowercased headers, body."""

    method: str
    target: str
    headers: dict[str, str]
    body: bytes


class ResponseWriter:
    """Builds one response and sends it in as few writes as it can: :meth:`start` (status and
    headers) and :meth:`send` (body bytes) only buffer, :meth:`flush` writes what is buffered
    in one ``send``, :meth:`end` finishes and flushes; :meth:`abort` breaks the connection off
    mid-response.

    Coalescing matters: on loopback every write wakes the reading process, and the runtime's
    answer of a dozen small events cost a dozen wake-ups on both sides when written one by
    one.
    """

    def __init__(self, connection: h11.Connection, stream: anyio.abc.ByteStream) -> None:
        self._connection = connection
        self._stream = stream
        self._buffer = bytearray()
        self._body = bytearray()
        """Body bytes not framed yet: one chunk per flush, not one per event (h11 frames
        each ``Data`` it is given, ~10 microseconds apiece)."""
        self.started = False
        self.ended = False
        self.aborted = False
        self.client_gone = False
        """Set when the client went away before the response ended."""

    @property
    def buffered(self) -> int:
        """Bytes waiting for :meth:`flush`."""
        return len(self._buffer) + len(self._body)

    def _queue(self, event: h11.Event) -> None:
        self._buffer += self._connection.send(event) or b""

    def start(
        self, status: int, headers: list[tuple[str, str]], *, length: int | None = None
    ) -> None:
        """The status line and headers; without ``length`` the body is chunked."""
        if length is not None:
            headers = [*headers, ("content-length", str(length))]
        reason = _REASONS.get(status, b"")
        self.started = True
        self._queue(h11.Response(status_code=status, headers=headers, reason=reason))

    def send(self, data: bytes) -> None:
        """Body bytes (framed together with the others sent before the next flush)."""
        self._body += data

    def _frame_body(self) -> None:
        if self._body:
            self._queue(h11.Data(data=bytes(self._body)))
            self._body.clear()

    async def flush(self) -> None:
        """Write what is buffered."""
        self._frame_body()
        if not self._buffer:
            return
        data = bytes(self._buffer)
        self._buffer.clear()
        try:
            await self._stream.send(data)
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
            self.client_gone = True
            raise ClientGone from None

    async def end(self) -> None:
        """Finish the response and write it out."""
        self._frame_body()
        self._queue(h11.EndOfMessage())
        await self.flush()
        self.ended = True

    async def respond(
        self, status: int, body: bytes, headers: list[tuple[str, str]] | None = None
    ) -> None:
        """A whole response with a ``Content-Length`` body, in one write."""
        self.start(status, headers or [], length=len(body))
        if body:
            self.send(body)
        await self.end()

    async def abort(self) -> None:
        """Close the connection without finishing the response."""
        self.aborted = True
        self._buffer.clear()
        self._body.clear()
        self._connection.send_failed()
        await self._stream.aclose()


Handler = Callable[[HttpRequest, ResponseWriter], Awaitable[None]]


class _Reader:
    """The connection's reader once its first request has been read: one task for the rest
    of the connection's life, not one per request.

    It feeds h11 what arrives (a next request, pipelined or not) and tells the connection's
    task (:attr:`more`); the end of the connection while an answer runs cancels that answer,
    so a runtime that drops a stream (an interrupted turn) stops the answer at once. A
    client that sends more than a request's worth while an answer runs is treated as gone.

    Why a task for the connection rather than a watcher per request: the runtime makes one
    model call per connection and closes it, so this reader usually ends by itself, at that
    close; starting and cancelling a watcher for every call cost ~10 % of the gateway's CPU
    per call (measured; AnyIO formats the cancelling task's repr on every cancel).
    """

    __slots__ = ("answer", "connection", "ended", "more", "stream", "unread", "writer")

    def __init__(self, connection: h11.Connection, stream: anyio.abc.ByteStream) -> None:
        self.connection = connection
        self.stream = stream
        self.more = anyio.Event()
        self.ended = False
        self.unread = 0
        """Bytes fed to h11 since the connection's task last took a request."""
        self.answer: anyio.CancelScope | None = None
        self.writer: ResponseWriter | None = None

    async def run(self) -> None:
        while True:
            data = await _read(self.stream)
            self.unread += len(data)
            if not data or self.unread > MAX_REQUEST_BYTES + MAX_HEAD_BYTES:
                break
            self.connection.receive_data(data)
            self.more.set()
        self.ended = True
        with suppress(RuntimeError):  # h11 was told of the end already
            self.connection.receive_data(b"")
        self.more.set()
        writer, answer = self.writer, self.answer
        if answer is not None and writer is not None and not writer.ended:
            writer.client_gone = True
            answer.cancel()

    async def wait(self) -> None:
        """Until something more was fed to h11 (or the connection ended)."""
        if not self.ended:
            await self.more.wait()
            self.more = anyio.Event()


async def _receive(
    connection: h11.Connection, stream: anyio.abc.ByteStream, reader: _Reader | None
) -> None:
    if reader is not None:
        await reader.wait()
        return
    connection.receive_data(await _read(stream))


async def _read(stream: anyio.abc.ByteStream) -> bytes:
    """The next bytes from the client; ``b""`` once it is gone (closed, reset or broken)."""
    try:
        return await stream.receive(_READ_CHUNK)
    except (anyio.EndOfStream, anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
        return b""


async def _read_request(
    connection: h11.Connection,
    stream: anyio.abc.ByteStream,
    writer: ResponseWriter,
    reader: _Reader | None = None,
) -> HttpRequest | None:
    """The next complete request; None when the client is done (or broke the protocol, which
    is answered with 400, or sent too much, answered with 413)."""
    head: h11.Request | None = None
    body = bytearray()
    while True:
        try:
            event = connection.next_event()
        except h11.RemoteProtocolError as exc:
            await _refuse(writer, exc.error_status_hint, f"bad request: {exc}")
            return None
        if event is h11.NEED_DATA:
            if reader is not None and reader.ended:
                return None
            await _receive(connection, stream, reader)
        elif isinstance(event, h11.Request):
            head = event
        elif isinstance(event, h11.Data):
            body += event.data
            if len(body) > MAX_REQUEST_BYTES:
                await _refuse(writer, 413, f"request body over {MAX_REQUEST_BYTES} bytes")
                return None
        elif isinstance(event, h11.EndOfMessage):
            assert head is not None
            headers = {
                name.decode("latin-1").lower(): value.decode("latin-1")
                for name, value in head.headers
            }
            return HttpRequest(
                head.method.decode("ascii", "replace"),
                head.target.decode("latin-1"),
                headers,
                bytes(body),
            )
        else:  # ConnectionClosed, or PAUSED (which cannot happen before our response)
            return None


async def _refuse(writer: ResponseWriter, status: int, message: str) -> None:
    if writer._connection.our_state not in (h11.IDLE, h11.SEND_RESPONSE):
        return
    try:
        await writer.respond(status, message.encode(), [("content-type", "text/plain")])
    except (ClientGone, h11.LocalProtocolError):
        pass


async def serve_connection(stream: anyio.abc.ByteStream, handle: Handler) -> None:
    """Serve requests on one connection until the client closes it, goes idle, or a
    response was broken off. The first request is read here; from then on the connection's
    :class:`_Reader` reads."""
    connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD_BYTES)
    reader: _Reader | None = None
    async with stream, anyio.create_task_group() as tg:
        # The task group's own scope is the idle timeout while a request is awaited and the
        # answer's scope while it runs (what the reader cancels when the client goes): a
        # scope of their own for each, per call, cost a few per cent of the gateway's CPU.
        scope = tg.cancel_scope
        try:
            while True:
                writer = ResponseWriter(connection, stream)
                scope.deadline = anyio.current_time() + IDLE_TIMEOUT
                request = await _read_request(connection, stream, writer, reader)
                scope.deadline = math.inf
                if request is None:
                    return
                if reader is None:
                    reader = _Reader(connection, stream)
                    tg.start_soon(reader.run)
                reader.unread = 0
                reader.answer, reader.writer = scope, writer
                if reader.ended:  # gone while the request was read
                    writer.client_gone = True
                    scope.cancel()
                try:
                    await handle(request, writer)
                finally:
                    reader.answer = reader.writer = None
                if not writer.ended or connection.our_state is not h11.DONE:
                    return
                try:
                    connection.start_next_cycle()
                except h11.LocalProtocolError:  # the client asked to close after this one
                    return
        finally:
            if reader is not None and not reader.ended:
                tg.cancel_scope.cancel()  # the client is still connected: stop reading

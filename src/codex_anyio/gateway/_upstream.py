"""The forward's HTTP/1.1 client: h11 on AnyIO streams, with a small keep-alive pool.

One upstream per pool (the forward has one), so the pool is a stack of idle connections: a
call takes the most recently used one that is still fresh, or connects. What it does per call
is what a pass-through needs and no more: the request's head and body in one write, the
answer's head, then its body as it arrives (one item per read, so a burst of events the
upstream wrote at once goes on at once).

Why not httpcore (httpx's transport), which forwarded before: measured with
``benchmarks/gateway.py``, it cost about 1.2 ms of the gateway's 2.8 ms of CPU per model call
(its connection-pool bookkeeping, a readability probe that rebuilds AnyIO's socket attribute
table on every request, a cancel scope per write and read, trace hooks), while h11 itself, which
it wraps, costs a tenth of that. The gateway already speaks h11 on AnyIO streams on its server
side; this is the same on the client side.

A connection is reused only if the previous answer was read to its end and the socket has
nothing to read (a server that closed an idle connection leaves it readable at EOF). A reused
connection that fails before any byte of the answer arrived is retried once on a fresh one:
the upstream closed it between calls, a race no caller could avoid.
"""

from __future__ import annotations

import os
import select
import ssl
from collections.abc import AsyncGenerator, Iterable
from typing import Final

import anyio
import anyio.abc
import h11

__all__ = ["UpstreamError", "UpstreamPool", "UpstreamResponse", "UpstreamTimeout"]

_READ_CHUNK: Final = 65536


class UpstreamError(Exception):
    """The upstream could not be reached, or broke the protocol, or the connection broke."""


class UpstreamTimeout(UpstreamError):
    """The upstream did not connect, accept the request or send the next chunk in time."""


class _Connection:
    __slots__ = ("h11", "idle_since", "socket", "stream")

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        self.stream = stream
        self.h11 = h11.Connection(h11.CLIENT)
        self.socket = stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
        self.idle_since = 0.0

    def readable(self) -> bool:
        """Whether the idle socket has something to read: EOF (closed by the server) or
        bytes nobody asked for; either way it cannot carry the next call."""
        if self.socket is None:
            return False
        try:
            ready, _, _ = select.select([self.socket], [], [], 0)
        except (OSError, ValueError):
            return True
        return bool(ready)


class UpstreamResponse:
    """An answer's status and headers; :meth:`chunks` iterates its body. Use it with
    ``async with``: its connection goes back to the pool if the body was read to its end,
    and is closed if not (a turn interrupted mid-stream)."""

    __slots__ = (
        "_complete",
        "_connection",
        "_pool",
        "_read_timeout",
        "_settled",
        "headers",
        "status",
    )

    def __init__(
        self,
        pool: UpstreamPool,
        connection: _Connection,
        head: h11.Response,
        read_timeout: float,
    ) -> None:
        self._pool = pool
        self._connection = connection
        self._read_timeout = read_timeout
        self._settled = False
        self._complete = False
        self.status = head.status_code
        self.headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in head.headers]

    async def __aenter__(self) -> UpstreamResponse:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    @property
    def complete(self) -> bool:
        """Whether the body has been read to its end (true while its last chunk is handed
        out: the caller can send that chunk and its own end together)."""
        return self._complete

    async def aclose(self) -> None:
        """Close the connection unless the body was read to its end (then it was reused)."""
        if not self._settled:
            self._settled = True
            await _close(self._connection)

    async def chunks(self) -> AsyncGenerator[bytes, None]:
        """The body, one item per read from the upstream."""
        state = self._connection.h11
        stream = self._connection.stream
        while True:
            data = bytearray()
            done = False
            while True:
                event = _next_event(state)
                if event is h11.NEED_DATA:
                    break
                if type(event) is h11.Data:
                    data += event.data
                elif type(event) is h11.EndOfMessage:
                    done = True
                    break
                else:  # ConnectionClosed, PAUSED
                    raise UpstreamError("the upstream closed the connection mid-answer")
            if done:
                self._settled = self._complete = True
                await self._pool._release(self._connection)
            if data:
                yield bytes(data)
            if done:
                return
            state.receive_data(await _receive(stream, self._read_timeout))


class UpstreamPool:
    """Connections to one upstream (``scheme://host:port``); use with ``async with``."""

    def __init__(
        self,
        scheme: str,
        host: str,
        port: int,
        *,
        keepalive: int,
        expiry: float,
    ) -> None:
        self._host = host
        self._port = port
        self._tls = scheme == "https"
        self._keepalive = keepalive
        self._expiry = expiry
        self._idle: list[_Connection] = []
        self._context: ssl.SSLContext | None = None

    async def __aenter__(self) -> UpstreamPool:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        idle, self._idle = self._idle, []
        with anyio.CancelScope(shield=True):
            for connection in idle:
                await _close(connection)

    def _ssl_context(self) -> ssl.SSLContext:
        if self._context is None:
            # The system's (or SSL_CERT_FILE's) roots, as any HTTPS client; HTTP/1.1 only.
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            self._context = context
        return self._context

    async def _connect(self, connect_timeout: float) -> _Connection:
        try:
            with anyio.fail_after(connect_timeout):
                if self._tls:
                    stream: anyio.abc.ByteStream = await anyio.connect_tcp(
                        self._host,
                        self._port,
                        ssl_context=self._ssl_context(),
                        tls_standard_compatible=False,
                    )
                else:
                    stream = await anyio.connect_tcp(self._host, self._port)
        except TimeoutError:
            raise UpstreamTimeout(f"no connection within {connect_timeout:g} s") from None
        except (OSError, anyio.BrokenResourceError) as exc:
            # AnyIO's "All connection attempts failed" carries the last attempt's error.
            cause = exc.__cause__ if isinstance(exc.__cause__, OSError) else exc
            errno = getattr(cause, "errno", None)
            reason = os.strerror(errno) if errno else str(cause) or type(cause).__name__
            raise UpstreamError(f"cannot connect ({reason})") from None
        return _Connection(stream)

    async def _idle_connection(self) -> _Connection | None:
        """The freshest idle connection that can carry a call (stale ones are closed)."""
        now = anyio.current_time()
        while self._idle:
            connection = self._idle.pop()
            if now - connection.idle_since < self._expiry and not connection.readable():
                return connection
            await _close(connection)
        return None

    async def _release(self, connection: _Connection) -> None:
        state = connection.h11
        if state.our_state is h11.DONE and state.their_state is h11.DONE:
            state.start_next_cycle()
            if len(self._idle) < self._keepalive:
                connection.idle_since = anyio.current_time()
                self._idle.append(connection)
                return
        await _close(connection)

    async def request(
        self,
        method: str,
        target: str,
        headers: Iterable[tuple[str, str]],
        body: bytes,
        *,
        connect_timeout: float,
        read_timeout: float,
    ) -> UpstreamResponse:
        """Send one request and read the answer's head (then, in ``async with`` the answer,
        iterate :meth:`UpstreamResponse.chunks`)."""
        encoded = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers]
        head = h11.Request(method=method, target=target, headers=encoded)
        connection = await self._idle_connection()
        if connection is not None:
            answer = await self._exchange(connection, head, body, read_timeout, reused=True)
            if answer is not None:
                return answer
        connection = await self._connect(connect_timeout)
        answer = await self._exchange(connection, head, body, read_timeout, reused=False)
        assert answer is not None
        return answer

    async def _exchange(
        self,
        connection: _Connection,
        head: h11.Request,
        body: bytes,
        read_timeout: float,
        *,
        reused: bool,
    ) -> UpstreamResponse | None:
        """Write the request, read the answer's head; None if a reused connection turned out
        closed before any byte of the answer (the caller retries on a fresh one)."""
        state = connection.h11
        sent = received = False
        try:
            try:
                data = state.send(head) or b""
                if body:
                    data += state.send(h11.Data(data=body)) or b""
                data += state.send(h11.EndOfMessage()) or b""
            except h11.LocalProtocolError as exc:
                raise UpstreamError(f"the request cannot be sent: {exc}") from None
            # One cancel scope for the request and the answer's head, its deadline moved on
            # at each step, rather than one per write and read: each costs a timer and a
            # scope, a few per cent of the gateway's CPU per call.
            with anyio.CancelScope(deadline=anyio.current_time() + read_timeout) as deadline:
                try:
                    await connection.stream.send(data)
                    sent = True
                except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
                    raise UpstreamError(f"{type(exc).__name__}: {exc}") from None
                while True:
                    event = _next_event(state)
                    if event is h11.NEED_DATA:
                        deadline.deadline = anyio.current_time() + read_timeout
                        chunk = await _read(connection.stream)
                        received = received or bool(chunk)
                        state.receive_data(chunk)
                    elif type(event) is h11.Response:
                        return UpstreamResponse(self, connection, event, read_timeout)
                    elif type(event) is h11.InformationalResponse:
                        continue
                    else:
                        raise UpstreamError("the upstream closed the connection without answering")
            what = "nothing arrived" if sent else "the request was not taken"
            raise UpstreamTimeout(f"{what} within {read_timeout:g} s")
        except UpstreamError as exc:
            await _close(connection)
            if reused and not received and not isinstance(exc, UpstreamTimeout):
                return None
            raise
        except BaseException:
            await _close(connection)
            raise


def _next_event(state: h11.Connection) -> object:
    """h11's next event of the answer; a protocol error is the upstream's fault."""
    try:
        return state.next_event()
    except h11.RemoteProtocolError as exc:
        raise UpstreamError(f"the upstream broke the protocol: {exc}") from None


async def _receive(stream: anyio.abc.ByteStream, read_timeout: float) -> bytes:
    """The next bytes (``b""`` at the end of the stream), within ``read_timeout`` seconds."""
    with anyio.move_on_after(read_timeout):
        return await _read(stream)
    raise UpstreamTimeout(f"nothing arrived within {read_timeout:g} s")


async def _read(stream: anyio.abc.ByteStream) -> bytes:
    """The next bytes (``b""`` at the end of the stream)."""
    try:
        return await stream.receive(_READ_CHUNK)
    except anyio.EndOfStream:
        return b""
    except (OSError, anyio.BrokenResourceError, anyio.ClosedResourceError) as exc:
        raise UpstreamError(f"{type(exc).__name__}: {exc}") from None


async def _close(connection: _Connection) -> None:
    with anyio.CancelScope(shield=True):
        try:
            await connection.stream.aclose()
        except (OSError, anyio.BrokenResourceError):
            pass

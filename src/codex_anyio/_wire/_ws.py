"""Attaching to a running app-server: WebSocket over TCP (``ws://``, ``wss://``) or over a unix
socket (``unix://``), framed by ``wsproto`` on any AnyIO byte stream.

Why attach instead of spawn: the runtime runs commands for the model, so deployments sandbox it
(a container, a VM, a build box) or share one long-lived daemon between programs. The runtime
serves that itself (``codex app-server --listen ws://IP:PORT`` with a capability token, or
``--listen unix://PATH``): one JSON-RPC message per text frame.

What this module promises, to the connection (``_connection.py``) above it:

* It is a :class:`~codex_anyio._wire._transport.Transport`: each received text message is handed up
  as one line (``message + b"\\n"``), and each ``send`` (whole lines, from the writer task) goes
  out as one text frame per line. The connection's contracts therefore hold unchanged: the
  writer's ``Limits.write_timeout`` bounds a peer that stops reading, the reader fails every
  waiter when the stream ends.
* A message longer than ``Limits.max_line_bytes`` is a :class:`ProtocolError` as soon as its
  fragments pass the limit (it is never assembled whole), as an over-long line is on stdio; a
  frame whose header announces more than the limit is refused at once, before its payload is
  read (a peer that announces 2^63 bytes and then waits cannot keep us waiting).
* Pings are answered by the reader; a close frame is answered and remembered, and
  :meth:`WebSocketTransport.end_reason` names its code and reason, so the
  :class:`TransportClosedError` every waiter gets says why the server hung up.
* A silent server is found out: after ``Limits.ping_interval`` seconds without a byte from it,
  the reader pings, and a server that sends nothing within ``Limits.ping_timeout`` (hung, or
  stopped with ``SIGSTOP``) ends the connection, named so in the error every waiter gets.
* Closing the transport closes *our connection* only (a close frame, bounded, then the
  socket): the server, which we did not start, keeps running for its other clients.
* The bearer token is sent in the handshake and kept nowhere else: not in a repr, a log line
  or an exception message; neither is a URL's userinfo (every message names
  :attr:`Address.display`).
"""

from __future__ import annotations

import logging
import ssl
from typing import Final, NoReturn

import anyio
import anyio.abc

from .._exceptions import AuthenticationError, ProtocolError, StartupError
from ._address import Address, check_token

try:
    from wsproto import ConnectionType, WSConnection
    from wsproto.connection import ConnectionState
    from wsproto.events import (
        AcceptConnection,
        BytesMessage,
        CloseConnection,
        Message,
        Ping,
        RejectConnection,
        RejectData,
        Request,
        TextMessage,
    )
    from wsproto.utilities import LocalProtocolError, RemoteProtocolError
except ImportError:  # pragma: no cover - exercised only without the extra
    WSConnection = None  # type: ignore[assignment,misc]

__all__ = ["WebSocketTransport", "connect_websocket", "wait_ready"]

logger = logging.getLogger("codex_anyio.ws")

READ_CHUNK: Final = 256 * 1024
CLOSE_GRACE: Final = 1.0
"""Seconds our close frame (and the server's answer) may take before the socket is closed."""
READY_POLL: Final = 0.05
"""Seconds between two ``/readyz`` probes while a server starts: there is no event to await
across processes, only the endpoint to ask again."""
HANDSHAKE_TIMEOUT: Final = 10.0
"""Bound of the TCP/TLS connect and the HTTP upgrade, so a peer that accepts and says nothing
cannot hang start-up."""
PING_PAYLOAD: Final = b"codex-anyio"
"""What our keep-alive pings carry (any pong, or any other byte, proves the server alive)."""


def _announced_frame_bytes(ws: WSConnection) -> int:
    """Payload bytes still to come of the frame wsproto is part way through (0 if none).

    wsproto has no size limit of its own and exposes the header of the frame in progress only
    on its decoder; read defensively, so a wsproto that moved it leaves only the fragment
    accounting (which still bounds memory, though not a peer that announces and waits)."""
    try:
        decoder = ws.connection._proto._frame_decoder  # type: ignore[union-attr]
        header = decoder.header
        if header is None:
            return 0
        return int(header.payload_len - decoder.payload_consumed)
    except AttributeError:  # pragma: no cover - another wsproto layout
        return 0


def _require_wsproto() -> None:
    if WSConnection is None:  # pragma: no cover
        raise ImportError(
            "connecting to a running app-server needs wsproto: pip install 'codex-anyio[ws]'"
        )


async def _open_stream(
    address: Address, ssl_context: ssl.SSLContext | None
) -> anyio.abc.ByteStream:
    """A connected byte stream to ``address``.

    :raises StartupError: nothing listening, or the TLS handshake failed (naming the reason).
    """
    shown = address.display
    try:
        if address.scheme == "unix":
            return await anyio.connect_unix(address.path)
        if address.scheme == "wss":
            context = ssl_context or ssl.create_default_context()
            # No TLS close_notify exchange on close: WebSocket ends with its own close frame
            # (so truncation cannot go unnoticed), and the exchange would read the socket
            # while the reader task may still be reading it.
            return await anyio.connect_tcp(
                address.host,
                address.port,
                tls=True,
                ssl_context=context,
                tls_hostname=address.host,
                tls_standard_compatible=False,
            )
        return await anyio.connect_tcp(address.host, address.port)
    except ssl.SSLError as exc:
        raise StartupError(f"the TLS handshake with {shown} failed: {exc}") from exc
    except (anyio.EndOfStream, anyio.BrokenResourceError) as exc:
        # Only the TLS handshake reads during a connect: the peer hung up in the middle of it.
        raise StartupError(
            f"the TLS handshake with {shown} failed: the server closed the connection "
            "(is it serving TLS?)"
        ) from exc
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise StartupError(f"nothing is listening at {shown}: {reason}") from exc


async def _probe_ready(address: Address, ssl_context: ssl.SSLContext | None) -> str:
    """One ``GET /readyz``: its HTTP status line as text. A unix socket serves only
    WebSocket (a plain GET is refused as a bad upgrade), so there the probe is a handshake."""
    stream = await _open_stream(address, ssl_context)
    async with stream:
        if address.scheme == "unix":
            ws = await _handshake(stream, address, None)
            await stream.send(ws.send(CloseConnection(code=1000)))
            return "HTTP/1.1 200 upgraded"
        request = (
            f"GET /readyz HTTP/1.1\r\nHost: {address.host_header}\r\nConnection: close\r\n\r\n"
        )
        await stream.send(request.encode("ascii"))
        head = b""
        while b"\r\n" not in head and len(head) < 4096:
            try:
                head += await stream.receive(4096)
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                break
        return head.split(b"\r\n", 1)[0].decode("latin-1")


async def wait_ready(
    address: Address, within: float, ssl_context: ssl.SSLContext | None = None
) -> None:
    """Poll ``/readyz`` until it answers 200, for a server that is still starting (on a unix
    socket: until a WebSocket handshake succeeds).

    :raises StartupError: if it has not within ``within`` seconds; names the last answer.
    """
    last = "no answer"
    with anyio.move_on_after(within):
        while True:
            try:
                status = await _probe_ready(address, ssl_context)
            except StartupError as exc:
                last = str(exc)
                if "TLS handshake" in last:
                    raise  # a TLS failure will not heal by waiting
            else:
                if status.split(" ")[1:2] == ["200"]:
                    return
                last = f"/readyz answered {status!r}"
            await anyio.sleep(READY_POLL)
    raise StartupError(f"{address.display} was not ready within {within:g} s ({last})")


class WebSocketTransport:
    """One WebSocket connection to an app-server, as the connection's byte transport."""

    def __init__(
        self,
        stream: anyio.abc.ByteStream,
        ws: WSConnection,
        *,
        address: Address,
        max_message_bytes: int,
        ping_interval: float | None = None,
        ping_timeout: float = 20.0,
    ) -> None:
        self._stream = stream
        self._ws = ws
        self._address = address
        self._shown = address.display
        self._max = max_message_bytes
        self._ping_interval = ping_interval
        self._ping_timeout = ping_timeout
        self._send_lock = anyio.Lock()
        self._fragments: list[str] = []
        self._fragment_size = 0
        self._close: tuple[int, str] | None = None
        self._dropped = False
        self._silent = False
        self._ended = False
        self._closed = False
        self._torn = False

    def __repr__(self) -> str:
        return f"<WebSocketTransport {self._shown}>"

    @property
    def address(self) -> str:
        """The server's address as shown in messages (userinfo hidden)."""
        return self._shown

    @property
    def close_code(self) -> int | None:
        """The code of the server's close frame, once one arrived."""
        return None if self._close is None else self._close[0]

    def end_reason(self) -> str | None:
        """Why the stream ended, for :class:`TransportClosedError`: the close frame's code and
        reason, a connection dropped without one, or a server that stopped answering."""
        if self._close is not None:
            code, reason = self._close
            text = f"the app-server at {self._shown} closed the WebSocket (code {code}"
            return text + (f": {reason})" if reason else ")")
        if self._silent:
            return (
                f"the app-server at {self._shown} sent nothing for {self._ping_interval:g} s "
                f"and did not answer a ping within {self._ping_timeout:g} s "
                "(Limits.ping_interval, Limits.ping_timeout): it is hung or stopped"
            )
        if self._dropped:
            return (
                f"the connection to the app-server at {self._shown} was lost without a "
                "WebSocket close frame"
            )
        return None

    def stderr_tail(self) -> str:
        return ""

    async def exit_info(self) -> tuple[int | None, str]:
        """A server we did not start has no exit status or stderr for us."""
        return None, ""

    async def _write(self, data: bytes) -> None:
        async with self._send_lock:
            # Left set if the write is cancelled part way (Limits.write_timeout, a deadline):
            # the stream may then end inside a frame, and a close frame would be garbage.
            self._torn = True
            await self._stream.send(data)
            self._torn = False

    async def send(self, data: bytes) -> None:
        """Send whole lines, one text frame each (the writer task calls this)."""
        if self._closed or self._ended:
            raise anyio.ClosedResourceError
        out = bytearray()
        ws_send = self._ws.send
        for line in data.split(b"\n"):
            if line:
                out += ws_send(Message(data=line.decode("utf-8")))
        await self._write(bytes(out))

    async def receive(self) -> bytes:
        """The next complete messages, each followed by ``b"\\n"``.

        :raises anyio.EndOfStream: after a close frame, a lost connection, or a server that
            answered no ping in time.
        :raises ProtocolError: a message longer than the line limit, or broken framing.
        """
        while True:
            lines: list[bytes] = []
            reply = bytearray()
            try:
                for event in self._ws.events():
                    if isinstance(event, (TextMessage, BytesMessage)):
                        line = self._add_fragment(event)
                        if line is not None:
                            lines.append(line)
                    elif isinstance(event, Ping):
                        reply += self._ws.send(event.response())
                    elif isinstance(event, CloseConnection):
                        self._close = (event.code, event.reason or "")
                        self._ended = True
                        if self._ws.state == ConnectionState.REMOTE_CLOSING:
                            reply += self._ws.send(event.response())
            except RemoteProtocolError as exc:
                raise ProtocolError(
                    f"the app-server at {self._shown} broke the WebSocket protocol: {exc}"
                ) from exc
            if reply:
                try:
                    await self._write(bytes(reply))
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    pass
            if lines:
                return b"".join(lines)
            if self._ended:
                raise anyio.EndOfStream
            if self._fragment_size + _announced_frame_bytes(self._ws) > self._max:
                self._too_long()
            try:
                data = await self._read()
            except (anyio.EndOfStream, anyio.BrokenResourceError, OSError):
                self._dropped = self._ended = True
                raise anyio.EndOfStream from None
            except anyio.ClosedResourceError:
                self._ended = True
                raise anyio.EndOfStream from None
            self._ws.receive_data(data)

    async def _read(self) -> bytes:
        """The next bytes from the server; with a ping interval, a server silent for that long
        is pinged, and one that then sends nothing within the ping timeout has ended."""
        interval = self._ping_interval
        if interval is None:
            return await self._stream.receive(READ_CHUNK)
        while True:
            with anyio.move_on_after(interval):
                return await self._stream.receive(READ_CHUNK)
            if not self._send_lock.locked():
                break
            # A write is in progress (a long message the server is still reading): that is
            # bounded by Limits.write_timeout, not by a ping that would queue behind it.
        with anyio.move_on_after(self._ping_timeout):
            # Anything at all proves the server alive, its pong or a message.
            await self._write(self._ws.send(Ping(payload=PING_PAYLOAD)))
            return await self._stream.receive(READ_CHUNK)
        logger.warning("the app-server at %s answered no ping; closing", self._shown)
        self._silent = self._ended = True
        raise anyio.EndOfStream

    def _too_long(self) -> NoReturn:
        raise ProtocolError(
            f"the app-server at {self._shown} sent a WebSocket message longer than "
            f"{self._max} bytes (Limits.max_line_bytes)"
        )

    def _add_fragment(self, event: TextMessage | BytesMessage) -> bytes | None:
        data = event.data
        piece = data if isinstance(data, str) else data.decode("utf-8", "replace")
        self._fragments.append(piece)
        self._fragment_size += len(piece)
        if self._fragment_size > self._max:
            self._too_long()
        if not event.message_finished:
            return None
        line = "".join(self._fragments).encode("utf-8")
        self._fragments.clear()
        self._fragment_size = 0
        if len(line) > self._max:
            self._too_long()
        if b"\n" in line:
            # A pretty-printed message: outside strings a newline is only whitespace (inside
            # them JSON escapes it), so a space keeps it one line for the connection's reader.
            line = line.replace(b"\n", b" ")
        return line + b"\n"

    async def aclose(self) -> None:
        """Close our connection (a close frame, bounded), never the server."""
        if self._closed:
            return
        self._closed = True
        with anyio.CancelScope(shield=True):
            if self._ws.state == ConnectionState.OPEN and not self._ended and not self._torn:
                with anyio.move_on_after(CLOSE_GRACE):
                    try:
                        await self._write(self._ws.send(CloseConnection(code=1000)))
                    except (
                        anyio.BrokenResourceError,
                        anyio.ClosedResourceError,
                        LocalProtocolError,
                        OSError,
                    ):
                        pass
            await self._stream.aclose()


async def _handshake(
    stream: anyio.abc.ByteStream, address: Address, token: str | None
) -> WSConnection:
    ws = WSConnection(ConnectionType.CLIENT)
    shown = address.display
    headers = [(b"authorization", b"Bearer " + token.encode("utf-8"))] if token else []
    await stream.send(
        ws.send(Request(host=address.host_header, target=address.target, extra_headers=headers))
    )
    rejected: RejectConnection | None = None
    finished = False
    while not finished:
        try:
            data = await stream.receive(READ_CHUNK)
        except (anyio.EndOfStream, anyio.BrokenResourceError, OSError) as exc:
            if rejected is not None:
                break  # the body of a refusal may end with the connection
            raise StartupError(
                f"the server at {shown} closed the connection during the WebSocket "
                "handshake (is it an app-server?)"
            ) from exc
        try:
            ws.receive_data(data)
            for event in ws.events():
                if isinstance(event, AcceptConnection):
                    # Frames sent right after the 101 stay in wsproto's buffer.
                    return ws
                if isinstance(event, RejectConnection):
                    rejected = event
                    finished = not event.has_body
                elif isinstance(event, RejectData):
                    finished = event.body_finished
        except RemoteProtocolError as exc:
            raise StartupError(
                f"the server at {shown} did not answer as a WebSocket server: {exc}"
            ) from exc
    assert rejected is not None
    status = rejected.status_code
    if status in (401, 403):
        said = "refused the token" if token else "requires a token (none was given)"
        raise AuthenticationError(f"the app-server at {shown} {said} (HTTP {status})")
    raise StartupError(f"the server at {shown} refused the WebSocket upgrade (HTTP {status})")


async def connect_websocket(
    url: str,
    *,
    token: str | None = None,
    ssl_context: ssl.SSLContext | None = None,
    max_message_bytes: int,
    ready_timeout: float | None = None,
    ping_interval: float | None = None,
    ping_timeout: float = 20.0,
) -> WebSocketTransport:
    """Connect to the app-server at ``url`` and complete the WebSocket handshake.

    :param ready_timeout: first wait up to this long for ``/readyz`` to answer 200.
    :param ping_interval: ping a server silent for this long (``None``: never).
    :param ping_timeout: how long a pinged server has to send anything.
    :raises ValueError: a token with a control character in it (see ``check_token``).
    :raises AuthenticationError: the server refused the token (HTTP 401/403).
    :raises StartupError: nothing listening, TLS failure, not ready in time, not a WebSocket
        server; each message names the address (userinfo hidden) and the reason.
    """
    _require_wsproto()
    if token is not None:
        token = check_token(token, "token")
    address = Address.parse(url)
    if ready_timeout is not None:
        await wait_ready(address, ready_timeout, ssl_context)
    stream: anyio.abc.ByteStream | None = None
    try:
        with anyio.fail_after(HANDSHAKE_TIMEOUT):
            stream = await _open_stream(address, ssl_context)
            ws = await _handshake(stream, address, token)
    except TimeoutError:
        if stream is not None:
            await anyio.aclose_forcefully(stream)
        raise StartupError(
            f"the WebSocket handshake with {address.display} took longer than "
            f"{HANDSHAKE_TIMEOUT:g} s"
        ) from None
    except BaseException:
        if stream is not None:
            await anyio.aclose_forcefully(stream)
        raise
    logger.debug("connected to the app-server at %s", address.display)
    return WebSocketTransport(
        stream,
        ws,
        address=address,
        max_message_bytes=max_message_bytes,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
    )

"""The forward's HTTP/1.1 client (``codex_anyio.gateway._upstream``): connections kept alive
and reused, stale ones replaced, HTTPS with the trust store the environment names.

The servers are on loopback: a plain h11 server that counts its connections (and can close
each one after its answer without saying so, as a server closing idle connections does),
and a TLS terminator in front of the scripted model with a certificate from a test CA.
"""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from urllib.parse import urlsplit

import anyio
import anyio.abc
import h11
import pytest
from anyio.streams.tls import TLSListener

from codex_anyio import ModelGateway
from codex_anyio.gateway._upstream import UpstreamError, UpstreamPool
from codex_anyio.testing import ScriptedModel, message, open_gateway_codex

pytestmark = pytest.mark.anyio

BODY = b"data: {}\n\n"


class CountingServer:
    """Answers every request with a short event stream; counts connections and requests."""

    def __init__(self, *, close_after_answer: bool) -> None:
        self.close_after_answer = close_after_answer
        self.connections = 0
        self.requests: list[bytes] = []

    async def serve(self, stream: anyio.abc.SocketStream) -> None:
        self.connections += 1
        connection = h11.Connection(h11.SERVER)
        async with stream:
            while True:
                event = connection.next_event()
                if event is h11.NEED_DATA:
                    try:
                        connection.receive_data(await stream.receive())
                    except (anyio.EndOfStream, anyio.BrokenResourceError):
                        return
                elif isinstance(event, h11.Request):
                    self.requests.append(event.target)
                elif isinstance(event, h11.EndOfMessage):
                    head = h11.Response(
                        status_code=200, headers=[("content-type", "text/event-stream")]
                    )
                    data = connection.send(head) or b""
                    data += connection.send(h11.Data(data=BODY)) or b""
                    data += connection.send(h11.EndOfMessage()) or b""
                    await stream.send(data)
                    if self.close_after_answer:
                        return  # no "Connection: close": the client must notice by itself
                    connection.start_next_cycle()
                elif isinstance(event, h11.ConnectionClosed):
                    return


@asynccontextmanager
async def counting_server(*, close_after_answer: bool) -> AsyncIterator[tuple[CountingServer, int]]:
    server = CountingServer(close_after_answer=close_after_answer)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.serve)
        yield server, port
        tg.cancel_scope.cancel()


async def fetch(pool: UpstreamPool, port: int, target: str) -> bytes:
    answer = await pool.request(
        "POST",
        target,
        [("host", f"127.0.0.1:{port}"), ("content-length", "2")],
        b"{}",
        connect_timeout=5,
        read_timeout=5,
    )
    assert answer.status == 200
    body = b""
    async with answer:
        async for chunk in answer.chunks():
            body += chunk
    return body


@pytest.mark.parametrize("close_after_answer", [False, True], ids=["kept-alive", "closed"])
async def test_a_connection_is_reused_while_it_lasts_and_replaced_once_the_server_closed_it(
    close_after_answer: bool,
) -> None:
    with anyio.fail_after(10):
        async with counting_server(close_after_answer=close_after_answer) as (server, port):
            async with UpstreamPool("http", "127.0.0.1", port, keepalive=4, expiry=60) as pool:
                for n in range(3):
                    # A closed connection is either seen closed before it is reused or
                    # fails before any answer and is retried on a fresh one: never an error.
                    assert await fetch(pool, port, f"/v1/responses?n={n}") == BODY
    assert server.requests == [f"/v1/responses?n={n}".encode() for n in range(3)]
    assert server.connections == (3 if close_after_answer else 1)


async def test_an_answer_left_unread_closes_its_connection_instead_of_reusing_it() -> None:
    with anyio.fail_after(10):
        async with counting_server(close_after_answer=False) as (server, port):
            async with UpstreamPool("http", "127.0.0.1", port, keepalive=4, expiry=60) as pool:
                answer = await pool.request(
                    "GET", "/", [("host", "x")], b"", connect_timeout=5, read_timeout=5
                )
                async with answer:  # the runtime dropped its stream: nothing read
                    pass
                assert pool._idle == []
                assert await fetch(pool, port, "/v1/responses") == BODY
    assert server.connections == 2


async def test_a_refused_connection_is_an_upstream_error_naming_the_reason() -> None:
    with socket_closed_port() as port:
        async with UpstreamPool("http", "127.0.0.1", port, keepalive=4, expiry=60) as pool:
            with pytest.raises(UpstreamError, match=r"cannot connect \(Connection refused\)"):
                await fetch(pool, port, "/")


class socket_closed_port:
    """A loopback port nothing listens on."""

    def __enter__(self) -> int:
        import socket

        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            return int(sock.getsockname()[1])

    def __exit__(self, *exc_info: object) -> None:
        return None


async def _pump(source: anyio.abc.ByteStream, sink: anyio.abc.ByteStream) -> None:
    try:
        async for data in source:
            await sink.send(data)
    except (anyio.BrokenResourceError, anyio.ClosedResourceError):
        pass
    finally:
        try:
            await sink.send_eof()  # type: ignore[attr-defined]
        except (anyio.BrokenResourceError, anyio.ClosedResourceError, AttributeError, OSError):
            await sink.aclose()


@asynccontextmanager
async def tls_terminator(
    plain_port: int, context: ssl.SSLContext, handshakes: list[int]
) -> AsyncIterator[int]:
    """HTTPS on loopback in front of a plain HTTP server (bytes passed both ways); each
    connection (a TLS handshake) appends to ``handshakes``."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve(client: anyio.abc.ByteStream) -> None:
        handshakes.append(1)
        async with client, await anyio.connect_tcp("127.0.0.1", plain_port) as server:
            async with anyio.create_task_group() as tg:
                tg.start_soon(_pump, client, server)
                await _pump(server, client)
                tg.cancel_scope.cancel()

    tls = TLSListener(listener, context, standard_compatible=False)
    async with tls, anyio.create_task_group() as tg:
        tg.start_soon(tls.serve, serve)
        yield port
        tg.cancel_scope.cancel()


async def test_an_https_upstream_is_reached_with_the_environments_trust_store_and_kept_alive(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    bundle = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(bundle))
    server_context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_context)
    # The gateway trusts what the environment names, as OpenSSL and the runtime do.
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    monkeypatch.delenv("SSL_CERT_DIR", raising=False)
    handshakes: list[int] = []
    with anyio.fail_after(60):
        async with ScriptedModel([message("over TLS"), message("again")]) as model:
            plain = urlsplit(model.base_url).port or 0
            async with tls_terminator(plain, server_context, handshakes) as port:
                gateway = ModelGateway(upstream=f"https://localhost:{port}/v1")
                async with open_gateway_codex(gateway, directory=tmp_path) as g:
                    thread = await g.codex.thread_start()
                    first = await thread.run("hi")
                    second = await thread.run("and again")
    assert (first.final_response, second.final_response) == ("over TLS", "again")
    assert [call.status for call in first.model_calls + second.model_calls] == [200, 200]
    assert len(handshakes) == 1  # the second call reused the kept-alive TLS connection

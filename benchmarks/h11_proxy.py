"""The second floor of ``benchmarks/gateway.py``: the gateway's own stack and nothing else.

h11 on AnyIO streams on both sides, as the gateway (``codex_anyio/gateway/_http.py`` and
``_upstream.py``): it reads a request with h11, sends it on to a kept-alive upstream
connection with h11, and passes the answer back through h11 as it arrives. No join, no
record, no timeouts, no watch for a runtime that goes away, no fault mapping: what is left is
what h11 and AnyIO cost per call, so ``benchmarks/gateway.py`` can say how much of what the
gateway adds is the stack and how much is the gateway's own work. Prints ``{"base_url": ...}``
and serves until stdin closes: ``python -m benchmarks.h11_proxy UPSTREAM_URL``.
"""

from __future__ import annotations

import json
import sys
from urllib.parse import urlsplit

import anyio
import anyio.abc
import h11

_NOT_PASSED = frozenset((b"transfer-encoding", b"content-length", b"date", b"server"))
_OURS = (b"host", b"content-length")


async def _next_event(connection: h11.Connection, stream: anyio.abc.ByteStream) -> object:
    while True:
        event = connection.next_event()
        if event is not h11.NEED_DATA:
            return event
        try:
            data = await stream.receive(65536)
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            data = b""
        connection.receive_data(data)


async def main(upstream: str) -> None:
    parts = urlsplit(upstream)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    idle: list[tuple[anyio.abc.SocketStream, h11.Connection]] = []

    async def handle(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            server = h11.Connection(h11.SERVER)
            while True:
                head = await _next_event(server, stream)
                if type(head) is not h11.Request:
                    return
                body = bytearray()
                while type(event := await _next_event(server, stream)) is h11.Data:
                    body += event.data
                if idle:
                    up, client = idle.pop()
                else:
                    up, client = await anyio.connect_tcp(host, port), h11.Connection(h11.CLIENT)
                headers = [(b"host", parts.netloc.encode()), (b"content-length", b"%d" % len(body))]
                headers += [(k, v) for k, v in head.headers if k not in _OURS]
                request = h11.Request(method=head.method, target=head.target, headers=headers)
                data = client.send(request) + client.send(h11.Data(data=bytes(body)))
                await up.send(data + client.send(h11.EndOfMessage()))
                answer = await _next_event(client, up)
                assert type(answer) is h11.Response
                passed = [(k, v) for k, v in answer.headers if k not in _NOT_PASSED]
                out = server.send(h11.Response(status_code=answer.status_code, headers=passed))
                while True:
                    event = client.next_event()
                    if event is h11.NEED_DATA:
                        if out:
                            await stream.send(out)
                            out = b""
                        client.receive_data(await up.receive(65536))
                    elif type(event) is h11.Data:
                        out += server.send(h11.Data(data=event.data))
                    else:
                        break
                client.start_next_cycle()
                idle.append((up, client))
                await stream.send(out + server.send(h11.EndOfMessage()))
                try:
                    server.start_next_cycle()
                except h11.LocalProtocolError:
                    return

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    own_port = listener.extra(anyio.abc.SocketAttribute.local_port)
    print(json.dumps({"base_url": f"http://127.0.0.1:{own_port}/v1"}), flush=True)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, handle)
        await anyio.to_thread.run_sync(sys.stdin.read)
        tg.cancel_scope.cancel()


if __name__ == "__main__":
    anyio.run(main, sys.argv[1])

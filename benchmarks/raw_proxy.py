"""The floor of ``benchmarks/gateway.py``: the leanest honest pass-through a Python process can
be, to compare the gateway with.

Plain asyncio streams, no HTTP library: it reads a request's head and ``Content-Length`` body,
writes them to a kept-alive upstream connection in one write, and passes the answer's head
and chunks back as they arrive (parsing only the chunk sizes, to see the answer's end). No
join, no record, no fault mapping, no timeouts, none of what makes the gateway the gateway:
what is left is the cost of one more process hop in Python. Prints ``{"base_url": ...}``
and serves until stdin closes: ``python -m benchmarks.raw_proxy UPSTREAM_URL``.
"""

from __future__ import annotations

import asyncio
import json
import sys
from urllib.parse import urlsplit


async def main(upstream):
    parts = urlsplit(upstream)
    host, port = parts.hostname, parts.port
    idle = []

    async def read_head(reader, buf):
        while True:
            end = buf.find(b"\r\n\r\n")
            if end >= 0:
                head = bytes(buf[: end + 4])
                del buf[: end + 4]
                return head
            data = await reader.read(65536)
            if not data:
                return None
            buf += data

    def content_length(head):
        for line in head.split(b"\r\n")[1:]:
            name, _, value = line.partition(b":")
            if name.strip().lower() == b"content-length":
                return int(value)
        return 0

    async def handle(reader, writer):
        buf = bytearray()
        try:
            while True:
                head = await read_head(reader, buf)
                if head is None:
                    return
                n = content_length(head)
                while len(buf) < n:
                    data = await reader.read(65536)
                    if not data:
                        return
                    buf += data
                body = bytes(buf[:n])
                del buf[:n]
                if idle:
                    ur, uw = idle.pop()
                else:
                    ur, uw = await asyncio.open_connection(host, port)
                uw.write(head + body)
                ubuf = bytearray()
                rhead = await read_head(ur, ubuf)
                writer.write(rhead)
                if b"chunked" in rhead.lower():
                    # pass chunks through until the terminating chunk
                    while True:
                        # parse as many chunks as buffered
                        done = False
                        pos = 0
                        while True:
                            line_end = ubuf.find(b"\r\n", pos)
                            if line_end < 0:
                                break
                            size = int(bytes(ubuf[pos:line_end]).split(b";")[0], 16)
                            if size == 0:
                                if len(ubuf) >= line_end + 4:
                                    pos = line_end + 4
                                    done = True
                                break
                            if len(ubuf) < line_end + 2 + size + 2:
                                break
                            pos = line_end + 2 + size + 2
                        if pos:
                            writer.write(bytes(ubuf[:pos]))
                            del ubuf[:pos]
                        if done:
                            break
                        data = await ur.read(65536)
                        if not data:
                            return
                        ubuf += data
                else:
                    m = content_length(rhead)
                    while len(ubuf) < m:
                        ubuf += await ur.read(65536)
                    writer.write(bytes(ubuf))
                    ubuf.clear()
                idle.append((ur, uw))
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            return
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port_ = server.sockets[0].getsockname()[1]
    print(json.dumps({"base_url": f"http://127.0.0.1:{port_}/v1"}), flush=True)
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, sys.stdin.read)


asyncio.run(main(sys.argv[1]))

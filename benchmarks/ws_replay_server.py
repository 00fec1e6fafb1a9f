"""``replay_server.py`` over WebSocket: the same replies and N deltas per turn, one JSON-RPC
message per text frame, as the runtime's ``--listen ws://`` and ``unix://`` serve them.

Usage: ``ws_replay_server.py N [unix://PATH]``. Listens on 127.0.0.1 (a free port) or on the
unix socket, prints ``listening on: URL`` and serves one connection at a time until killed.
The delta frame is encoded once and repeated (server frames are unmasked, so every copy is
the same bytes): the server costs as little as the stdio one, and the client is measured.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import anyio.abc
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, CloseConnection, Message, Request, TextMessage

from benchmarks.replay_server import BATCH, thread_start_result


async def serve(stream: anyio.abc.ByteStream, count: int) -> None:
    started = thread_start_result()
    thread_id = started["thread"]["id"]
    ws = WSConnection(ConnectionType.SERVER)
    turns = 0
    parts: list[str] = []

    async def send(message: dict[str, Any]) -> None:
        await stream.send(ws.send(Message(data=json.dumps(message))))

    async with stream:
        while True:
            try:
                ws.receive_data(await stream.receive(65536))
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return
            for event in ws.events():
                if isinstance(event, Request):
                    await stream.send(ws.send(AcceptConnection()))
                elif isinstance(event, CloseConnection):
                    await stream.send(ws.send(event.response()))
                    return
                elif isinstance(event, TextMessage):
                    parts.append(event.data)
                    if not event.message_finished:
                        continue
                    message = json.loads("".join(parts))
                    parts.clear()
                    method, request_id = message.get("method"), message.get("id")
                    if request_id is None:
                        continue
                    if method == "initialize":
                        result = {
                            "userAgent": "codex_bench/0.163.0 (ws replay)",
                            "codexHome": "/tmp",
                            "platformFamily": "unix",
                            "platformOs": "linux",
                        }
                        await send({"id": request_id, "result": result})
                    elif method == "thread/start":
                        await send({"id": request_id, "result": started})
                    elif method == "turn/start":
                        turns += 1
                        turn = {
                            "id": f"turn-{turns}",
                            "items": [],
                            "status": "inProgress",
                            "error": None,
                        }
                        await send({"id": request_id, "result": {"turn": turn}})
                        await send(
                            {
                                "method": "turn/started",
                                "params": {"threadId": thread_id, "turn": turn},
                            }
                        )
                        delta = {
                            "method": "item/agentMessage/delta",
                            "params": {
                                "threadId": thread_id,
                                "turnId": turn["id"],
                                "itemId": "msg-1",
                                "delta": "token ",
                            },
                        }
                        frame = ws.send(Message(data=json.dumps(delta)))
                        for start in range(0, count, BATCH):
                            await stream.send(frame * min(BATCH, count - start))
                        done = {**turn, "status": "completed"}
                        await send(
                            {
                                "method": "turn/completed",
                                "params": {"threadId": thread_id, "turn": done},
                            }
                        )
                    else:
                        await send({"id": request_id, "result": {}})


async def main() -> None:
    count = int(sys.argv[1])
    listener: anyio.abc.Listener[Any]
    if len(sys.argv) > 2:
        path = sys.argv[2].removeprefix("unix://")
        listener = await anyio.create_unix_listener(path)
        url = f"unix://{path}"
    else:
        listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
        url = f"ws://127.0.0.1:{listener.extra(anyio.abc.SocketAttribute.local_port)}"
    print(f"listening on: {url}", flush=True)

    async def one(stream: anyio.abc.ByteStream) -> None:
        await serve(stream, count)

    async with listener:
        await listener.serve(one)


if __name__ == "__main__":
    anyio.run(main)

"""Record real app-server traffic into ``tests/data/corpus/<flow>.jsonl``.

Each line is ``{"direction": "client" | "server", "message": {...}}``: every JSON-RPC message
of a flow, both ways, exactly as it crossed the pipe, from the pinned runtime driven by a
scripted model. The round-trip tests structure and unstructure every message of the corpus.
Re-record after bumping the runtime pin: ``python scripts/record_corpus.py``.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio

import codex_anyio._api._codex as codex_module
from codex_anyio import ApprovalPolicy, AsyncCodex, Handlers
from codex_anyio._wire._framing import LineSplitter
from codex_anyio._wire._transport import StdioTransport
from codex_anyio.testing import (
    exec_command,
    failed,
    function_call,
    message,
    open_scripted_codex,
    request_user_input,
    stall,
)

OUT = Path(__file__).resolve().parent.parent / "tests" / "data" / "corpus"


class Recorder:
    def __init__(self) -> None:
        self.lines: list[dict[str, Any]] = []
        self._splitter = LineSplitter()

    def wrap(self, transport: StdioTransport) -> StdioTransport:
        send, receive = transport.send, transport.receive

        async def recording_send(data: bytes) -> None:
            for line in data.splitlines():
                self.lines.append({"direction": "client", "message": json.loads(line)})
            await send(data)

        async def recording_receive() -> bytes:
            chunk = await receive()
            for line in self._splitter.feed(chunk):
                self.lines.append({"direction": "server", "message": json.loads(line)})
            return chunk

        transport.send = recording_send  # type: ignore[method-assign]
        transport.receive = recording_receive  # type: ignore[method-assign]
        return transport


async def record(
    name: str,
    script: list[Any],
    flow: Callable[[AsyncCodex], Awaitable[None]],
    **options: Any,
) -> None:
    recorder = Recorder()
    original = codex_module.spawn_stdio

    async def spawn(*args: Any, **kwargs: Any) -> StdioTransport:
        return recorder.wrap(await original(*args, **kwargs))

    codex_module.spawn_stdio = spawn  # type: ignore[assignment]
    try:
        async with open_scripted_codex(script, **options) as scripted:
            await flow(scripted.codex)
    finally:
        codex_module.spawn_stdio = original
    OUT.mkdir(parents=True, exist_ok=True)
    with (OUT / f"{name}.jsonl").open("w", encoding="utf-8") as f:
        for line in recorder.lines:
            f.write(json.dumps(line, ensure_ascii=False) + "\n")
    print(f"{name}: {len(recorder.lines)} messages")


async def lookup(order_id: str) -> str:
    """Look up an order."""
    return f"order {order_id}: shipped"


async def main() -> None:
    async def nothing(codex: AsyncCodex) -> None:
        pass

    async def start(codex: AsyncCodex) -> None:
        await codex.thread_start()

    async def turn(codex: AsyncCodex) -> None:
        thread = await codex.thread_start()
        await thread.run("hello")

    async def tool(codex: AsyncCodex) -> None:
        thread = await codex.thread_start(dynamic_tools=[lookup])
        await thread.run("where is order 7?")

    async def interrupted(codex: AsyncCodex) -> None:
        thread = await codex.thread_start()
        with anyio.move_on_after(0.5):
            await thread.run("take your time")
        await thread.read(include_turns=True)

    async def user_input(codex: AsyncCodex) -> None:
        thread = await codex.thread_start()
        plan = {"mode": "plan", "settings": {"model": "mock-model"}}
        await thread.run("ask me", collaboration_mode=plan)

    async def failure(codex: AsyncCodex) -> None:
        thread = await codex.thread_start()
        async with thread.turn("fail") as handle:
            async for _ in handle.stream():
                pass

    async def answer(params: Any) -> dict[str, Any]:
        return {"answers": {"color": {"answers": ["blue"]}}}

    questions = [
        {
            "id": "color",
            "header": "Color",
            "question": "Which color?",
            "options": [{"label": "red", "description": "warm"}],
        }
    ]
    await record("initialize", [], nothing)
    await record("thread_start", [], start)
    await record("turn", [message("Hello there, streamed in pieces.", deltas=4)], turn)
    await record(
        "approval",
        [exec_command("touch approved.txt", escalate=True), message("done")],
        turn,
        approval_policy="on-request",
        handlers=Handlers(approvals=ApprovalPolicy.accept_all()),
    )
    await record("dynamic_tool", [function_call("lookup", {"order_id": "7"}), message("ok")], tool)
    await record("interrupted", [stall(message("partial", deltas=2))], interrupted)
    await record(
        "user_input",
        [request_user_input(questions), message("blue")],
        user_input,
        handlers=Handlers(user_input=answer),
    )
    await record("failed", [failed("scripted failure")], failure)


if __name__ == "__main__":
    anyio.run(main)

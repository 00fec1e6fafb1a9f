"""The client's own CPU per one-turn task, with no runtime and no pipe.

    python -m benchmarks.client_cpu                      # K = 3000, 5 repeats, both backends
    python -m benchmarks.client_cpu --k 300 --repeats 1  # a smoke run

``benchmarks.pool`` measures a task's client CPU beside the runtime's, where the pipe, the
event loop's wake-ups and a busy machine are in the figure and move it by tens of percent from
run to run. This one isolates the library's own work, to a few percent: first one real lean
task (result-only opt-outs: what ``codex-anyio batch`` gets) runs against the real runtime
with the wire log on, recording the lines the runtime answers; then an in-process transport
answers every request at once with those lines (fresh thread and turn ids each time), and K
tasks run 32 at a time:

- ``AsyncCodex``: ``thread_start(**lean_thread_options())`` and ``thread.run(prompt)``;
- ``CodexPool``: ``CodexPool(1, max_turns=32)`` with the batch's opt-outs, ``pool.run``;
- ``raw``: the floor of the same work, on asyncio: each request written with orjson, each
  answer line decoded with orjson and matched to a future by id, and each turn's end to an
  event by turn id; nothing else (no routing, typing, usage, cancellation).

Reported: the measuring thread's CPU per task (``time.thread_time``; the fake runtime's own
work, building the answer lines, is in it for every client alike and is small), medians over
repeats, and each figure relative to ``raw``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import orjson

from benchmarks import cache_bytecode

IN_FLIGHT = 32
WARM_UP = 50


def record_task_lines() -> tuple[bytes, list[bytes]]:
    """The runtime's answer to ``initialize``, and the lines it sends for one lean one-turn
    task (the second of a client: the first one's include start-up), through the wire log."""
    from benchmarks.__main__ import model_server
    from benchmarks.workers import scripted_env
    from codex_anyio import AsyncCodex, CodexConfig, lean_thread_options, result_only_opt_outs

    received: list[bytes] = []

    class Recorder(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.args and record.msg.startswith("<-"):
                received.append(str(record.args[0]).encode())

    wire = logging.getLogger("codex_anyio.wire")
    handler = Recorder()
    wire.addHandler(handler)
    wire.setLevel(logging.DEBUG)
    try:
        with model_server("instant") as (args, _):
            config = CodexConfig(
                codex_bin=args["codex_bin"],
                env=scripted_env(args),
                cwd=args["workspace"],
                opt_out_notification_methods=result_only_opt_outs(),
                wire_log=True,
            )

            async def two_tasks() -> int:
                async with AsyncCodex(config) as codex:
                    for i in range(2):
                        second = len(received)
                        thread = await codex.thread_start(**lean_thread_options())
                        await thread.run(f"task {i}")
                return second

            second = anyio.run(two_tasks)
    finally:
        wire.removeHandler(handler)
    return received[0], received[second:]


class Script:
    """The recorded answers, with fresh ids: a thread/start answer, a turn/start answer and
    the turn's notifications."""

    def __init__(self, initialize: bytes, lines: list[bytes]) -> None:
        self.initialize = initialize
        decoded = [orjson.loads(line) for line in lines]
        (thread_at,) = [i for i, d in enumerate(decoded) if "thread" in d.get("result", {})]
        (turn_at,) = [i for i, d in enumerate(decoded) if "turn" in d.get("result", {})]
        self.thread_answer = lines[thread_at]
        self.turn_answer = lines[turn_at]
        self.notes = [line for line in lines if b'"method"' in line]
        self.thread_id = decoded[thread_at]["result"]["thread"]["id"].encode()
        self.turn_id = decoded[turn_at]["result"]["turn"]["id"].encode()
        self.thread_request_id = b'"id":%d,' % decoded[thread_at]["id"]
        self.turn_request_id = b'"id":%d,' % decoded[turn_at]["id"]
        self._ids = itertools.count(10**11)

    def _fresh(self, old: bytes) -> bytes:
        return old[:-12] + b"%012d" % next(self._ids)

    def answer(self, request: dict[str, Any]) -> list[bytes]:
        method, rid = request.get("method"), request.get("id")
        if method == "initialize":
            return [orjson.dumps({"id": rid, "result": orjson.loads(self.initialize)["result"]})]
        if method == "thread/start":
            line = self.thread_answer.replace(self.thread_id, self._fresh(self.thread_id))
            return [line.replace(self.thread_request_id, b'"id":%d,' % rid, 1)]
        if method == "turn/start":
            thread = request["params"]["threadId"].encode()
            turn = self._fresh(self.turn_id)
            line = self.turn_answer.replace(self.turn_id, turn)
            answer = [line.replace(self.turn_request_id, b'"id":%d,' % rid, 1)]
            return answer + [
                note.replace(self.thread_id, thread).replace(self.turn_id, turn)
                for note in self.notes
            ]
        return [] if rid is None else [orjson.dumps({"id": rid, "result": {}})]


class FakeRuntime:
    """A :class:`~codex_anyio._wire._transport.Transport` answering every request at once."""

    pid = 0
    returncode = None

    def __init__(self, script: Script) -> None:
        self._script = script
        self._send, self._receive = anyio.create_memory_object_stream[bytes](100_000)

    def _feed(self, data: bytes) -> None:
        for line in data.split(b"\n"):
            if line:
                for answer in self._script.answer(orjson.loads(line)):
                    self._send.send_nowait(answer + b"\n")

    def try_send(self, data: bytes) -> int:
        self._feed(data)
        return len(data)

    async def send(self, data: bytes) -> None:
        self._feed(data)

    async def receive(self) -> bytes:
        chunks = [await self._receive.receive()]
        while True:
            try:
                chunks.append(self._receive.receive_nowait())
            except anyio.WouldBlock:
                return b"".join(chunks)

    async def drain_stderr(self, *, task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        await anyio.sleep_forever()

    def stderr_tail(self) -> str:
        return ""

    def end_reason(self) -> str | None:
        return None

    async def exit_info(self) -> tuple[int | None, str]:
        return 0, ""

    def abort(self) -> None:
        pass

    async def aclose(self) -> None:
        self._send.close()


async def _timed(k: int, one: Callable[[int], Awaitable[None]]) -> float:
    for i in range(WARM_UP):
        await one(-i - 1)
    slots = anyio.Semaphore(IN_FLIGHT)

    async def bounded(i: int) -> None:
        async with slots:
            await one(i)

    started = time.thread_time()
    async with anyio.create_task_group() as tg:
        for i in range(k):
            tg.start_soon(bounded, i)
    return (time.thread_time() - started) * 1e6 / k


def measure_codex(script: Script, k: int, backend: str, pooled: bool) -> float:
    import codex_anyio._api._codex as codex_module
    from codex_anyio import AsyncCodex, CodexConfig, CodexPool, lean_thread_options
    from codex_anyio import result_only_opt_outs as opt_outs

    async def spawn(config: Any, **_: Any) -> FakeRuntime:
        return FakeRuntime(script)

    codex_module.spawn_stdio = spawn  # type: ignore[assignment]
    # No login check: the fake has no account/read to answer.
    config = CodexConfig(launch_args_override=("fake",), opt_out_notification_methods=opt_outs())

    async def single() -> float:
        async with AsyncCodex(config) as codex:

            async def one(i: int) -> None:
                thread = await codex.thread_start(**lean_thread_options())
                result = await thread.run(f"task {i}")
                assert result.status == "completed", result.status

            return await _timed(k, one)

    async def pool() -> float:
        async with CodexPool(1, config=config, max_turns=IN_FLIGHT, probe_interval=None) as p:

            async def one(i: int) -> None:
                result = await p.run(f"task {i}")
                assert result.status == "completed", result.status

            return await _timed(k, one)

    return anyio.run(pool if pooled else single, backend=backend)


def measure_raw(script: Script, k: int) -> float:
    """The floor: requests written with orjson, answers decoded with orjson, futures by id,
    an event per turn; one reader task."""

    async def main() -> float:
        fake = FakeRuntime(script)
        loop = asyncio.get_running_loop()
        replies: dict[int, asyncio.Future[Any]] = {}
        turns: dict[str, asyncio.Event] = {}
        ids = itertools.count(1)

        async def reader() -> None:
            while True:
                for line in (await fake.receive()).split(b"\n"):
                    if not line:
                        continue
                    message = orjson.loads(line)
                    rid = message.get("id")
                    if rid is not None:
                        replies.pop(rid).set_result(message["result"])
                    elif message["method"] == "turn/completed":
                        # It may come in the same chunk as the turn/start answer.
                        turns.setdefault(message["params"]["turn"]["id"], asyncio.Event()).set()

        async def request(method: str, params: dict[str, Any]) -> Any:
            rid = next(ids)
            replies[rid] = loop.create_future()
            fake.try_send(orjson.dumps({"id": rid, "method": method, "params": params}) + b"\n")
            return await replies[rid]

        async def one(i: int) -> None:
            thread = await request("thread/start", {"ephemeral": True})
            turn_params = {"threadId": thread["thread"]["id"], "input": [{"type": "text"}]}
            turn = await request("turn/start", turn_params)
            await turns.setdefault(turn["turn"]["id"], asyncio.Event()).wait()
            del turns[turn["turn"]["id"]]

        task = asyncio.create_task(reader())
        try:
            return await _timed(k, one)
        finally:
            task.cancel()

    return anyio.run(main)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--k", type=int, default=3000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--json", help="also write the JSON report here")
    options = parser.parse_args()
    cache_bytecode()
    script = Script(*record_task_lines())
    rows: dict[str, list[float]] = {
        "raw (asyncio)": [],
        "AsyncCodex (asyncio)": [],
        "AsyncCodex (trio)": [],
        "CodexPool (asyncio)": [],
        "CodexPool (trio)": [],
    }
    for _ in range(options.repeats):  # clients alternate within each repeat
        rows["raw (asyncio)"].append(measure_raw(script, options.k))
        for backend in ("asyncio", "trio"):
            rows[f"AsyncCodex ({backend})"].append(
                measure_codex(script, options.k, backend, pooled=False)
            )
            rows[f"CodexPool ({backend})"].append(
                measure_codex(script, options.k, backend, pooled=True)
            )
    floor = statistics.median(rows["raw (asyncio)"])
    print(f"K = {options.k} one-turn tasks, {IN_FLIGHT} in flight, {options.repeats} repeats")
    print(f"({len(script.notes)} notifications and 2 answers per task, recorded from the runtime)")
    print("| client | client CPU µs/task, median [min-max] | vs raw |")
    print("|---|---|---|")
    for name, values in rows.items():
        median = statistics.median(values)
        print(
            f"| {name} | {median:.0f} [{min(values):.0f}-{max(values):.0f}] | "
            f"{median / floor:.2f}x |"
        )
    if options.json:
        with open(options.json, "w") as out:
            json.dump({"k": options.k, "rows": rows}, out, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

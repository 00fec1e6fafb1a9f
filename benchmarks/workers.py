"""One measurement, one client, one process: ``python -m benchmarks.workers SCENARIO CLIENT ARGS``.

Clients: ``anyio-asyncio`` and ``anyio-trio`` (codex-anyio), ``official-sync`` and
``official-async`` (``openai_codex``), ``raw`` (a minimal blocking JSON-RPC loop decoding with
orjson, the library's own decoder: the like-for-like floor), ``raw-stdlib`` (the same loop
with stdlib ``json``, the baseline of earlier releases, kept so the change of baseline is
visible), ``raw-asyncio`` and ``raw-trio`` (the same loop as one task on the event loop's
subprocess pipes, reading the pipe in chunks and splitting them on newlines as codex-anyio
does: what an event loop alone costs, the floor of any async client) and
``raw-asyncio-readline`` (the asyncio loop with one ``StreamReader.readline()`` per line, the
floor of earlier releases, which charged the event loop with ``readline``'s own cost). ARGS
is a JSON object; the
result is one JSON object on stdout. Imports are local to each client, so the official SDK's
interpreter never needs codex-anyio and vice versa.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import time
from collections import deque
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OFFICIAL_THREAD_DEFAULTS = {"approval_policy": "on-request", "approvals_reviewer": "auto_review"}
"""What ``openai_codex`` sends with ``thread_start()`` by default (its ``auto_review`` mode)."""
REPLAY = str(HERE / "replay_server.py")
CHUNK = 2**20
"""Bytes per read of a chunked raw reader (what codex-anyio's stdio transport asks for)."""


def rss_mib() -> float:
    """Current resident set size of this process (Linux /proc)."""
    with open("/proc/self/statm") as f:
        pages = int(f.read().split()[1])
    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


def usage() -> dict[str, float]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu_s": r.ru_utime + r.ru_stime, "peak_rss_mib": r.ru_maxrss / 1024}


def scripted_env(args: dict[str, Any]) -> dict[str, str]:
    """Every client's runtime environment, trust store included (``args["trust_env"]``)."""
    return {
        "CODEX_HOME": args["codex_home"],
        "HOME": args["user_home"],
        "CODEX_APP_SERVER_DISABLE_MANAGED_CONFIG": "1",
        # As the scripted harness: warnings, but not the empty trust store's, once per turn.
        "RUST_LOG": "warn,codex_http_client::custom_ca=error,"
        "codex_http_client::client_builder=error,codex_otel.log_only=error",
        **args.get("trust_env", {}),
    }


async def timed_turns(codex: Any, turns: int) -> dict[str, Any]:
    """Sequential turns on one new thread, timed one by one; the first (warm-up) is dropped.

    Both clients' async APIs spell this the same way (``thread_start``, ``thread.run``).
    ``turn_cpu_seconds`` is this process's CPU time per turn (the client's own cost; the
    runtime is another process), to compare with the raw client's in the same run.
    """
    thread = await codex.thread_start()
    times = []
    cpu = []
    for i in range(turns + 1):
        cpu_before = time.process_time()
        started = time.perf_counter()
        await thread.run(f"t{i}")
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_before)
    return {"turn_seconds": times[1:], "turn_cpu_seconds": cpu[1:]}


# -- the raw minimal client ------------------------------------------------------------------


def json_codec(decoder: str) -> tuple[Any, Any]:
    """``(loads, dumps)`` for a raw client: ``orjson`` (what codex-anyio uses) or ``stdlib``."""
    if decoder == "orjson":
        import orjson

        return orjson.loads, orjson.dumps
    if decoder == "stdlib":
        return json.loads, lambda value: json.dumps(value).encode()
    raise SystemExit(f"unknown decoder {decoder!r}")


RAW_INITIALIZE: dict[str, Any] = {
    "clientInfo": {"name": "raw", "version": "0"},
    "capabilities": {"experimentalApi": True},
}
"""The raw clients' ``initialize`` params (one handshake for the blocking, asyncio and Trio
loops)."""


class Raw:
    """The floor: blocking pipes, one JSON decode per line, nothing else.

    ``decoder`` is ``orjson`` by default, the decoder codex-anyio uses, so the ratios compare
    like with like; ``stdlib`` reproduces the baseline of earlier releases.
    """

    def __init__(
        self,
        argv: list[str],
        env: dict[str, str] | None = None,
        cwd: str | None = None,
        *,
        decoder: str = "orjson",
    ):
        self.loads, self.dumps = json_codec(decoder)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        self.next_id = 0

    def send(self, message: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write(self.dumps(message) + b"\n")
        self.proc.stdin.flush()

    def request(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        self.send({"id": self.next_id, "method": method, "params": params})
        while True:
            message = self.read()
            if message.get("id") == self.next_id and "method" not in message:
                return message["result"]

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        message: dict[str, Any] = self.loads(self.proc.stdout.readline())
        return message

    def start(self) -> None:
        self.request("initialize", RAW_INITIALIZE)
        self.send({"method": "initialized"})

    def close(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        self.proc.wait(timeout=10)


def raw_stream(args: dict[str, Any], decoder: str) -> dict[str, Any]:
    raw = Raw([sys.executable, REPLAY, str(args["n"])], decoder=decoder)
    raw.start()
    thread = raw.request("thread/start", {})["thread"]["id"]
    started, cpu = time.perf_counter(), time.process_time()
    raw.send({"id": 99, "method": "turn/start", "params": {"threadId": thread, "input": []}})
    count = 0
    while True:
        message = raw.read()
        method = message.get("method")
        if method == "item/agentMessage/delta":
            count += 1
        elif method == "turn/completed":
            break
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    raw.close()
    return {"events": count, "seconds": elapsed, "cpu_seconds": cpu}


def raw_turns(args: dict[str, Any], decoder: str) -> dict[str, Any]:
    raw = Raw(
        [args["codex_bin"], "app-server"], scripted_env(args), args["workspace"], decoder=decoder
    )
    raw.start()
    thread = raw.request("thread/start", {})["thread"]["id"]
    times = []
    cpu = []
    for i in range(args["turns"] + 1):
        cpu_before = time.process_time()
        started = time.perf_counter()
        raw.request(
            "turn/start", {"threadId": thread, "input": [{"type": "text", "text": f"t{i}"}]}
        )
        while raw.read().get("method") != "turn/completed":
            pass
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_before)
    raw.close()
    return {"turn_seconds": times[1:], "turn_cpu_seconds": cpu[1:]}


def raw_cancel(args: dict[str, Any], decoder: str) -> dict[str, Any]:
    raw = Raw(
        [args["codex_bin"], "app-server"], scripted_env(args), args["workspace"], decoder=decoder
    )
    raw.start()
    thread = raw.request("thread/start", {})["thread"]["id"]
    turn = raw.request("turn/start", {"threadId": thread, "input": [{"type": "text", "text": "x"}]})
    deadline = time.time() + args["timeout"]
    time.sleep(args["timeout"])
    raw.request("turn/interrupt", {"threadId": thread, "turnId": turn["turn"]["id"]})
    while raw.read().get("method") != "turn/completed":
        pass
    completed = time.time()
    raw.close()
    return {"deadline": deadline, "completed_at": completed}


# -- the raw loop on asyncio ------------------------------------------------------------------


class RawAsync:
    """``Raw`` as one asyncio task: asyncio's subprocess pipes, orjson, nothing else."""

    def __init__(self, proc: Any) -> None:
        import orjson

        self.proc = proc
        self.loads, self.dumps = orjson.loads, orjson.dumps
        self.next_id = 0

    @classmethod
    async def open(
        cls, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None
    ) -> RawAsync:
        import asyncio

        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
            limit=2**28,
        )
        raw = cls(proc)
        await raw.request("initialize", RAW_INITIALIZE)
        await raw.send({"method": "initialized"})
        return raw

    async def send(self, message: dict[str, Any]) -> None:
        self.proc.stdin.write(self.dumps(message) + b"\n")
        await self.proc.stdin.drain()

    async def read(self) -> dict[str, Any]:
        message: dict[str, Any] = self.loads(await self.proc.stdout.readline())
        return message

    async def request(self, method: str, params: dict[str, Any]) -> Any:
        self.next_id += 1
        await self.send({"id": self.next_id, "method": method, "params": params})
        while True:
            message = await self.read()
            if message.get("id") == self.next_id and "method" not in message:
                return message["result"]

    async def close(self) -> None:
        self.proc.stdin.close()
        await self.proc.wait()


class RawAsyncChunked(RawAsync):
    """``RawAsync`` reading as codex-anyio does: chunks of up to 1 MiB split on newlines, then
    one decode per line (no ``readline`` per line)."""

    def __init__(self, proc: Any) -> None:
        super().__init__(proc)
        self.rest = b""
        self.lines: deque[bytes] = deque()

    async def read(self) -> dict[str, Any]:
        while not self.lines:
            chunk = await self.proc.stdout.read(CHUNK)
            if not chunk:
                raise EOFError("the server closed its output")
            *complete, self.rest = (self.rest + chunk).split(b"\n")
            self.lines.extend(complete)
        message: dict[str, Any] = self.loads(self.lines.popleft())
        return message


class RawTrio:
    """``RawAsyncChunked`` on Trio: ``trio.lowlevel.open_process`` pipes, chunks, orjson."""

    def __init__(self, proc: Any) -> None:
        import orjson

        self.proc = proc
        self.loads, self.dumps = orjson.loads, orjson.dumps
        self.next_id = 0
        self.rest = b""
        self.lines: deque[bytes] = deque()

    @classmethod
    async def open(
        cls, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None
    ) -> RawTrio:
        import trio

        proc = await trio.lowlevel.open_process(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **(env or {})},
            cwd=cwd,
        )
        raw = cls(proc)
        await raw.request("initialize", RAW_INITIALIZE)
        await raw.send({"method": "initialized"})
        return raw

    async def send(self, message: dict[str, Any]) -> None:
        await self.proc.stdin.send_all(self.dumps(message) + b"\n")

    async def read(self) -> dict[str, Any]:
        while not self.lines:
            chunk = await self.proc.stdout.receive_some(CHUNK)
            if not chunk:
                raise EOFError("the server closed its output")
            *complete, self.rest = (self.rest + chunk).split(b"\n")
            self.lines.extend(complete)
        message: dict[str, Any] = self.loads(self.lines.popleft())
        return message

    request = RawAsync.request

    async def close(self) -> None:
        await self.proc.stdin.aclose()
        await self.proc.wait()


async def raw_async_stream(open_raw: Any, args: dict[str, Any]) -> dict[str, Any]:
    raw = await open_raw([sys.executable, REPLAY, str(args["n"])])
    thread = (await raw.request("thread/start", {}))["thread"]["id"]
    started, cpu = time.perf_counter(), time.process_time()
    await raw.send({"id": 99, "method": "turn/start", "params": {"threadId": thread, "input": []}})
    count = 0
    while True:
        method = (await raw.read()).get("method")
        if method == "item/agentMessage/delta":
            count += 1
        elif method == "turn/completed":
            break
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    await raw.close()
    return {"events": count, "seconds": elapsed, "cpu_seconds": cpu}


async def raw_async_turns(open_raw: Any, args: dict[str, Any]) -> dict[str, Any]:
    raw = await open_raw([args["codex_bin"], "app-server"], scripted_env(args), args["workspace"])
    thread = (await raw.request("thread/start", {}))["thread"]["id"]
    times, cpu = [], []
    for i in range(args["turns"] + 1):
        cpu_before = time.process_time()
        started = time.perf_counter()
        turn_input = [{"type": "text", "text": f"t{i}"}]
        await raw.request("turn/start", {"threadId": thread, "input": turn_input})
        while (await raw.read()).get("method") != "turn/completed":
            pass
        times.append(time.perf_counter() - started)
        cpu.append(time.process_time() - cpu_before)
    await raw.close()
    return {"turn_seconds": times[1:], "turn_cpu_seconds": cpu[1:]}


def raw_async(client: str, scenario: str, args: dict[str, Any]) -> dict[str, Any]:
    """A raw async loop: ``raw-asyncio`` (chunks), ``raw-asyncio-readline``, ``raw-trio``."""
    run = {"stream": raw_async_stream, "turns": raw_async_turns}[scenario]
    if client == "raw-trio":
        import trio

        return trio.run(run, RawTrio.open, args)  # type: ignore[no-any-return]
    import asyncio

    kind = RawAsync if client == "raw-asyncio-readline" else RawAsyncChunked
    return asyncio.run(run(kind.open, args))


# -- codex-anyio ------------------------------------------------------------------------------


def ours(backend: str, scenario: str, args: dict[str, Any]) -> dict[str, Any]:
    import anyio

    from codex_anyio import AsyncCodex, CodexConfig, Limits

    def replay_config(n: int) -> CodexConfig:
        return CodexConfig(launch_args_override=(sys.executable, REPLAY, str(n)))

    def real_config() -> CodexConfig:
        return CodexConfig(
            codex_bin=args["codex_bin"], env=scripted_env(args), cwd=args["workspace"]
        )

    async def timed_stream(codex: Any) -> dict[str, Any]:
        thread = await codex.thread_start()
        started, cpu = time.perf_counter(), time.process_time()
        count = 0
        async with thread.turn("go") as turn:
            async for event in turn.stream():
                if event.method == "item/agentMessage/delta":
                    event.params.delta  # noqa: B018 - typed access is the point
                    count += 1
        return {
            "events": count,
            "seconds": time.perf_counter() - started,
            "cpu_seconds": time.process_time() - cpu,
        }

    async def stream() -> dict[str, Any]:
        async with AsyncCodex(replay_config(args["n"])) as codex:
            return await timed_stream(codex)

    async def turns() -> dict[str, Any]:
        async with AsyncCodex(real_config()) as codex:
            return await timed_turns(codex, args["turns"])

    async def stream_socket() -> dict[str, Any]:
        """``stream`` against the WebSocket replay server (``args["unix"]``: over a unix
        socket), so its ratio to ``stream`` is the cost of the transport alone."""
        argv = [sys.executable, "-m", "benchmarks.ws_replay_server", str(args["n"])]
        if args.get("unix"):
            argv.append(args["unix"])
        async with await anyio.open_process(argv, cwd=HERE.parent) as server:
            assert server.stdout is not None
            banner = b""
            while b"\n" not in banner:
                banner += await server.stdout.receive()
            url = banner.decode().split("listening on: ", 1)[1].split()[0]
            try:
                async with AsyncCodex(CodexConfig(connect=url)) as codex:
                    return await timed_stream(codex)
            finally:
                server.kill()

    async def concurrency() -> dict[str, Any]:
        k = args["k"]
        async with AsyncCodex(real_config()) as codex:
            limiter = anyio.CapacityLimiter(8)
            threads: list[Any] = []

            async def start() -> None:
                async with limiter:
                    # The official client's default thread settings, so that both clients
                    # ask the runtime for the same work (it changes the runtime's wall time).
                    thread = await codex.thread_start(**OFFICIAL_THREAD_DEFAULTS)
                    threads.append(thread)

            async with anyio.create_task_group() as tg:
                for _ in range(k):
                    tg.start_soon(start)
            before = usage()
            completed = 0

            async def run(thread: Any) -> None:
                nonlocal completed
                result = await thread.run("go")
                completed += result.status == "completed"

            started = time.perf_counter()
            async with anyio.create_task_group() as tg:
                for thread in threads:
                    tg.start_soon(run, thread)
            wall = time.perf_counter() - started
            after = usage()
            return {
                "k": k,
                "wall_s": wall,
                "cpu_s": after["cpu_s"] - before["cpu_s"],
                "peak_rss_mib": after["peak_rss_mib"],
                "completed": completed,
            }

    async def cancel() -> dict[str, Any]:
        async with AsyncCodex(real_config()) as codex:
            thread = await codex.thread_start()
            with anyio.move_on_after(args["timeout"]) as scope:
                await thread.run("x")
            completed = time.time()
            deadline = completed - (anyio.current_time() - scope.deadline)
            status = (await thread.read(include_turns=True)).thread.turns[-1].status
            return {"deadline": deadline, "completed_at": completed, "status": status}

    async def storm() -> dict[str, Any]:
        """``k`` turns at once on one client, more than its request slots, all cancelled
        ``cancel_after`` seconds after they start (the model stalls): the time until every
        one has ended (interrupted on the server, or never sent)."""
        from codex_anyio import lean_thread_options

        k = args["k"]
        async with AsyncCodex(real_config()) as codex:
            threads: list[Any] = []

            async def start() -> None:
                threads.append(await codex.thread_start(**lean_thread_options()))

            async with anyio.create_task_group() as tg:
                for _ in range(k):
                    tg.start_soon(start)
            started = time.perf_counter()
            with anyio.move_on_after(args["cancel_after"]):
                async with anyio.create_task_group() as tg:
                    for thread in threads:
                        tg.start_soon(thread.run, "x")
            wall = time.perf_counter() - started
            stats = codex.client.statistics()
            return {
                "k": k,
                "wall_s": wall,
                "turn_starts_in_flight": stats.router.turn_starts_in_flight,
                "pending_requests": stats.pending_requests,
            }

    async def memory() -> dict[str, Any]:
        n = args["n"]
        limits = Limits(turn_buffer=n + 100)
        async with AsyncCodex(replay_config(n), limits=limits) as codex:
            thread = await codex.thread_start()
            before = rss_mib()
            async with thread.turn("go") as turn:
                # Polling a gauge is the measurement itself, not synchronisation.
                while turn._stream.statistics().current_buffer_used < n + 1:  # noqa: ASYNC110
                    await anyio.sleep(0.01)
                after = rss_mib()
                async for _ in turn.stream():
                    pass
        async with AsyncCodex(real_config()) as codex:
            threads = [await codex.thread_start() for _ in range(args["idle_turns"])]
            idle_before = rss_mib()
            handles = [await t.turn("wait") for t in threads]
            idle_after = rss_mib()
            for handle in handles:
                await handle.aclose()
        return {
            "kib_per_buffered_event": (after - before) * 1024 / n,
            "kib_per_idle_turn": (idle_after - idle_before) * 1024 / len(threads),
        }

    run = {
        "stream": stream,
        "turns": turns,
        "concurrency": concurrency,
        "cancel": cancel,
        "memory": memory,
        "storm": storm,
        "stream-socket": stream_socket,
    }[scenario]
    return anyio.run(run, backend=backend)


# -- the official SDK --------------------------------------------------------------------------


def official(mode: str, scenario: str, args: dict[str, Any]) -> dict[str, Any]:
    import asyncio

    from openai_codex import AsyncCodex, Codex, CodexConfig

    def replay_config(n: int) -> Any:
        return CodexConfig(launch_args_override=(sys.executable, REPLAY, str(n)))

    def real_config() -> Any:
        return CodexConfig(
            codex_bin=args["codex_bin"], env=scripted_env(args), cwd=args["workspace"]
        )

    if mode == "sync":
        if scenario == "stream":
            with Codex(replay_config(args["n"])) as codex:
                thread = codex.thread_start()
                started = time.perf_counter()
                count = 0
                for event in thread.turn("go").stream():
                    if event.method == "item/agentMessage/delta":
                        event.payload.delta  # noqa: B018
                        count += 1
                return {"events": count, "seconds": time.perf_counter() - started}
        if scenario == "turns":
            with Codex(real_config()) as codex:
                thread = codex.thread_start()
                times = []
                cpu = []
                for i in range(args["turns"] + 1):
                    cpu_before = time.process_time()
                    started = time.perf_counter()
                    thread.run(f"t{i}")
                    times.append(time.perf_counter() - started)
                    cpu.append(time.process_time() - cpu_before)
                return {"turn_seconds": times[1:], "turn_cpu_seconds": cpu[1:]}
        raise SystemExit(f"official-sync has no {scenario} scenario")

    async def stream() -> dict[str, Any]:
        async with AsyncCodex(replay_config(args["n"])) as codex:
            thread = await codex.thread_start()
            started = time.perf_counter()
            count = 0
            handle = await thread.turn("go")
            async for event in handle.stream():
                if event.method == "item/agentMessage/delta":
                    event.payload.delta  # noqa: B018
                    count += 1
            return {"events": count, "seconds": time.perf_counter() - started}

    async def turns() -> dict[str, Any]:
        async with AsyncCodex(real_config()) as codex:
            return await timed_turns(codex, args["turns"])

    async def concurrency() -> dict[str, Any]:
        k = args["k"]
        async with AsyncCodex(real_config()) as codex:
            sem = asyncio.Semaphore(8)

            async def start() -> Any:
                async with sem:
                    return await codex.thread_start()

            threads = await asyncio.gather(*(start() for _ in range(k)))
            before = usage()
            started = time.perf_counter()
            results = await asyncio.gather(*(t.run("go") for t in threads))
            wall = time.perf_counter() - started
            after = usage()
            completed = sum(str(r.status).endswith("completed") for r in results)
            return {
                "k": k,
                "wall_s": wall,
                "cpu_s": after["cpu_s"] - before["cpu_s"],
                "peak_rss_mib": after["peak_rss_mib"],
                "completed": completed,
            }

    async def cancel() -> dict[str, Any]:
        async with AsyncCodex(real_config()) as codex:
            thread = await codex.thread_start()
            deadline = time.time() + args["timeout"]
            try:
                await asyncio.wait_for(thread.run("x"), args["timeout"])
            except (asyncio.TimeoutError, TimeoutError):
                pass
            await asyncio.sleep(args["observe"])
            read = await thread.read(include_turns=True)
            status = str(read.thread.turns[-1].status)
            return {"deadline": deadline, "completed_at": None, "status": status}

    run = {"stream": stream, "turns": turns, "concurrency": concurrency, "cancel": cancel}[scenario]
    return asyncio.run(run())


def main() -> None:
    scenario, client, raw_args = sys.argv[1], sys.argv[2], sys.argv[3]
    args = json.loads(raw_args)
    if client in ("raw-asyncio", "raw-asyncio-readline", "raw-trio"):
        result = raw_async(client, scenario, args)
    elif client in ("raw", "raw-stdlib"):
        decoder = "stdlib" if client == "raw-stdlib" else "orjson"
        scenarios = {"stream": raw_stream, "turns": raw_turns, "cancel": raw_cancel}
        result = scenarios[scenario](args, decoder)
    elif client.startswith("anyio-"):
        result = ours(client.removeprefix("anyio-"), scenario, args)
    else:
        result = official(client.removeprefix("official-"), scenario, args)
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()

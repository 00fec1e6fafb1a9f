"""Many one-turn tasks: the best raw set-up beside ``CodexPool``, ``codex-anyio batch`` and a
default ``AsyncCodex``, with each turn's CPU split between the runtime, the model and the client.

    python -m benchmarks.pool                         # K = 128, 256, 512; 3 repeats
    python -m benchmarks.pool --ks 128 --repeats 1    # a smoke run
    python -m benchmarks.pool --shapes 1x32 2x16 4x8  # CodexPool(servers=S, max_turns=M) rows
    python -m benchmarks.pool --json out.json --markdown out.md

K one-turn tasks (a new thread and one turn each, thread start included in the time) against
the real runtime and an instant scripted model in its own process. Every runtime reads the
same ``config.toml`` and gets the same trust store (the minimal one: the model is plain HTTP on
loopback); what differs is what the row names:

- ``raw-best``: the best raw set-up, the floor: one app-server, 32 turns in flight, lean
  threads, the notifications a result does not need opted out, one asyncio task reading the
  pipe in chunks and decoding with orjson, nothing else.
- ``batch``: the ``codex-anyio batch`` command on a K-line tasks file, in a process of its
  own, timed as its summary times it: from its pool being ready to its last row (the other
  rows too start their clocks with their runtimes up); its runtime CPU is the whole
  command's. ``batch (whole command)``: the same run from the command's start to its exit
  (Python, imports, the pool's start and close, the files).
- ``pool``: ``CodexPool()`` with its defaults; ``pool-SxM``: ``CodexPool(servers=S,
  max_turns=M)`` with the batch's opt-outs (``--shapes``), the process-count table.
- ``lean-1``: one ``AsyncCodex``, lean threads, all K at once.
- ``default``: one ``AsyncCodex``, the runtime's default threads, all K at once (the
  hand-written loop; ``--ks`` bounds it like the others).

CPU per turn: the runtime's (its processes' user + system time over the tasks), the model's
(the model server process's) and the client's (the measuring process; for ``batch``, the
command's own process, start-up included). **% of limit** is the share of the machine's CPU
the tasks' unavoidable work used: ``K x (runtime + model CPU per turn of raw-best, same K, same
run) / (cores x wall)``; 100 % would be the floor's work spread over every core for the whole
wall time. Each (client, K) runs in a fresh process, clients alternating within each repeat;
medians over repeats, min-max in brackets.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import runpy
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from benchmarks import cache_bytecode

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLIENTS = ("raw-best", "batch", "pool", "lean-1", "default")
RAW_BEST_IN_FLIGHT = 32
"""Turns in flight in the raw set-up: one app-server saturates 2 cores with 32 (measured)."""


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pid_cpu(pid: int) -> float:
    """User + system seconds of a live process (Linux /proc)."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


async def _timed(
    k: int,
    run_one: Callable[[str], Any],
    runtime_pids: Callable[[], list[int]],
    *,
    native: bool = False,
) -> dict[str, Any]:
    """Run ``k`` tasks at once (each client bounds its own turns in flight) and time them;
    ``native``: with ``asyncio.gather`` (the raw client), else in an AnyIO task group."""
    latencies: list[float] = []
    failures = 0

    async def one(i: int) -> None:
        nonlocal failures
        started = time.perf_counter()
        try:
            status = await run_one(f"task {i}")
        except Exception:
            status = "error"
        latencies.append(time.perf_counter() - started)
        failures += status != "completed"

    pids = runtime_pids()
    runtime_before = sum(_pid_cpu(pid) for pid in pids)
    cpu, started = _cpu(), time.perf_counter()
    if native:
        await asyncio.gather(*(one(i) for i in range(k)))
    else:
        import anyio

        async with anyio.create_task_group() as tg:
            for i in range(k):
                tg.start_soon(one, i)
    wall = time.perf_counter() - started
    client = _cpu() - cpu
    runtime = sum(_pid_cpu(pid) for pid in pids) - runtime_before
    return {
        "wall_s": wall,
        "client_cpu_ms": client * 1000 / k,
        "runtime_cpu_ms": runtime * 1000 / k,
        "p50_ms": _pct(latencies, 50) * 1000,
        "p95_ms": _pct(latencies, 95) * 1000,
        "failures": failures,
    }


# -- the floor: the best raw set-up ------------------------------------------------------------


class RawBest:
    """One app-server driven by one asyncio reader task: chunked reads, a newline split, orjson,
    a future per request and per turn; nothing else (no routing, typing or cancellation)."""

    def __init__(self, proc: Any) -> None:
        import orjson

        self.proc = proc
        self.loads, self.dumps = orjson.loads, orjson.dumps
        self.next_id = 0
        self.replies: dict[int, asyncio.Future[Any]] = {}
        self.turns: dict[str, asyncio.Future[Any]] = {}
        """Each task's thread id -> its turn's end (one turn per thread)."""
        self.reader: asyncio.Task[None] | None = None

    @classmethod
    async def open(
        cls, argv: list[str], env: dict[str, str], cwd: str, opt_outs: tuple[str, ...]
    ) -> RawBest:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env={**os.environ, **env},
            cwd=cwd,
        )
        raw = cls(proc)
        raw.reader = asyncio.create_task(raw.read_loop())
        capabilities = {"experimentalApi": True, "optOutNotificationMethods": list(opt_outs)}
        await raw.call(
            "initialize",
            {"clientInfo": {"name": "raw", "version": "0"}, "capabilities": capabilities},
        )
        raw.proc.stdin.write(raw.dumps({"method": "initialized"}) + b"\n")
        return raw

    async def read_loop(self) -> None:
        read, loads, rest = self.proc.stdout.read, self.loads, b""
        while chunk := await read(1 << 16):
            lines = (rest + chunk).split(b"\n")
            rest = lines.pop()
            for line in lines:
                message = loads(line)
                method = message.get("method")
                if method is None:
                    self.replies.pop(message["id"]).set_result(message.get("result"))
                elif method == "turn/completed":
                    params = message["params"]
                    done = self.turns.pop(params["threadId"], None)
                    if done is not None:
                        done.set_result(params["turn"])

    def call(self, method: str, params: dict[str, Any]) -> asyncio.Future[Any]:
        self.next_id += 1
        reply = self.replies[self.next_id] = asyncio.get_running_loop().create_future()
        message = {"id": self.next_id, "method": method, "params": params}
        self.proc.stdin.write(self.dumps(message) + b"\n")
        return reply

    async def turn(self, thread: str, prompt: str) -> Any:
        done = self.turns[thread] = asyncio.get_running_loop().create_future()
        await self.call(
            "turn/start", {"threadId": thread, "input": [{"type": "text", "text": prompt}]}
        )
        return await done

    async def close(self) -> None:
        self.proc.stdin.close()
        await self.proc.wait()
        if self.reader is not None:
            await self.reader


def measure_raw_best(k: int, args: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.workers import scripted_env
    from codex_anyio import lean_thread_options, result_only_opt_outs

    async def main() -> dict[str, Any]:
        argv = [args["codex_bin"], "app-server"]
        env = scripted_env(args)
        raw = await RawBest.open(argv, env, args["workspace"], result_only_opt_outs())
        slots = asyncio.Semaphore(RAW_BEST_IN_FLIGHT)
        lean = lean_thread_options()

        async def run_one(prompt: str) -> str:
            async with slots:
                thread = (await raw.call("thread/start", lean))["thread"]["id"]
                return str((await raw.turn(thread, prompt))["status"])

        try:
            await run_one("warm-up")
            return await _timed(k, run_one, lambda: [raw.proc.pid], native=True)
        finally:
            await raw.close()

    return asyncio.run(main())


# -- codex-anyio in this process -----------------------------------------------------------------


def measure(client: str, k: int, args: dict[str, Any]) -> dict[str, Any]:
    import anyio

    from benchmarks.workers import scripted_env
    from codex_anyio import (
        AsyncCodex,
        CodexConfig,
        CodexPool,
        lean_thread_options,
        result_only_opt_outs,
    )

    config = CodexConfig(codex_bin=args["codex_bin"], env=scripted_env(args), cwd=args["workspace"])

    async def single(lean: bool) -> dict[str, Any]:
        options = lean_thread_options() if lean else {}
        async with AsyncCodex(config) as codex:

            async def run_one(prompt: str) -> str:
                thread = await codex.thread_start(**options)
                return (await thread.run(prompt)).status

            await run_one("warm-up")
            return await _timed(k, run_one, lambda: [codex.client._transport.pid])  # type: ignore[attr-defined]

    async def pool(shape: str | None) -> dict[str, Any]:
        options: dict[str, Any] = {}
        if shape is not None:
            # The process-count table: the shape with what the batch's own pool opts out of,
            # so a row differs from the batch's pool only in its shape.
            servers, max_turns = (int(part) for part in shape.split("x"))
            options = {
                "servers": servers,
                "max_turns": max_turns,
                "opt_out_notification_methods": result_only_opt_outs(),
            }
        async with CodexPool(config=config, **options) as p:

            async def run_one(prompt: str) -> str:
                return (await p.run(prompt)).status

            await p.wait_ready()
            await run_one("warm-up")
            result = await _timed(k, run_one, lambda: [pid for pid in p.member_pids() if pid])
            result["servers"], result["max_turns"] = p.servers, p.max_turns
            return result

    if client.startswith("pool"):
        shape = client.removeprefix("pool-") if client != "pool" else None
        return anyio.run(pool, shape)
    return anyio.run(single, client == "lean-1")


# -- the batch command in a process of its own ---------------------------------------------------


def batch_child(usage_file: str, argv: list[str]) -> None:
    """Run ``codex-anyio ARGV`` in this process, then write its own CPU and its children's
    (the runtimes it started and reaped) to ``usage_file``."""
    from codex_anyio._cli._batch_report import Tally

    # The tasks' phase, as the command's own summary counts it (from its pool being ready to
    # its last row), timed precisely: what compares with the raw set-up, whose runtime is up
    # before its clock starts. Start-up (Python, imports, the pool) is reported apart.
    marks: dict[str, tuple[float, float]] = {}
    ready, add = Tally.pool_ready, Tally.add

    def pool_ready(self: Any) -> None:
        marks["ready"] = (time.perf_counter(), _cpu())
        ready(self)

    def counted(self: Any, result: Any) -> Any:
        cause = add(self, result)
        marks["last"] = (time.perf_counter(), _cpu())
        return cause

    Tally.pool_ready, Tally.add = pool_ready, counted  # type: ignore[method-assign]
    sys.argv = ["codex-anyio", *argv]
    status: Any = 0
    try:
        runpy.run_module("codex_anyio", run_name="__main__", alter_sys=True)
    except SystemExit as exc:
        status = exc.code
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    phase = {}
    if "ready" in marks and "last" in marks:
        phase = {
            "tasks_wall_s": marks["last"][0] - marks["ready"][0],
            "tasks_client_s": marks["last"][1] - marks["ready"][1],
        }
    Path(usage_file).write_text(
        json.dumps(
            {
                "client_s": own.ru_utime + own.ru_stime,
                "runtime_s": children.ru_utime + children.ru_stime,
                **phase,
            }
        )
    )
    raise SystemExit(status)


def measure_batch(k: int, args: dict[str, Any]) -> dict[str, Any]:
    from benchmarks.workers import scripted_env

    with tempfile.TemporaryDirectory(prefix="codex-bench-batch-") as scratch:
        tasks = Path(scratch) / "tasks.jsonl"
        output = Path(scratch) / "results.jsonl"
        usage = Path(scratch) / "usage.json"
        tasks.write_text(
            "".join(json.dumps({"id": i, "prompt": f"task {i}"}) + "\n" for i in range(k))
        )
        # The runtime inherits the trust store through the command's environment.
        env = {**os.environ, **scripted_env(args)}
        command = ["batch", str(tasks), "-o", str(output), "--progress", "none"]
        started = time.perf_counter()
        done = subprocess.run(
            [sys.executable, "-m", "benchmarks.pool", "--batch-child", str(usage), *command],
            cwd=args["workspace"],
            env={**env, "PYTHONPATH": str(ROOT)},
            capture_output=True,
            text=True,
            timeout=900,
        )
        wall = time.perf_counter() - started
        if done.returncode not in (0, 1):  # 1: some tasks did not complete, counted below
            raise RuntimeError(f"batch failed:\n{done.stderr[-3000:]}")
        spent = json.loads(usage.read_text())
        results = [json.loads(line) for line in output.read_text().splitlines()]
        durations = [r["duration_ms"] for r in results]
        return {
            "command_wall_s": wall,
            "wall_s": spent.get("tasks_wall_s", wall),
            "command_client_cpu_ms": spent["client_s"] * 1000 / k,
            "client_cpu_ms": spent.get("tasks_client_s", spent["client_s"]) * 1000 / k,
            "runtime_cpu_ms": spent["runtime_s"] * 1000 / k,
            "p50_ms": _pct(durations, 50),
            "p95_ms": _pct(durations, 95),
            "failures": sum(r["status"] != "completed" for r in results) + k - len(results),
        }


# -- coordinator ----------------------------------------------------------------------------------


def worker(client: str, k: int, args: dict[str, Any], model_pid: int) -> dict[str, Any]:
    model_before = _pid_cpu(model_pid)
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.pool", "--worker", client, str(k), json.dumps(args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{client} K={k} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    # The model's CPU over the worker's life: it is idle outside the tasks (and their one
    # warm-up turn, counted in; the batch has none).
    result["model_cpu_ms"] = (_pid_cpu(model_pid) - model_before) * 1000 / k
    return result


def _med(rows: list[dict[str, Any]], key: str, fmt: str, brackets: bool = True) -> str:
    values = [r[key] for r in rows if r.get(key) is not None]
    if not values:
        return "-"
    text = format(statistics.median(values), fmt)
    if brackets and len(values) > 1:
        text += f" [{format(min(values), fmt)}-{format(max(values), fmt)}]"
    return text


def floor_cpu_ms(by_client: dict[str, list[dict[str, Any]]]) -> float | None:
    """The unavoidable runtime + model CPU per turn: raw-best's, at this K in this run."""
    rows = by_client.get("raw-best") or []
    if not rows:
        return None
    return statistics.median(r["runtime_cpu_ms"] + r["model_cpu_ms"] for r in rows)


def table(report: dict[str, Any]) -> str:
    cores = report["cpu_count"]
    lines = [
        "| client | K | wall s | turns/s | vs raw-best | runtime CPU ms/turn | model | client "
        "| % of limit | p50 ms | p95 ms | failures |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for k, by_client in report["results"].items():
        whole = [
            {**r, "wall_s": r["command_wall_s"], "client_cpu_ms": r["command_client_cpu_ms"]}
            for r in by_client.get("batch", [])
            if "command_wall_s" in r
        ]
        if whole:  # right after the batch row
            ordered: dict[str, list[dict[str, Any]]] = {}
            for client, rows in by_client.items():
                ordered[client] = rows
                if client == "batch":
                    ordered["batch (whole command)"] = whole
            by_client = ordered
        floor = floor_cpu_ms(by_client)
        best = by_client.get("raw-best")
        best_rate = statistics.median(int(k) / r["wall_s"] for r in best) if best else None
        for client, rows in by_client.items():
            rate = statistics.median(int(k) / r["wall_s"] for r in rows)
            own = statistics.median(r["runtime_cpu_ms"] + r["model_cpu_ms"] for r in rows)
            work = floor if floor is not None else own
            limit = statistics.median(int(k) * work / 1000 / (cores * r["wall_s"]) for r in rows)
            lines.append(
                f"| {client} | {k} | {_med(rows, 'wall_s', '.2f')} | {rate:.1f} | "
                f"{f'{rate / best_rate:.2f}x' if best_rate else '-'} | "
                f"{_med(rows, 'runtime_cpu_ms', '.1f', False)} | "
                f"{_med(rows, 'model_cpu_ms', '.1f', False)} | "
                f"{_med(rows, 'client_cpu_ms', '.2f', False)} | {limit:.0%} | "
                f"{_med(rows, 'p50_ms', '.0f', False)} | {_med(rows, 'p95_ms', '.0f', False)} | "
                f"{max(r['failures'] for r in rows)} |"
            )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--batch-child":
        batch_child(sys.argv[2], sys.argv[3:])
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        client, k, raw = sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
        if client == "batch":
            result = measure_batch(k, raw)
        elif client == "raw-best":
            result = measure_raw_best(k, raw)
        else:
            result = measure(client, k, raw)
        print(json.dumps(result), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[128, 256, 512])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument(
        "--shapes", nargs="*", default=[], metavar="SxM", help="CodexPool(servers=S, max_turns=M)"
    )
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--markdown", type=Path, help="also write the table here")
    options = parser.parse_args()
    clients = [*options.clients, *(f"pool-{shape}" for shape in options.shapes)]
    cache_bytecode()

    from benchmarks.__main__ import model_server

    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "repeats": options.repeats,
        "results": {},
    }
    with model_server("instant") as (args, proc):
        for k in options.ks:
            by_client: dict[str, list[dict[str, Any]]] = {c: [] for c in clients}
            for _ in range(options.repeats):
                for client in clients:
                    by_client[client].append(worker(client, k, args, proc.pid))
            report["results"][str(k)] = by_client
    text = table(report)
    print(text)
    if options.json:
        options.json.write_text(json.dumps(report, indent=2))
    if options.markdown:
        options.markdown.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

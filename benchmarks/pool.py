"""Thousands of turns: one default ``AsyncCodex`` beside ``CodexPool`` and ``codex-anyio batch``.

    python -m benchmarks.pool                       # K = 32, 128, 256; 3 repeats
    python -m benchmarks.pool --ks 32 --repeats 1   # a smoke run
    python -m benchmarks.pool --json out.json

K one-turn tasks (a new thread and one turn each, thread start included in the time) against
the real runtime and an instant scripted model in its own process. Every client is
codex-anyio (same JSON decoder), every runtime reads the same ``config.toml``; what differs is
only what the issue is about:

- ``default``: one ``AsyncCodex``, default threads, all K tasks at once (the hand-written loop).
- ``lean-1``: the same single process with lean threads (snapshot off, ephemeral, unused
  features off): what the thread settings alone buy.
- ``pool``: ``CodexPool()`` with its defaults (4 processes per CPU, 8 turns per CPU, lean).
- ``batch``: ``codex-anyio batch`` on a K-line tasks file (a process of its own; its wall time
  includes starting the pool and Python, its ``batch wall`` only the tasks).

Each (client, K) runs in a fresh process, clients alternating within each repeat; the table
gives medians over repeats with min-max, client CPU per turn (the measuring process only, not
the runtimes), per-task latency p50/p95, and failures (tasks not ``completed``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
CLIENTS = ("default", "lean-1", "pool", "batch")


def _cpu() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def _pct(values: list[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q / 100 * len(ordered)))]


# -- worker (one measurement per process) -------------------------------------------------------


def measure(client: str, k: int, args: dict[str, Any]) -> dict[str, Any]:
    import anyio

    from benchmarks.workers import scripted_env
    from codex_anyio import AsyncCodex, CodexConfig, CodexPool, lean_thread_options

    config = CodexConfig(codex_bin=args["codex_bin"], env=scripted_env(args), cwd=args["workspace"])

    async def tasks(run_one: Any) -> dict[str, Any]:
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

        cpu, started = _cpu(), time.perf_counter()
        async with anyio.create_task_group() as tg:
            for i in range(k):
                tg.start_soon(one, i)
        wall = time.perf_counter() - started
        return {
            "wall_s": wall,
            "cpu_ms_per_turn": (_cpu() - cpu) * 1000 / k,
            "p50_ms": _pct(latencies, 50) * 1000,
            "p95_ms": _pct(latencies, 95) * 1000,
            "failures": failures,
        }

    async def single(lean: bool) -> dict[str, Any]:
        options = lean_thread_options() if lean else {}
        async with AsyncCodex(config) as codex:

            async def run_one(prompt: str) -> str:
                thread = await codex.thread_start(**options)
                return (await thread.run(prompt)).status

            return await tasks(run_one)

    async def pool() -> dict[str, Any]:
        async with CodexPool(config=config) as p:

            async def run_one(prompt: str) -> str:
                return (await p.run(prompt)).status

            result = await tasks(run_one)
            result["servers"] = p.servers
            return result

    run = {"default": lambda: single(False), "lean-1": lambda: single(True), "pool": pool}
    return anyio.run(run[client])


def measure_batch(k: int, args: dict[str, Any]) -> dict[str, Any]:
    with tempfile.TemporaryDirectory(prefix="codex-bench-batch-") as scratch:
        tasks = Path(scratch) / "tasks.jsonl"
        output = Path(scratch) / "results.jsonl"
        tasks.write_text(
            "".join(json.dumps({"id": i, "prompt": f"task {i}"}) + "\n" for i in range(k))
        )
        from benchmarks.workers import scripted_env

        env = {**os.environ, **scripted_env(args)}
        started = time.perf_counter()
        done = subprocess.run(
            [
                sys.executable,
                "-m",
                "codex_anyio",
                "batch",
                str(tasks),
                "-o",
                str(output),
                "--progress",
                "none",
            ],
            cwd=args["workspace"],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,
        )
        wall = time.perf_counter() - started
        if done.returncode not in (0, 1):  # 1: some tasks did not complete, counted below
            raise RuntimeError(f"batch failed:\n{done.stderr[-3000:]}")
        results = [json.loads(line) for line in output.read_text().splitlines()]
        durations = [r["duration_ms"] for r in results]
        own = next(
            (float(line.split()[-2]) for line in done.stdout.splitlines() if "wall time" in line),
            wall,
        )
        return {
            "wall_s": wall,
            "batch_wall_s": own,
            "cpu_ms_per_turn": None,
            "p50_ms": _pct(durations, 50),
            "p95_ms": _pct(durations, 95),
            "failures": sum(r["status"] != "completed" for r in results) + k - len(results),
        }


# -- coordinator ----------------------------------------------------------------------------------


def worker(client: str, k: int, args: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.pool", "--worker", client, str(k), json.dumps(args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=900,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{client} K={k} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def table(report: dict[str, Any]) -> str:
    lines = [
        "| client | K | wall s | turns/s | batch wall s | client CPU ms/turn | p50 ms | p95 ms | failures |",
        "|---|---|---|---|---|---|---|---|---|",
    ]

    def med(rows: list[dict[str, Any]], key: str, fmt: str) -> str:
        values = [r[key] for r in rows if r.get(key) is not None]
        if not values:
            return "-"
        text = format(statistics.median(values), fmt)
        if len(values) > 1:
            text += f" [{format(min(values), fmt)}-{format(max(values), fmt)}]"
        return text

    for k, by_client in report["results"].items():
        for client, rows in by_client.items():
            rate = [int(k) / r["wall_s"] for r in rows]
            lines.append(
                f"| {client} | {k} | {med(rows, 'wall_s', '.2f')} | "
                f"{statistics.median(rate):.1f} | {med(rows, 'batch_wall_s', '.2f')} | "
                f"{med(rows, 'cpu_ms_per_turn', '.1f')} | {med(rows, 'p50_ms', '.0f')} | "
                f"{med(rows, 'p95_ms', '.0f')} | {max(r['failures'] for r in rows)} |"
            )
    return "\n".join(lines)


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        client, k, raw = sys.argv[2], int(sys.argv[3]), json.loads(sys.argv[4])
        result = measure_batch(k, raw) if client == "batch" else measure(client, k, raw)
        print(json.dumps(result), flush=True)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ks", type=int, nargs="+", default=[32, 128, 256])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--clients", nargs="+", choices=CLIENTS, default=list(CLIENTS))
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    options = parser.parse_args()

    from benchmarks.__main__ import model_server

    report: dict[str, Any] = {
        "date": time.strftime("%Y-%m-%d"),
        "cpu_count": os.cpu_count(),
        "repeats": options.repeats,
        "results": {},
    }
    with model_server("instant") as (args, _):
        for k in options.ks:
            by_client: dict[str, list[dict[str, Any]]] = {c: [] for c in options.clients}
            for _ in range(options.repeats):
                for client in options.clients:
                    by_client[client].append(worker(client, k, args))
            report["results"][str(k)] = by_client
    text = table(report)
    print(text)
    if options.json:
        options.json.write_text(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

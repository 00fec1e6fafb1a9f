"""What the model gateway adds per model call: latency and CPU, against the runtime calling
the same upstream directly, in one run.

    python -m benchmarks.gateway                       # 12 rounds of 10 turns each way
    python -m benchmarks.gateway --turns 10 --repeats 1 --record --json out.json

The upstream is the scripted model (instant one-message answers) in a process of its own; the
gateway (``ModelGateway(upstream=...)``, on asyncio) runs in another. Four runtimes take
turns: one configured against the upstream directly, one through the gateway (``--config``
overrides, as ``AsyncCodex(gateway=...)`` writes them), one through the floor, the
leanest pass-through proxy Python can be (``benchmarks/raw_proxy.py``: asyncio streams, no
HTTP library, no record), in a process of its own like the gateway's; and a fourth through
the stack floor, a pass-through with the gateway's own stack and nothing else
(``benchmarks/h11_proxy.py``: h11 on AnyIO streams on both sides), which tells what of the
gateway's cost is h11 and AnyIO and what is its own work. Every turn makes exactly one model
call, so the difference of the median turn latencies is what a hop adds per call; CPU per
turn counts the runtime, the hop's and the upstream's processes (the client is the same every
way and left out). The ways take turns in rounds of ``--turns`` turns each, so a machine that
slows down or speeds up during the run does so for all of them alike. ``--record`` makes the
gateway also write a cassette. Issue 23's targets: at most 1 ms added at p50, at most 5 % more
CPU per turn.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import anyio

ROOT = Path(__file__).resolve().parent.parent
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process and its waited-for children, in seconds."""
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return sum(int(fields[i]) for i in (11, 12, 13, 14)) / TICKS


def start(argv: list[str]) -> tuple[subprocess.Popen[str], str]:
    """A helper process that prints ``{"base_url": ...}`` first and exits on stdin's end."""
    proc = subprocess.Popen(
        argv, cwd=ROOT, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True
    )
    assert proc.stdout is not None
    return proc, json.loads(proc.stdout.readline())["base_url"]


def stop(proc: subprocess.Popen[str]) -> None:
    assert proc.stdin is not None
    proc.stdin.close()
    proc.wait(timeout=10)


async def serve(upstream: str, record: str | None) -> None:
    """The gateway process: forward to ``upstream`` until stdin closes."""
    from codex_anyio import ModelGateway

    gateway = ModelGateway(upstream=upstream, record=record)
    async with gateway:
        print(json.dumps({"base_url": gateway.base_url}), flush=True)
        await anyio.to_thread.run_sync(sys.stdin.read)


def overrides(base_url: str) -> tuple[str, ...]:
    """What ``ModelGateway.config_overrides()`` writes, for a gateway in another process."""
    table = f'{{ name = "gateway", base_url = "{base_url}", wire_api = "responses" }}'
    return ('model_provider="bench-gateway"', f"model_providers.bench-gateway={table}")


async def measure(args: argparse.Namespace) -> dict[str, Any]:
    from codex_anyio import AsyncCodex, CodexConfig, lean_thread_options
    from codex_anyio.testing import scripted_env, write_codex_home

    scratch = Path(tempfile.mkdtemp(prefix="codex-bench-gateway-"))
    upstream, upstream_url = start([sys.executable, "-m", "benchmarks.model_server", "instant"])
    record = str(scratch / "cassette.jsonl") if args.record else None
    gateway_argv = [sys.executable, "-m", "benchmarks.gateway", "serve", upstream_url]
    gateway, gateway_url = start(gateway_argv + ([record] if record else []))
    floor, floor_url = start([sys.executable, "-m", "benchmarks.raw_proxy", upstream_url])
    stack, stack_url = start([sys.executable, "-m", "benchmarks.h11_proxy", upstream_url])
    ways = ("direct", "gateway", "h11-proxy", "raw-proxy")
    hops = {"direct": None, "gateway": gateway, "h11-proxy": stack, "raw-proxy": floor}
    latencies: dict[str, list[float]] = {way: [] for way in ways}
    cpu: dict[str, dict[str, float]] = {
        way: {"runtime": 0.0, "hop": 0.0, "upstream": 0.0} for way in ways
    }
    try:
        home = write_codex_home(scratch / "home", base_url=upstream_url)
        (scratch / "work").mkdir()
        base = CodexConfig(cwd=scratch / "work", env=scripted_env(home), codex_home=home)
        configs = {"direct": base}
        for way, url in (
            ("gateway", gateway_url),
            ("h11-proxy", stack_url),
            ("raw-proxy", floor_url),
        ):
            configs[way] = CodexConfig(
                cwd=scratch / "work",
                env=scripted_env(home),
                codex_home=home,
                config_overrides=overrides(url),
            )
        async with (
            AsyncCodex(configs["direct"]) as direct,
            AsyncCodex(configs["gateway"]) as through,
            AsyncCodex(configs["h11-proxy"]) as stacked,
            AsyncCodex(configs["raw-proxy"]) as floored,
        ):
            clients = {
                "direct": direct,
                "gateway": through,
                "h11-proxy": stacked,
                "raw-proxy": floored,
            }
            pids = {name: c.client._transport.pid for name, c in clients.items()}  # type: ignore[attr-defined]
            for codex in clients.values():  # warm them up
                await (await codex.thread_start(**lean_thread_options())).run("warm up")
            for _ in range(args.repeats):
                for name, codex in clients.items():
                    thread = await codex.thread_start(**lean_thread_options())
                    hop = hops[name]
                    watched = {"runtime": pids[name], "upstream": upstream.pid}
                    if hop is not None:
                        watched["hop"] = hop.pid
                    before = {part: cpu_seconds(pid) for part, pid in watched.items()}
                    for n in range(args.turns):
                        began = time.perf_counter()
                        result = await thread.run(f"turn {n}")
                        latencies[name].append(time.perf_counter() - began)
                        assert result.final_response == "ok", result
                    for part, pid in watched.items():
                        cpu[name][part] += cpu_seconds(pid) - before[part]
    finally:
        stop(floor)
        stop(stack)
        stop(gateway)
        stop(upstream)
        shutil.rmtree(scratch, ignore_errors=True)
    turns = args.turns * args.repeats
    p50 = {name: statistics.median(values) * 1000 for name, values in latencies.items()}
    per_turn = {name: sum(parts.values()) / turns * 1000 for name, parts in cpu.items()}
    parts_per_turn = {
        name: {part: value / turns * 1000 for part, value in parts.items()}
        for name, parts in cpu.items()
    }
    # What each hop adds outside the runtime (its own CPU and what it changes in the
    # upstream's), against the direct way's total: the runtime does the same work every way,
    # but its CPU per turn varies by a few per cent from batch to batch, which is as much as
    # the difference measured.
    direct_upstream = parts_per_turn["direct"]["upstream"]
    outside = {
        name: parts["hop"] + parts["upstream"] - direct_upstream
        for name, parts in parts_per_turn.items()
        if name != "direct"
    }
    return {
        "turns_each_way": turns,
        "record": bool(args.record),
        "p50_ms": p50,
        "added_p50_ms": p50["gateway"] - p50["direct"],
        "stack_floor_added_p50_ms": p50["h11-proxy"] - p50["direct"],
        "floor_added_p50_ms": p50["raw-proxy"] - p50["direct"],
        "cpu_ms_per_turn": per_turn,
        "cpu_ms_per_turn_by_process": parts_per_turn,
        "cpu_ratio": per_turn["gateway"] / per_turn["direct"] if per_turn["direct"] else None,
        "stack_floor_cpu_ratio": (
            per_turn["h11-proxy"] / per_turn["direct"] if per_turn["direct"] else None
        ),
        "cpu_ms_added_outside_the_runtime": outside,
        "cpu_added_outside_the_runtime": {
            name: value / per_turn["direct"] if per_turn["direct"] else None
            for name, value in outside.items()
        },
        "floor_cpu_ratio": (
            per_turn["raw-proxy"] / per_turn["direct"] if per_turn["direct"] else None
        ),
    }


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "serve":
        anyio.run(serve, sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=10, help="turns per round, each way")
    parser.add_argument("--repeats", type=int, default=12, help="rounds, the ways alternating")
    parser.add_argument("--record", action="store_true", help="the gateway records a cassette")
    parser.add_argument("--backend", default="asyncio", choices=["asyncio", "trio"])
    parser.add_argument("--json", help="write the result here too")
    args = parser.parse_args()
    report = anyio.run(measure, args, backend=args.backend)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

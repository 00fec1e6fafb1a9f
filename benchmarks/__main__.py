"""Run the benchmark scenarios side by side and report medians and ratios.

    python -m benchmarks                 # full run
    python -m benchmarks --quick         # scenarios 1, 2, 4 and 4b, few repeats
    python -m benchmarks --quick --json out.json

Every measurement runs in a fresh process per client, alternating clients within each repeat,
so the clients share the machine's state fairly; results are medians with min-max.

Baselines compare like with like: the raw client (``raw``) decodes with orjson, as codex-anyio
does, and every "vs raw" ratio is relative to it. ``raw-stdlib`` is the same loop with stdlib
``json``, the baseline of earlier releases (which flattered the library by about 4x in
scenario 1); it is still run and shown in its own column so the change stays visible.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from importlib import metadata
from pathlib import Path
from typing import Any

from benchmarks import cache_bytecode

ROOT = Path(__file__).resolve().parent.parent
RESULTS = ROOT / "benchmarks" / "results"
OURS = ("anyio-asyncio", "anyio-trio")
RAWS = ("raw", "raw-stdlib", "raw-asyncio", "raw-trio", "raw-asyncio-readline")
"""The raw loop with orjson (the like-for-like floor), with stdlib json (the old baseline), on
asyncio and on Trio reading the pipe in chunks as codex-anyio does (the event loop's own cost:
the floor of any async client), and on asyncio with one ``readline()`` per line (the floor of
earlier releases, labelled: ``readline`` itself costs about half of its time)."""


def find_official_python(explicit: str | None) -> str | None:
    candidates = [explicit] if explicit else [sys.executable, "/tmp/offsdk/bin/python"]
    for python in candidates:
        if python and Path(python).exists():
            probe = subprocess.run([python, "-c", "import openai_codex"], capture_output=True)
            if probe.returncode == 0:
                return python
    return None


def worker(python: str, scenario: str, client: str, args: dict[str, Any]) -> dict[str, Any]:
    done = subprocess.run(
        [python, "-m", "benchmarks.workers", scenario, client, json.dumps(args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{scenario}/{client} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


@contextmanager
def model_server(mode: str) -> Iterator[tuple[dict[str, Any], subprocess.Popen[str]]]:
    """A scripted model in its own process, and a CODEX_HOME pointing at it."""
    from codex_anyio._wire._config import trust_store_environment
    from codex_anyio.testing import write_codex_home

    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.model_server", mode],
        cwd=ROOT,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    assert proc.stdin is not None
    base_url = json.loads(proc.stdout.readline())["base_url"]
    scratch = Path(tempfile.mkdtemp(prefix="codex-bench-"))
    try:
        # The runtime's own defaults (shell snapshot on), as a user's default setup has them.
        home = write_codex_home(scratch / "home", base_url=base_url, shell_snapshot=True)
        (scratch / "workspace").mkdir()
        # An empty HOME for every client's runtime: its login shells then source none of this
        # machine's rc files (a pyenv rehash killed mid-way leaves a lock that stalls every
        # later login shell for a minute, and skews whatever runs after).
        (scratch / "user").mkdir()
        import codex_cli_bin

        args = {
            "user_home": str(scratch / "user"),
            "codex_home": str(home),
            "workspace": str(scratch / "workspace"),
            "codex_bin": str(codex_cli_bin.bundled_codex_path()),
            # The same trust store for every client's runtime: the minimal one, since the
            # model is plain HTTP on loopback (the runtime otherwise re-reads the system
            # store for every turn, about half of its CPU per turn).
            "trust_env": trust_store_environment("minimal"),
        }
        yield args, proc
    finally:
        proc.stdin.close()
        proc.wait(timeout=10)
        shutil.rmtree(scratch, ignore_errors=True)


def abandoned_times(proc: subprocess.Popen[str], count: int) -> list[float]:
    """Read the model server's reports of dropped streams (it writes one line each)."""
    assert proc.stdout is not None
    return [json.loads(proc.stdout.readline())["abandoned_at"] for _ in range(count)]


def with_raws(clients: dict[str, str]) -> list[tuple[str, str]]:
    return [*clients.items(), *((raw, sys.executable) for raw in RAWS)]


def scenario_stream(clients: dict[str, str], repeats: int, n: int) -> dict[str, Any]:
    rates: dict[str, list[float]] = {c: [] for c in [*clients, *RAWS]}
    cpu: dict[str, list[float]] = {c: [] for c in [*clients, *RAWS]}
    for _ in range(repeats):
        for client, python in with_raws(clients):
            result = worker(python, "stream", client, {"n": n})
            assert result["events"] == n, (client, result)
            rates[client].append(result["events"] / result["seconds"])
            if "cpu_seconds" in result:  # the official SDK's workers do not say
                cpu[client].append(result["cpu_seconds"] * 1e6 / n)
    out = {client: summary(values) for client, values in rates.items()}
    per_event = {client: summary(values) for client, values in cpu.items() if values}
    return {"n": n, "events_per_s": out, "client_cpu_us_per_event": per_event}


def scenario_turns(clients: dict[str, str], repeats: int, turns: int) -> dict[str, Any]:
    per_turn: dict[str, list[float]] = {c: [] for c in [*clients, *RAWS]}
    cpu: dict[str, list[float]] = {c: [] for c in [*clients, *RAWS]}
    with model_server("instant") as (args, _):
        for _ in range(repeats):
            for client, python in with_raws(clients):
                result = worker(python, "turns", client, {**args, "turns": turns})
                per_turn[client].append(statistics.median(result["turn_seconds"]) * 1000)
                cpu[client].append(statistics.median(result["turn_cpu_seconds"]) * 1000)
    return {
        "turns": turns,
        "ms_per_turn": {c: summary(v) for c, v in per_turn.items()},
        "client_cpu_ms_per_turn": {c: summary(v) for c, v in cpu.items()},
    }


def scenario_concurrency(clients: dict[str, str], ks: list[int]) -> dict[str, Any]:
    rows: dict[str, list[dict[str, Any]]] = {}
    with model_server("instant") as (args, _):
        for client, python in clients.items():
            if client == "official-sync":
                continue
            rows[client] = [worker(python, "concurrency", client, {**args, "k": k}) for k in ks]
    return {"ks": ks, "results": rows}


def scenario_cancel(clients: dict[str, str], repeats: int, timeout: float) -> dict[str, Any]:
    confirm: dict[str, list[float]] = {}
    dropped: dict[str, list[float]] = {}
    statuses: dict[str, list[str]] = {}
    never: set[str] = set()
    with model_server("stall") as (args, proc):
        for _ in range(repeats):
            for client, python in [*clients.items(), ("raw", sys.executable)]:
                if client == "official-sync":
                    continue
                params = {**args, "timeout": timeout, "observe": 2.0}
                result = worker(python, "cancel", client, params)
                statuses.setdefault(client, []).append(result.get("status", "interrupted"))
                # Every run's stream is dropped eventually: by an interrupt, or when the
                # worker's runtime is killed at exit (the official SDK's case).
                drop = abandoned_times(proc, 1)[0]
                if result["completed_at"] is None:
                    never.add(client)
                    continue
                confirm.setdefault(client, []).append(
                    (result["completed_at"] - result["deadline"]) * 1000
                )
                dropped.setdefault(client, []).append((drop - result["deadline"]) * 1000)
    out: dict[str, Any] = {}
    for client in statuses:
        out[client] = {
            "status_on_server": statuses[client][-1],
            "ms_to_interrupted": summary(confirm[client]) if client in confirm else "never",
            "ms_to_stream_dropped": summary(dropped[client])
            if client in dropped
            else "never (only when its process exited)",
        }
    return {"timeout_s": timeout, "clients": out}


def scenario_storm(repeats: int, k: int, cancel_after: float) -> dict[str, Any]:
    walls: dict[str, list[float]] = {c: [] for c in OURS}
    leftovers: dict[str, int] = dict.fromkeys(OURS, 0)
    with model_server("stall") as (args, _):
        for _ in range(repeats):
            for client in OURS:
                params = {**args, "k": k, "cancel_after": cancel_after}
                result = worker(sys.executable, "storm", client, params)
                walls[client].append(result["wall_s"] * 1000)
                leftovers[client] = max(
                    leftovers[client], result["turn_starts_in_flight"] + result["pending_requests"]
                )
    return {
        "k": k,
        "cancel_after_s": cancel_after,
        "clients": {
            c: {"ms_to_all_ended": summary(walls[c]), "left_in_flight": leftovers[c]} for c in OURS
        },
    }


def scenario_memory(n: int, idle_turns: int) -> dict[str, Any]:
    out = {}
    with model_server("stall") as (args, _):
        for client in OURS:
            params = {**args, "n": n, "idle_turns": idle_turns}
            out[client] = worker(sys.executable, "memory", client, params)
    return {"buffered_events": n, "idle_turns": idle_turns, "clients": out}


def versions(official_python: str | None) -> dict[str, Any]:
    def version(name: str) -> str | None:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return None

    official = None
    if official_python:
        probe = subprocess.run(
            [
                official_python,
                "-c",
                "from importlib import metadata; print(metadata.version('openai-codex'))",
            ],
            capture_output=True,
            text=True,
        )
        official = probe.stdout.strip() or None
    return {
        "python": platform.python_version(),
        "codex-anyio": version("codex-anyio"),
        "anyio": version("anyio"),
        "trio": version("trio"),
        "openai-codex": official,
        "codex runtime": version("openai-codex-cli-bin"),
    }


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}x" if b else "n/a"


def markdown(report: dict[str, Any]) -> str:
    lines = [
        f"Benchmarks taken {report['date']} on {report['cpu_count']} CPUs "
        f"(codex-anyio {report['versions']['codex-anyio']}, openai-codex "
        f"{report['versions']['openai-codex']}, runtime {report['versions']['codex runtime']}); "
        "medians over repeats, min-max in brackets.",
        "",
    ]
    s = report["scenarios"]
    if "stream" in s:
        rates = s["stream"]["events_per_s"]
        raw = rates["raw"]["median"]
        old = rates.get("raw-stdlib", {}).get("median", 0)
        raw_async = rates.get("raw-asyncio", {}).get("median", 0)
        raw_trio = rates.get("raw-trio", {}).get("median", 0)
        per_event = s["stream"].get("client_cpu_us_per_event", {})
        lines += [
            f"**1. Stream throughput** ({s['stream']['n']:,} deltas through each client's turn stream, typed)",
            "",
            "| client | events/s | client CPU µs/event | vs raw loop (orjson) | vs raw asyncio loop (chunks) | vs raw Trio loop (chunks) | old ratio: vs raw loop (stdlib json) | vs official async | vs official sync |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for client, v in rates.items():
            oa = rates.get("official-async", {}).get("median", 0)
            os_ = rates.get("official-sync", {}).get("median", 0)
            c = per_event.get(client)
            cpu_cell = f"{c['median']:.2f} [{c['min']:.2f}-{c['max']:.2f}]" if c else "n/a"
            lines.append(
                f"| {client} | {v['median']:,.0f} [{v['min']:,.0f}-{v['max']:,.0f}] | {cpu_cell} | "
                f"{ratio(v['median'], raw)} | {ratio(v['median'], raw_async)} | "
                f"{ratio(v['median'], raw_trio)} | {ratio(v['median'], old)} | "
                f"{ratio(v['median'], oa)} | {ratio(v['median'], os_)} |"
            )
        lines.append("")
    if "turns" in s:
        ms = s["turns"]["ms_per_turn"]
        cpu = s["turns"].get("client_cpu_ms_per_turn", {})
        raw = ms["raw"]["median"]
        raw_cpu = cpu.get("raw", {}).get("median", 0)
        raw_async_cpu = cpu.get("raw-asyncio", {}).get("median", 0)
        lines += [
            f"**2. Sequential turns, real runtime + instant scripted model** ({s['turns']['turns']} turns)",
            "",
            "| client | ms/turn | vs raw client (orjson) | client CPU ms/turn | CPU vs raw client (orjson) | CPU vs raw asyncio client |",
            "|---|---|---|---|---|---|",
        ]
        for client, v in ms.items():
            c = cpu.get(client)
            cpu_cells = (
                f"{c['median']:.2f} [{c['min']:.2f}-{c['max']:.2f}] | {ratio(c['median'], raw_cpu)}"
                f" | {ratio(c['median'], raw_async_cpu)}"
                if c
                else "n/a | n/a | n/a"
            )
            lines.append(
                f"| {client} | {v['median']:.1f} [{v['min']:.1f}-{v['max']:.1f}] | {ratio(v['median'], raw)} | {cpu_cells} |"
            )
        lines.append("")
    if "concurrency" in s:
        lines += [
            "**3. Concurrent turns on one client** (real runtime)",
            "",
            "| client | K | wall s | client CPU s | CPU ms/turn | peak RSS MiB | completed |",
            "|---|---|---|---|---|---|---|",
        ]
        for client, rows in s["concurrency"]["results"].items():
            for row in rows:
                lines.append(
                    f"| {client} | {row['k']} | {row['wall_s']:.2f} | {row['cpu_s']:.2f} | "
                    f"{row['cpu_s'] * 1000 / row['k']:.1f} | {row['peak_rss_mib']:.0f} | "
                    f"{row['completed']}/{row['k']} |"
                )
        lines.append("")
    if "cancel" in s:
        lines += [
            f"**4. Cancellation** (a {s['cancel']['timeout_s']} s scope around a turn whose model stalls)",
            "",
            "| client | turn on the server | ms to interrupted | ms to model stream dropped |",
            "|---|---|---|---|",
        ]
        for client, v in s["cancel"]["clients"].items():

            def fmt(x: Any) -> str:
                return (
                    x
                    if isinstance(x, str)
                    else f"{x['median']:.0f} [{x['min']:.0f}-{x['max']:.0f}]"
                )

            lines.append(
                f"| {client} | {v['status_on_server']} | {fmt(v['ms_to_interrupted'])} | "
                f"{fmt(v['ms_to_stream_dropped'])} |"
            )
        lines.append("")
    if "storm" in s:
        storm = s["storm"]
        lines += [
            f"**4b. Cancellation storm** ({storm['k']} turns at once on one client, more than its "
            f"100 request slots, model stalls, all cancelled {storm['cancel_after_s'] * 1000:.0f} "
            "ms after they start)",
            "",
            "| client | ms until every turn ended | requests or turn starts left in flight |",
            "|---|---|---|",
        ]
        for client, v in storm["clients"].items():
            w = v["ms_to_all_ended"]
            lines.append(
                f"| {client} | {w['median']:.0f} [{w['min']:.0f}-{w['max']:.0f}] | "
                f"{v['left_in_flight']} |"
            )
        lines.append("")
    if "memory" in s:
        lines += [
            "**5. Memory** (codex-anyio)",
            "",
            "| backend | KiB per buffered undelivered event | KiB per idle open turn |",
            "|---|---|---|",
        ]
        for client, v in s["memory"]["clients"].items():
            lines.append(
                f"| {client} | {v['kib_per_buffered_event']:.2f} | {v['kib_per_idle_turn']:.1f} |"
            )
        lines.append("")
    return "\n".join(lines)


def chart(report: dict[str, Any], path: Path) -> str | None:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "matplotlib is not installed: no chart (pip install codex-anyio[bench])"
    s = report["scenarios"]
    panels = [k for k in ("stream", "turns") if k in s]
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4))
    axes = axes if len(panels) > 1 else [axes]
    for ax, key in zip(axes, panels, strict=True):
        data = s[key]["events_per_s"] if key == "stream" else s[key]["ms_per_turn"]
        names = list(data)
        ax.bar(names, [data[n]["median"] for n in names], color="#4c72b0")
        ax.set_title(
            "events/s (higher is better)" if key == "stream" else "ms per turn (lower is better)"
        )
        ax.tick_params(axis="x", rotation=30)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return None


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="scenarios 1, 2, 4, 4b; few repeats")
    parser.add_argument("--json", type=Path, help="also write the JSON report here")
    parser.add_argument("--official-python", help="interpreter that has openai-codex installed")
    parser.add_argument("--repeats", type=int)
    options = parser.parse_args()
    cache_bytecode()

    official_python = find_official_python(options.official_python)
    clients = {c: sys.executable for c in OURS}
    notes = []
    if official_python:
        clients["official-sync"] = official_python
        clients["official-async"] = official_python
    else:
        notes.append("openai-codex not found: official SDK columns skipped")
    repeats = options.repeats or (3 if options.quick else 5)
    report: dict[str, Any] = {
        "date": datetime.date.today().isoformat(),
        "cpu_count": os.cpu_count(),
        "quick": options.quick,
        "versions": versions(official_python),
        "notes": notes,
        "scenarios": {},
    }
    scenarios = report["scenarios"]
    scenarios["stream"] = scenario_stream(clients, repeats, 20_000 if options.quick else 50_000)
    scenarios["turns"] = scenario_turns(clients, repeats, 10 if options.quick else 20)
    if not options.quick:
        scenarios["concurrency"] = scenario_concurrency(clients, [1, 8, 32, 128])
    scenarios["cancel"] = scenario_cancel(clients, repeats, 0.5)
    scenarios["storm"] = scenario_storm(repeats, 256, 0.05)
    if not options.quick:
        scenarios["memory"] = scenario_memory(100_000, 16)
    text = markdown(report)
    print(text)
    for note in notes:
        print("note:", note)
    if options.json:
        options.json.write_text(json.dumps(report, indent=2))
    if not options.quick:
        RESULTS.mkdir(parents=True, exist_ok=True)
        (RESULTS / "latest.json").write_text(json.dumps(report, indent=2))
        (RESULTS / "latest.md").write_text(text + "\n")
        problem = chart(report, RESULTS / "latest.png")
        if problem:
            print("note:", problem)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Stream throughput by transport: ``python -m benchmarks.transports [--n N] [--repeats R]``.

The same replayed turn (N ``item/agentMessage/delta`` events through a typed turn stream)
spawned over stdio (``replay_server.py``) and attached over WebSocket on TCP and on a unix
socket (``ws_replay_server.py``), on both AnyIO backends; each run in a fresh worker process.
Prints a Markdown table with the median events/s and the ratio to stdio, and writes
``results/transports.json``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path
from typing import Any

from benchmarks import cache_bytecode
from benchmarks.__main__ import worker

RESULTS = Path(__file__).resolve().parent / "results" / "transports.json"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=50_000, help="deltas per turn")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--python", default="python", help="interpreter with codex-anyio")
    options = parser.parse_args()
    cache_bytecode()
    report: dict[str, Any] = {"n": options.n, "repeats": options.repeats, "events_per_s": {}}
    rows = []
    with tempfile.TemporaryDirectory(prefix="cxa-bench-") as scratch:
        transports: dict[str, tuple[str, dict[str, Any]]] = {
            "stdio": ("stream", {"n": options.n}),
            "ws": ("stream-socket", {"n": options.n}),
            "unix": ("stream-socket", {"n": options.n, "unix": f"{scratch}/replay.sock"}),
        }
        for client in ("anyio-asyncio", "anyio-trio"):
            rates: dict[str, float] = {}
            for name, (scenario, args) in transports.items():
                runs = []
                for _ in range(options.repeats):
                    if "unix" in args:
                        Path(args["unix"]).unlink(missing_ok=True)
                    result = worker(options.python, scenario, client, args)
                    assert result["events"] == options.n, result
                    runs.append(result["events"] / result["seconds"])
                rates[name] = statistics.median(runs)
            report["events_per_s"][client] = rates
            rows.append(
                f"| {client} | {rates['stdio']:,.0f} | {rates['ws']:,.0f} "
                f"({rates['ws'] / rates['stdio']:.2f}x) | {rates['unix']:,.0f} "
                f"({rates['unix'] / rates['stdio']:.2f}x) |"
            )
    print(f"Stream throughput, {options.n:,} deltas, median of {options.repeats} (events/s)\n")
    print("| client | stdio | ws:// (ratio) | unix:// (ratio) |")
    print("|---|---|---|---|")
    print("\n".join(rows))
    RESULTS.write_text(json.dumps(report, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

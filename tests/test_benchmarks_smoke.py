"""The benchmark workers still run and count every event (speed targets live in benchmarks/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize(
    "client",
    [
        "anyio-asyncio",
        "anyio-trio",
        "raw",
        "raw-stdlib",
        "raw-asyncio",
        "raw-trio",
        "raw-asyncio-readline",
    ],
)
def test_the_stream_worker_receives_every_replayed_event(client: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "benchmarks.workers", "stream", client, json.dumps({"n": 3000})],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["events"] == 3000
    assert result["seconds"] > 0
    assert 0 < result["cpu_seconds"] < 60


def test_the_report_shows_the_fair_ratio_and_the_old_one_side_by_side() -> None:
    from benchmarks.__main__ import markdown

    def s(median: float) -> dict[str, float]:
        return {"median": median, "min": median, "max": median}

    report = {
        "date": "today",
        "cpu_count": 2,
        "versions": {"codex-anyio": "x", "openai-codex": "y", "codex runtime": "z"},
        "scenarios": {
            "stream": {
                "n": 10,
                "events_per_s": {
                    "anyio-asyncio": s(100),
                    "raw": s(400),
                    "raw-stdlib": s(200),
                    "raw-asyncio": s(250),
                    "raw-trio": s(200),
                },
            },
            "turns": {
                "turns": 2,
                "ms_per_turn": {"anyio-asyncio": s(40), "raw": s(40), "raw-asyncio": s(40)},
                "client_cpu_ms_per_turn": {
                    "anyio-asyncio": s(2),
                    "raw": s(0.5),
                    "raw-asyncio": s(1),
                },
            },
        },
    }
    text = markdown(report)
    # vs the raw loop (orjson), the raw asyncio and Trio loops, the old stdlib raw loop
    assert "| anyio-asyncio | 100 [100-100] | n/a | 0.25x | 0.40x | 0.50x | 0.50x |" in text
    cpu = "2.00 [2.00-2.00] | 4.00x | 2.00x"
    assert f"| anyio-asyncio | 40.0 [40.0-40.0] | 1.00x | {cpu} |" in text


@pytest.mark.parametrize("client", ["anyio-asyncio", "anyio-trio"])
def test_the_websocket_stream_worker_receives_every_replayed_event(client: str) -> None:
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "benchmarks.workers",
            "stream-socket",
            client,
            json.dumps({"n": 3000}),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout.strip().splitlines()[-1])
    assert result["events"] == 3000

"""The benchmark workers still run and count every event (speed targets live in benchmarks/)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("client", ["anyio-asyncio", "anyio-trio", "raw"])
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

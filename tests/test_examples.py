"""The README's main job and every program in examples/ run, offline, against the real runtime."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples"

EXPECTED = {
    "attach.py": "-> And from the second.",
    "quickstart.py": "completed -> Hello there",
    "streaming.py": "turn/completed TurnCompletedNotification",
    "cancellation.py": "server-side status: interrupted",
    "approvals.py": "for \"/bin/bash -lc 'rm -rf ./*'\": no",
    "dynamic_tool.py": "Order A-17 has shipped.",
    "sync_client.py": "timed out; server-side status: interrupted",
    "telemetry.py": "  codex.turn status=completed input_tokens=30 output_tokens=15",
}


def run(args: list[str], cwd: Path) -> str:
    done = subprocess.run(
        [sys.executable, *args], cwd=cwd, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_example_runs_and_prints_what_it_promises(name: str, backend: str) -> None:
    args = [name] + (["--trio"] if backend == "trio" else [])
    assert EXPECTED[name] in run(args, EXAMPLES)


def test_every_example_is_tested() -> None:
    found = {p.name for p in EXAMPLES.glob("*.py") if not p.name.startswith("_")}
    assert found == set(EXPECTED)


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_demo_streams_text_and_interrupts_the_slow_turn(backend: str) -> None:
    out = run(["-m", "codex_anyio", "demo", "--backend", backend], ROOT)
    assert "Structured concurrency ties every task" in out
    assert "[tool weather(" in out
    assert "the server says the turn is 'interrupted'" in out
    assert "the runtime dropped the model's stream: True" in out

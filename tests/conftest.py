"""Shared fixtures: both AnyIO backends, and a launcher for the scripted fake app-server.

(No HOME fixture: every runtime the tests start gets an empty HOME from the testing kit,
``scripted_env`` and the harnesses, so its login shells source none of the machine's rc
files.)"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import pytest

from codex_anyio import CodexConfig

FAKE_SERVER = Path(__file__).with_name("fake_app_server.py")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def fake_config(script: str, **kwargs: object) -> CodexConfig:
    """A CodexConfig that runs the fake app-server with ``script`` (dedented Python)."""
    return CodexConfig(
        launch_args_override=(sys.executable, str(FAKE_SERVER), textwrap.dedent(script)),
        **kwargs,  # type: ignore[arg-type]
    )


TRANSPORTS = ("stdio", "ws", "unix")
"""Ways ``scripted_codex`` reaches the real runtime: spawned, or attached over a loopback
WebSocket (with a token) or a unix socket."""

over_every_transport = pytest.mark.parametrize("scripted_codex", TRANSPORTS, indirect=True)
"""Run a real-runtime test once per transport: the guarantees must not depend on it."""

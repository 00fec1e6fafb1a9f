"""Shared fixtures: both AnyIO backends, and a launcher for the scripted fake app-server."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from codex_anyio import CodexConfig

FAKE_SERVER = Path(__file__).with_name("fake_app_server.py")


@pytest.fixture(scope="session", autouse=True)
def _hermetic_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every runtime the tests start inherits an empty HOME: the login shells it runs (shell
    snapshots, commands) then source none of the machine's rc files, whose side effects (a
    lock left by a killed ``pyenv rehash`` stalls every later login shell for a minute) would
    make the suite slow and flaky."""
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(tmp_path_factory.mktemp("home"))
    try:
        yield
    finally:
        if saved is None:
            del os.environ["HOME"]
        else:
            os.environ["HOME"] = saved


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

"""Shared fixtures: both AnyIO backends, and a launcher for the scripted fake app-server.

(No HOME fixture: every runtime the tests start gets an empty HOME from the testing kit,
``scripted_env`` and the harnesses, so its login shells source none of the machine's rc
files.)"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from codex_anyio import CodexConfig
from codex_anyio._wire._reap import MARKER_ENV

FAKE_SERVER = Path(__file__).with_name("fake_app_server.py")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _netns_available() -> bool:
    unshare = shutil.which("unshare")
    return unshare is not None and subprocess.run([unshare, "-rn", "true"]).returncode == 0


requires_netns = pytest.mark.skipif(
    not _netns_available(), reason="needs `unshare -rn` (a private network namespace)"
)
"""For tests that run the runtime with its default (OpenAI) provider: run it under
``unshare -rn`` (a network namespace of its own, loopback only), so nothing leaves the
machine whatever it tries."""


def offline_home(home: Path) -> Path:
    """An empty ``CODEX_HOME`` (no login) whose runtime does not look for remote plugins or
    apps at start-up: what a new machine looks like, minus the network.

    The built-in OpenAI provider keeps its name and its need for a login, but its base URL is
    an address on loopback: a thread start makes the runtime fetch the model list, and a host
    name (``api.openai.com``) in a namespace without a network left its DNS resolver retrying
    for 5 s after stdin closed, so every such runtime was killed at shutdown (measured: 5.0 s
    of each test, 0.5 s with the address)."""
    home.mkdir(parents=True, exist_ok=True)
    (home / "config.toml").write_text(
        'openai_base_url = "http://127.0.0.1:9/v1"\n'
        "[features]\nplugins = false\nremote_plugin = false\napps = false\n",
        encoding="utf-8",
    )
    return home


def alive(pid: int) -> bool:
    """Running (a zombie waiting for a reaper counts as dead)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rpartition(")")[2].split()[0] != "Z"


def processes_marked_by(pid: int) -> list[int]:
    """Living processes started by a runtime that process ``pid`` spawned (this test process,
    or a command it ran): every one carries the runtime's marker, which names ``pid``, in its
    environment (``_wire._reap.MARKER_ENV``), whoever its parent is now."""
    prefix = f"{MARKER_ENV}={pid}-".encode()
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit() or int(name) == os.getpid():
            continue
        try:
            environ = Path(f"/proc/{name}/environ").read_bytes()
        except OSError:
            continue
        if any(entry.startswith(prefix) for entry in environ.split(b"\0")) and alive(int(name)):
            found.append(int(name))
    return found


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

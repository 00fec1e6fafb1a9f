"""The echoing scripted runtime behind the command line's offline modes.

``codex-anyio serve --scripted`` and ``codex-anyio batch --scripted`` both answer every turn
with ``echo: <the prompt>`` from a :class:`ScriptedModel` on loopback: no login and no
network, so a harness (or a client of a served runtime) can be tried end to end before any
credentials exist. This module is that one set-up, shared by both commands.
"""

from __future__ import annotations

import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import attrs

from .._wire._config import CodexConfig
from ._home import empty_home, scripted_env, write_codex_home
from ._scripted_model import RecordedRequest, Reply, ScriptedModel, message

__all__ = ["echo", "echo_runtime"]


def echo(request: RecordedRequest) -> Reply:
    """The reply to a model request: ``echo: `` and the last text the user sent."""
    texts = [
        part.get("text", "")
        for item in request.body.get("input", [])
        if item.get("type") == "message" and item.get("role") == "user"
        for part in item.get("content", [])
    ]
    return message(f"echo: {texts[-1] if texts else ''}")


@asynccontextmanager
async def echo_runtime(base: CodexConfig) -> AsyncIterator[CodexConfig]:
    """Run the echoing model while the block runs; yield ``base`` made to launch runtimes
    that use it (a temporary ``CODEX_HOME``, an empty workspace as working directory, an
    empty ``HOME``), every one of them, however many a pool starts."""
    with tempfile.TemporaryDirectory(prefix="codex-anyio-scripted-") as scratch:
        root = Path(scratch)
        async with ScriptedModel(echo) as model:
            codex_home = write_codex_home(root / "codex-home", base_url=model.base_url)
            workspace = root / "workspace"
            workspace.mkdir()
            env = {**(base.env or {}), **scripted_env(codex_home, home=empty_home(root))}
            yield attrs.evolve(base, cwd=workspace, env=env, codex_home=codex_home)

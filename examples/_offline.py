"""Run an example offline (real runtime, scripted model) or, with ``--live``, for real.

Each example is an ``async def main(codex)`` (or a plain ``def main(codex)`` for the sync
client): the agent code you would write. This helper only decides where ``codex`` comes from.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from codex_anyio import AsyncCodex, Codex
from codex_anyio.testing import open_scripted_codex, scripted_runtime


def run(main: Callable[..., Awaitable[None]], script: list[Any], **options: Any) -> None:
    """``python example.py [--live] [--trio]``."""
    backend = "trio" if "--trio" in sys.argv else "asyncio"

    async def offline() -> None:
        async with open_scripted_codex(script, **options) as scripted:
            await main(scripted.codex)

    async def live() -> None:
        async with AsyncCodex(handlers=options.get("handlers")) as codex:
            await main(codex)

    anyio.run(live if "--live" in sys.argv else offline, backend=backend)


def run_sync(main: Callable[[Codex], None], script: list[Any]) -> None:
    """``python example.py [--live] [--trio]`` for the synchronous client."""
    backend = "trio" if "--trio" in sys.argv else "asyncio"
    if "--live" in sys.argv:
        with Codex(backend=backend) as codex:
            main(codex)
        return
    with scripted_runtime(script, backend=backend) as runtime:
        with Codex(runtime.config, backend=backend) as codex:
            main(codex)

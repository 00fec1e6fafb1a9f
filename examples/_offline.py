"""Run an example offline (real runtime, scripted model) or, with ``--live``, for real.

Each example is an ``async def main(codex)``: the agent code you would write. This helper
only decides where ``codex`` comes from.
"""

from __future__ import annotations

import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio

from codex_anyio import AsyncCodex
from codex_anyio.testing import open_scripted_codex


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

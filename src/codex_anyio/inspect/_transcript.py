"""The turn's items in Inspect's transcript.

Inspect's public API records events of its own making (``ModelEvent`` from ``generate``,
``ToolEvent`` from ``execute_tools``) and, for anything else, a span with ``InfoEvent`` data.
So every completed item of the turn (a command execution, a file change, a dynamic or MCP
tool call, an agent message, ...) becomes a span named after the item's type (span type
``codex``) holding one ``InfoEvent`` (source ``codex_anyio``) with the item as the runtime
sent it. The model calls are there already, as ``ModelEvent``\\s (the gateway policy calls
``generate`` inside the sample), and Inspect tools as ``ToolEvent``\\s.
"""

from __future__ import annotations

from typing import Any

from inspect_ai.log import transcript
from inspect_ai.util import span

__all__ = ["SOURCE", "record_item", "record_turn"]

SOURCE = "codex_anyio"
"""The ``source`` of the ``InfoEvent``\\s this agent writes."""


async def record_item(item: Any) -> None:
    """One completed item (its wire JSON) as a ``codex`` span with an ``InfoEvent``."""
    if not isinstance(item, dict):
        return
    async with span(name=str(item.get("type", "item")), type="codex"):
        transcript().info(item, source=SOURCE)


def record_turn(turn_id: str, status: str) -> None:
    """How the turn ended on the server (``completed``, ``interrupted``, ``failed``)."""
    transcript().info({"turn": turn_id, "status": status}, source=SOURCE)

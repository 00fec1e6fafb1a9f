"""Inspect tools as the runtime's dynamic tools.

Each Inspect ``Tool`` (or ``ToolDef``) given to the agent is registered with the thread as a
:class:`~codex_anyio.DynamicTool` of the same name, description and JSON Schema. A call runs
through Inspect's own ``execute_tools``, so it is a ``ToolEvent`` of the sample's transcript,
the active approval policy applies to it (the eval's, or the agent's ``approval=``; an
approver's rejection reaches the model as the tool's error), and its output is truncated as
Inspect truncates it; the model receives the tool message's text, ``success: false`` if the
tool failed.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from typing import Any

from inspect_ai.model import ChatMessageAssistant, ChatMessageTool, execute_tools
from inspect_ai.tool import Tool, ToolCall, ToolDef

from .._api._tools import DynamicTool

__all__ = ["dynamic_tools"]

_ids = itertools.count(1)


def _dynamic_tool(tool: Tool | ToolDef) -> DynamicTool:
    definition = tool if isinstance(tool, ToolDef) else ToolDef(tool)

    async def call(**arguments: Any) -> dict[str, Any]:
        request = ToolCall(
            id=f"codex_anyio_{next(_ids)}", function=definition.name, arguments=arguments
        )
        result = await execute_tools(
            [ChatMessageAssistant(content="", tool_calls=[request])], [definition]
        )
        answers = [m for m in result.messages if isinstance(m, ChatMessageTool)]
        answer = answers[-1] if answers else None
        failed = answer is None or answer.error is not None
        text = "" if answer is None else answer.text
        if answer is not None and answer.error is not None and not text:
            text = answer.error.message
        return {"contentItems": [{"type": "inputText", "text": text}], "success": not failed}

    return DynamicTool(
        name=definition.name,
        description=definition.description,
        input_schema=definition.parameters.model_dump(exclude_none=True),
        function=call,
    )


def dynamic_tools(tools: Sequence[Tool | ToolDef]) -> list[DynamicTool]:
    """The dynamic tools that run ``tools`` through Inspect."""
    return [_dynamic_tool(tool) for tool in tools]

"""The Responses API, as the runtime speaks it, translated to and from Inspect's model API.

The runtime asks its model provider for ``POST /v1/responses`` with a body of ``instructions``,
``input`` items and ``tools``; Inspect's ``Model.generate`` takes chat messages and
``ToolInfo``. This module is the whole translation, kept small so what it drops is easy to
name (``docs/inspect.md`` lists it):

* **translated**: ``instructions`` (a system message); ``message`` items (user, developer and
  system messages as text, assistant messages as text); ``function_call`` items (tool calls of
  the assistant message they follow) and ``function_call_output`` items (tool messages);
  ``function`` tools; ``tool_choice`` (``auto``, ``none``, ``required``);
  ``parallel_tool_calls``. Back: the output's text as one assistant message, its tool calls
  as ``function_call`` items, its usage (cached and reasoning tokens included).
* **dropped**: ``reasoning`` items (their encrypted content belongs to the service that made
  them), images and other non-text parts, custom and built-in tools (``web_search``, freeform
  ``custom`` tools) and their calls, ``reasoning``/``text``/``include`` options, and the
  prompt cache fields.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import attrs
from inspect_ai.model import (
    ChatMessage,
    ChatMessageAssistant,
    ChatMessageSystem,
    ChatMessageTool,
    ChatMessageUser,
    GenerateConfig,
    ModelOutput,
)
from inspect_ai.tool import ToolCall, ToolChoice, ToolInfo, ToolParams

from ..gateway._events import function_call_events, message_events, response, usage

__all__ = ["ResponsesCall", "responses_call", "responses_events"]

_TOOL_CHOICES: dict[str, ToolChoice] = {"auto": "auto", "none": "none", "required": "any"}


@attrs.frozen
class ResponsesCall:
    """One Responses request as the arguments of ``Model.generate``."""

    messages: list[ChatMessage]
    tools: list[ToolInfo]
    tool_choice: ToolChoice | None
    config: GenerateConfig


def _text(content: Any) -> str:
    """The text parts of a message's ``content`` (a string, or a list of parts), joined."""
    if isinstance(content, str):
        return content
    parts = content if isinstance(content, list) else []
    return "\n".join(
        part["text"]
        for part in parts
        if isinstance(part, dict) and isinstance(part.get("text"), str)
    )


def _message(item: Mapping[str, Any]) -> ChatMessage | None:
    role = item.get("role")
    text = _text(item.get("content"))
    if role == "user":
        return ChatMessageUser(content=text)
    if role in ("developer", "system"):
        return ChatMessageSystem(content=text)
    if role == "assistant":
        return ChatMessageAssistant(content=text)
    return None


def _tool_call(item: Mapping[str, Any]) -> ToolCall:
    raw = item.get("arguments") or "{}"
    try:
        arguments = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError as exc:
        return ToolCall(
            id=str(item.get("call_id")),
            function=str(item.get("name")),
            arguments={},
            parse_error=str(exc),
        )
    if not isinstance(arguments, dict):
        arguments = {"value": arguments}
    return ToolCall(
        id=str(item.get("call_id")), function=str(item.get("name")), arguments=arguments
    )


def _messages(instructions: Any, items: Sequence[Any]) -> list[ChatMessage]:
    messages: list[ChatMessage] = []
    if isinstance(instructions, str) and instructions:
        messages.append(ChatMessageSystem(content=instructions))
    names: dict[str, str] = {}
    for item in items:
        if not isinstance(item, dict):
            continue
        kind = item.get("type", "message")
        if kind == "message":
            message = _message(item)
            if message is not None:
                messages.append(message)
        elif kind == "function_call":
            call = _tool_call(item)
            names[call.id] = call.function
            last = messages[-1] if messages else None
            if isinstance(last, ChatMessageAssistant):
                last.tool_calls = [*(last.tool_calls or []), call]
            else:
                messages.append(ChatMessageAssistant(content="", tool_calls=[call]))
        elif kind == "function_call_output":
            call_id = str(item.get("call_id"))
            messages.append(
                ChatMessageTool(
                    content=_text(item.get("output")),
                    tool_call_id=call_id,
                    function=names.get(call_id),
                )
            )
    return messages


def _tools(specs: Any) -> list[ToolInfo]:
    tools: list[ToolInfo] = []
    for spec in specs if isinstance(specs, list) else []:
        if not isinstance(spec, dict) or spec.get("type") != "function":
            continue
        parameters = spec.get("parameters") or {"type": "object", "properties": {}}
        tools.append(
            ToolInfo(
                name=str(spec.get("name")),
                description=str(spec.get("description") or ""),
                parameters=ToolParams.model_validate(parameters),
            )
        )
    return tools


def responses_call(body: Any) -> ResponsesCall:
    """The ``generate`` arguments for a Responses request ``body`` (see the module docstring
    for what is translated)."""
    body = body if isinstance(body, dict) else {}
    items = body.get("input")
    choice = body.get("tool_choice")
    parallel = body.get("parallel_tool_calls")
    return ResponsesCall(
        messages=_messages(body.get("instructions"), items if isinstance(items, list) else []),
        tools=_tools(body.get("tools")),
        tool_choice=_TOOL_CHOICES.get(choice) if isinstance(choice, str) else None,
        config=GenerateConfig(parallel_tool_calls=parallel if isinstance(parallel, bool) else None),
    )


def responses_events(output: ModelOutput) -> list[dict[str, Any]]:
    """The Responses stream events that answer with ``output``: its text as an assistant
    message, each tool call as a ``function_call`` item, and its usage."""
    message = output.message
    outputs: list[list[dict[str, Any]]] = []
    if message.text or not message.tool_calls:
        outputs.append(message_events(message.text))
    for call in message.tool_calls or []:
        outputs.append(function_call_events(call.function, call.arguments, call_id=call.id))
    spent = output.usage
    if spent is None:
        return response(*outputs, usage=usage(0, 0))
    return response(
        *outputs,
        usage=usage(
            spent.input_tokens,
            spent.output_tokens,
            cached_input_tokens=spent.input_tokens_cache_read or 0,
            reasoning_output_tokens=spent.reasoning_tokens or 0,
            total_tokens=spent.total_tokens,
        ),
    )

"""Dynamic tools: Python async functions the model can call during a turn.

``thread_start(dynamic_tools=[lookup, ...])`` registers each function with the runtime (its
name, description and JSON Schema) and answers the runtime's ``item/tool/call`` requests by
running it. The schema comes from the signature (``str``, ``int``, ``float``, ``bool``,
lists, dicts, ``Literal``, optionals, defaults) unless given explicitly, and the description
from the docstring. A tool that raises does not break the turn: the model receives
``success: false`` and the error message, and can recover.
"""

from __future__ import annotations

import inspect
import json
import types
import typing
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Literal, Union, get_args, get_origin

import attrs

from .._protocol._generated.converter import converter

__all__ = ["DynamicTool", "ToolFunction", "dynamic_tool", "tool_result_payload"]

ToolFunction = Callable[..., Awaitable[Any]]

_SCALARS: dict[Any, dict[str, Any]] = {
    str: {"type": "string"},
    int: {"type": "integer"},
    float: {"type": "number"},
    bool: {"type": "boolean"},
    type(None): {"type": "null"},
    Any: {},
}


def _schema_for(annotation: Any) -> dict[str, Any]:
    if annotation is inspect.Parameter.empty:
        return {}
    if annotation in _SCALARS:
        return dict(_SCALARS[annotation])
    origin = get_origin(annotation)
    args = get_args(annotation)
    if origin is Literal:
        return {"enum": list(args)}
    if origin in (Union, types.UnionType):
        return {"anyOf": [_schema_for(arg) for arg in args]}
    if origin in (list, tuple, set, frozenset, typing.Sequence) or annotation in (list, tuple):
        item = _schema_for(args[0]) if args else {}
        return {"type": "array", "items": item}
    if origin in (dict, typing.Mapping) or annotation is dict:
        value = _schema_for(args[1]) if len(args) == 2 else {}
        return {"type": "object", "additionalProperties": value}
    raise TypeError(
        f"cannot derive a JSON Schema for parameter type {annotation!r}; "
        "pass input_schema= to DynamicTool explicitly"
    )


def _schema_from_signature(func: Callable[..., Any]) -> dict[str, Any]:
    hints = typing.get_type_hints(func)
    properties: dict[str, Any] = {}
    required: list[str] = []
    for name, param in inspect.signature(func).parameters.items():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        schema = _schema_for(hints.get(name, param.annotation))
        if param.default is inspect.Parameter.empty:
            required.append(name)
        elif param.default is None or isinstance(param.default, (str, int, float, bool)):
            schema["default"] = param.default
        properties[name] = schema
    schema = {"type": "object", "properties": properties, "additionalProperties": False}
    if required:
        schema["required"] = required
    return schema


@attrs.frozen(kw_only=True)
class DynamicTool:
    """A tool the model may call, backed by an async function.

    Build one with :meth:`from_function` (or the :func:`dynamic_tool` decorator) or give
    every field. The function is called with the model's JSON arguments as keyword
    arguments; it returns a ``str`` (sent as text), any JSON-able value (sent as JSON text),
    or a ``DynamicToolCallResponse``/dict for full control over content items.
    """

    name: str
    description: str
    input_schema: Mapping[str, Any]
    function: ToolFunction

    @classmethod
    def from_function(
        cls,
        function: ToolFunction,
        *,
        name: str | None = None,
        description: str | None = None,
        input_schema: Mapping[str, Any] | None = None,
    ) -> DynamicTool:
        if not inspect.iscoroutinefunction(function):
            raise TypeError(f"dynamic tool {function!r} must be an async function")
        doc = inspect.getdoc(function) or ""
        return cls(
            name=name or function.__name__,
            description=description or doc.split("\n\n")[0].strip() or function.__name__,
            input_schema=input_schema
            if input_schema is not None
            else _schema_from_signature(function),
            function=function,
        )

    def spec(self) -> dict[str, Any]:
        """The ``dynamicTools`` entry sent with ``thread/start``."""
        return {
            "type": "function",
            "name": self.name,
            "description": self.description,
            "inputSchema": dict(self.input_schema),
        }

    async def call(self, arguments: Any) -> dict[str, Any]:
        """Run the function; its outcome as a ``DynamicToolCallResponse`` payload."""
        if arguments is None:
            arguments = {}
        try:
            if isinstance(arguments, dict):
                result = await self.function(**arguments)
            else:
                result = await self.function(arguments)
        except Exception as exc:
            message = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            return {"contentItems": [{"type": "inputText", "text": message}], "success": False}
        return tool_result_payload(result)


def dynamic_tool(
    function: ToolFunction | None = None,
    *,
    name: str | None = None,
    description: str | None = None,
    input_schema: Mapping[str, Any] | None = None,
) -> Any:
    """Decorator form of :meth:`DynamicTool.from_function`."""

    def wrap(func: ToolFunction) -> DynamicTool:
        return DynamicTool.from_function(
            func, name=name, description=description, input_schema=input_schema
        )

    return wrap(function) if function is not None else wrap


def tool_result_payload(result: Any) -> dict[str, Any]:
    """A tool function's return value as ``{"contentItems": [...], "success": true}``."""
    if isinstance(result, str):
        return {"contentItems": [{"type": "inputText", "text": result}], "success": True}
    if isinstance(result, dict) and "contentItems" in result:
        return result
    if attrs.has(type(result)):
        payload: dict[str, Any] = converter.unstructure(result)
        if "contentItems" in payload:
            return payload
        result = payload
    text = json.dumps(result, ensure_ascii=False, default=str)
    return {"contentItems": [{"type": "inputText", "text": text}], "success": True}

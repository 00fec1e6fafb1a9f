"""Turn input: plain strings and the small input classes of the official SDK.

The names (``TextInput``, ``ImageInput``, ``LocalImageInput``, ``SkillInput``,
``MentionInput``) match ``openai_codex`` so switching clients is an import change. The
generated ``UserInput`` variants are accepted as well, for callers who need fields these do
not offer.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, TypeAlias

import attrs

from .._protocol._generated.converter import converter

__all__ = [
    "ExternalMessage",
    "ImageInput",
    "Input",
    "InputItem",
    "LocalImageInput",
    "JsonObject",
    "MentionInput",
    "RunInput",
    "SkillInput",
    "TextInput",
    "to_wire_input",
    "to_wire_turn_input",
]


@attrs.frozen
class TextInput:
    """Text for a turn or a steer."""

    text: str


@attrs.frozen
class ImageInput:
    """An image by URL (``https://`` or a ``data:`` URL)."""

    url: str


@attrs.frozen
class LocalImageInput:
    """An image file on the runtime's machine."""

    path: str


@attrs.frozen
class SkillInput:
    """A named skill reference."""

    name: str
    path: str


@attrs.frozen
class MentionInput:
    """A named resource mention (a file, an app)."""

    name: str
    path: str


@attrs.frozen
class ExternalMessage:
    """Untrusted content from another agent, tool or application, as a whole turn input.

    The runtime gives it tool-level authority (below user and developer instructions); it
    never counts as the user's approval. ``content`` is text or a list of function-output
    content items (plain dicts). ``tool_name`` names the tool that delivered it.
    """

    tool_name: str
    content: str | Sequence[Any]
    namespace: str | None = None


JsonScalar: TypeAlias = "str | int | float | bool | None"
JsonValue: TypeAlias = "JsonScalar | dict[str, JsonValue] | list[JsonValue]"
JsonObject: TypeAlias = "dict[str, JsonValue]"
"""A JSON object as decoded by ``json.loads`` (the official SDK's name)."""

InputItem: TypeAlias = "TextInput | ImageInput | LocalImageInput | SkillInput | MentionInput"
Input: TypeAlias = "str | InputItem | Sequence[str | InputItem | Any]"
"""A string, one input item, or a list of them (generated ``UserInput`` values too)."""
RunInput: TypeAlias = "Input | ExternalMessage"
"""What a turn accepts: an :data:`Input`, or an :class:`ExternalMessage` as the whole input."""


def _item_to_wire(item: Any) -> dict[str, Any]:
    if isinstance(item, str):
        return {"type": "text", "text": item}
    if isinstance(item, TextInput):
        return {"type": "text", "text": item.text}
    if isinstance(item, ImageInput):
        return {"type": "image", "url": item.url}
    if isinstance(item, LocalImageInput):
        return {"type": "localImage", "path": item.path}
    if isinstance(item, SkillInput):
        return {"type": "skill", "name": item.name, "path": item.path}
    if isinstance(item, MentionInput):
        return {"type": "mention", "name": item.name, "path": item.path}
    if isinstance(item, dict):
        return item
    if attrs.has(type(item)):
        wire: dict[str, Any] = converter.unstructure(item)
        return wire
    raise TypeError(f"cannot use {type(item).__name__} as turn input")


def to_wire_input(value: Input) -> list[dict[str, Any]]:
    """The ``input`` array of ``turn/start`` and ``turn/steer``."""
    if isinstance(value, (str, dict)) or not isinstance(value, Sequence):
        return [_item_to_wire(value)]
    return [_item_to_wire(item) for item in value]


def to_wire_turn_input(value: RunInput) -> tuple[list[dict[str, Any]], dict[str, Any] | None]:
    """``turn/start``'s ``input`` and ``toolOutput``: an :class:`ExternalMessage` travels as
    ``toolOutput`` with an empty ``input``, anything else as ``input``."""
    if not isinstance(value, ExternalMessage):
        return to_wire_input(value), None
    if not isinstance(value.tool_name, str) or not value.tool_name.strip():
        raise ValueError("ExternalMessage.tool_name must be a non-empty string")
    content = value.content
    output: Any = (
        content
        if isinstance(content, str)
        else [converter.unstructure(item) if attrs.has(type(item)) else item for item in content]
    )
    tool_output: dict[str, Any] = {"name": value.tool_name, "output": output}
    if value.namespace is not None:
        tool_output["namespace"] = value.namespace
    return [], tool_output

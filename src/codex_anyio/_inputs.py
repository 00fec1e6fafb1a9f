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

from ._generated.converter import converter

__all__ = [
    "ImageInput",
    "Input",
    "InputItem",
    "LocalImageInput",
    "MentionInput",
    "SkillInput",
    "TextInput",
    "to_wire_input",
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


InputItem: TypeAlias = "TextInput | ImageInput | LocalImageInput | SkillInput | MentionInput"
Input: TypeAlias = "str | InputItem | Sequence[str | InputItem | Any]"
"""A string, one input item, or a list of them (generated ``UserInput`` values too)."""


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

"""The record types of the generated registries (``_generated/registry.py``)."""

from __future__ import annotations

from typing import Any, Literal

import attrs

__all__ = ["NotificationSpec", "RequestSpec"]


@attrs.frozen
class RequestSpec:
    """A request method: its params type (None: no params), response type, and stability."""

    method: str
    params_type: Any
    """An attrs class, a tagged-union alias, or None for a request without params."""
    response_type: Any
    experimental: bool


@attrs.frozen
class NotificationSpec:
    """A notification method, its params type, and where its turn and thread ids live."""

    method: str
    params_type: type
    experimental: bool
    turn_id_key: Literal["turnId", "turn.id"] | None
    thread_id_key: Literal["threadId", "thread.id"] | None

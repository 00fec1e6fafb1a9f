"""The hooks through which telemetry sees the connection's requests.

The connection calls them around each client request (with its retries) and each server
request's handler, when a client was opened with telemetry. They are a protocol here, so the
connection depends on no telemetry code: ``codex_anyio.telemetry`` implements them and sits
above this layer.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, Protocol, TypeVar

from ._server_requests import ServerRequest

__all__ = ["RequestHooks"]

T = TypeVar("T")


class RequestHooks(Protocol):
    """Wrap a request's whole life (the call returns or raises what the request does)."""

    async def client_request(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call``, one client request with its retries."""
        ...

    async def server_request(
        self, request: ServerRequest, handler: Callable[[ServerRequest], Awaitable[Any]]
    ) -> Any:
        """Run ``handler`` for ``request`` and return its result."""
        ...

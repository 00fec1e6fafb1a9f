"""Requests the app-server sends to the client, and the safe answers when nobody handles them.

Approvals are declined by default. The official SDK accepts every command and file change
when no handler is given, and answers other requests with ``{}``, which the schema rejects.
Here, with no handler registered, an approval is declined (the agent is told no and carries
on), a permissions request grants nothing, an MCP elicitation is declined, and every other
request gets a JSON-RPC "method not found" error that names the missing handler, never a
payload the runtime cannot parse.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from .._exceptions import MethodNotFoundError, ProtocolError
from .._protocol._generated.converter import converter
from .._protocol._generated.registry import SERVER_REQUESTS

__all__ = ["DECLINE_RESPONSES", "ServerRequest", "ServerRequestHandler", "default_response"]

_UNSET: Any = object()

DECLINE_RESPONSES: dict[str, dict[str, Any]] = {
    "item/commandExecution/requestApproval": {"decision": "decline"},
    "item/fileChange/requestApproval": {"decision": "decline"},
    "item/permissions/requestApproval": {"permissions": {}},
    "mcpServer/elicitation/request": {"action": "decline"},
    "execCommandApproval": {"decision": "denied"},
    "applyPatchApproval": {"decision": "denied"},
}
"""The fail-closed answer to each request that has one: no approval, no permission."""


class ServerRequest:
    """One request from the app-server that the client must answer.

    ``params`` is typed (built on first access) for the methods of the pinned schema;
    ``raw`` is the JSON as received. ``thread_id``/``turn_id`` say whose turn asked.
    """

    __slots__ = ("_params", "id", "method", "raw", "thread_id", "turn_id")

    def __init__(self, request_id: int | str, method: str, raw: dict[str, Any]) -> None:
        self.id = request_id
        self.method = method
        self.raw = raw
        thread_id = raw.get("threadId")
        turn_id = raw.get("turnId")
        self.thread_id: str | None = thread_id if isinstance(thread_id, str) else None
        self.turn_id: str | None = turn_id if isinstance(turn_id, str) else None
        self._params = _UNSET

    @property
    def params(self) -> Any:
        """Typed params (``CommandExecutionRequestApprovalParams``, ...), or the raw dict."""
        if self._params is _UNSET:
            spec = SERVER_REQUESTS.get(self.method)
            if spec is None or spec.params_type is None:
                self._params = self.raw
            else:
                try:
                    self._params = converter.structure(self.raw, spec.params_type)
                except Exception as exc:
                    raise ProtocolError(
                        f"the params of server request {self.method!r} do not match the "
                        f"pinned schema: {exc!r}"
                    ) from exc
        return self._params

    def __repr__(self) -> str:
        return f"ServerRequest(id={self.id!r}, method={self.method!r}, raw={self.raw!r})"


ServerRequestHandler = Callable[[ServerRequest], Awaitable[Any]]
"""Answers one server request: returns the result (an attrs response object or a dict), or
raises (a ``JsonRpcError`` keeps its code; any other exception becomes an internal error)."""


async def default_response(request: ServerRequest) -> Any:
    """The fail-closed answer used when no handler is registered for ``request``."""
    decline = DECLINE_RESPONSES.get(request.method)
    if decline is not None:
        return dict(decline)
    raise MethodNotFoundError(
        -32601,
        f"codex-anyio client has no handler registered for server request {request.method!r}; "
        "register one on AsyncCodex (see codex_anyio.Handlers)",
    )


def encode_result(result: Any) -> Any:
    """A handler's return value as JSON-ready data (attrs objects are unstructured)."""
    if result is None or isinstance(result, (dict, list, str, int, float, bool)):
        return {} if result is None else result
    return converter.unstructure(result)

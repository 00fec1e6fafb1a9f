"""Serving the requests the runtime sends us: one task each, never in the reader.

The reader hands each server request to :meth:`ServerTasks.start`, which returns at once:
the handler runs in its own task of the client's task group, behind a wrapper that turns
whatever it raises into a JSON-RPC error reply (the connection lives on). At most
``Limits.server_requests`` run at once; beyond that the runtime gets "client is busy" at
once; a duplicate id is answered with an error and starts nothing. A handler is cancelled
when its turn completes, when the runtime says the request is resolved, or when the
connection ends.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import anyio.abc

from .._exceptions import JsonRpcError
from ._instrument import RequestHooks
from ._server_requests import (
    ServerRequest,
    ServerRequestHandler,
    default_response,
    encode_result,
)

__all__ = ["ServerTasks"]

logger = logging.getLogger("codex_anyio")
server_request_logger = logging.getLogger("codex_anyio.server_request")

Reply = Callable[[dict[str, Any]], Awaitable[None]]
"""Queue one reply message and wait for its write (never raises for a closed connection)."""


class _ServerTask:
    __slots__ = ("request", "scope")

    def __init__(self, request: ServerRequest, scope: anyio.CancelScope) -> None:
        self.request = request
        self.scope = scope


class ServerTasks:
    """The server requests in flight on one connection, and the tasks that answer them."""

    def __init__(
        self,
        task_group: anyio.abc.TaskGroup,
        reply: Reply,
        *,
        limit: int,
        handler: ServerRequestHandler | None,
        telemetry: RequestHooks | None,
    ) -> None:
        self._task_group = task_group
        self._reply = reply
        self._limit = limit
        self.handler = handler
        """Who answers (``None``: the safe defaults of ``_server_requests``)."""
        self._telemetry = telemetry
        self._tasks: dict[int | str, _ServerTask] = {}

    def __len__(self) -> int:
        return len(self._tasks)

    def start(self, request_id: int | str, method: str, params: dict[str, Any]) -> None:
        """Answer a request in a task of its own (called by the reader; never waits)."""
        if request_id in self._tasks:
            logger.warning("the app-server reused request id %r while it was in flight", request_id)
            self.reply_error_soon(
                request_id,
                -32600,
                f"duplicate request id {request_id!r}: a request with this id is in flight",
            )
            return
        if len(self._tasks) >= self._limit:
            self.reply_error_soon(
                request_id, -32000, f"client is busy: {len(self._tasks)} server requests in flight"
            )
            return
        request = ServerRequest(request_id, method, params)
        task = _ServerTask(request, anyio.CancelScope())
        self._tasks[request_id] = task
        self._task_group.start_soon(self._serve, task, name=f"codex server request {method}")

    def reply_error_soon(
        self, request_id: int | str, code: int, message: str, data: Any = None
    ) -> None:
        """Send an error reply from a task (the reader never waits for a write)."""
        self._task_group.start_soon(self._reply_error, request_id, code, message, data)

    def resolved(self, params: dict[str, Any]) -> None:
        """``serverRequest/resolved``: the runtime no longer waits for that request."""
        request_id = params.get("requestId")
        if isinstance(request_id, (int, str)) and not isinstance(request_id, bool):
            self.cancel(request_id)

    def cancel(self, request_id: int | str) -> None:
        """Stop the handler of one request (no reply is sent)."""
        task = self._tasks.get(request_id)
        if task is not None:
            task.scope.cancel()

    def cancel_turn(self, turn_id: str) -> None:
        """Stop the handlers of a turn that has completed."""
        for task in list(self._tasks.values()):
            if task.request.turn_id == turn_id:
                task.scope.cancel()

    def cancel_all(self) -> None:
        """The connection ended: no reply can be sent."""
        for task in list(self._tasks.values()):
            task.scope.cancel()

    async def _serve(self, task: _ServerTask) -> None:
        request = task.request
        try:
            with task.scope:
                handler = self.handler or default_response
                try:
                    if self._telemetry is None:
                        result = await handler(request)
                    else:
                        result = await self._telemetry.server_request(request, handler)
                except JsonRpcError as exc:
                    await self._reply_error(request.id, exc.code, exc.message, exc.data)
                    return
                except Exception as exc:
                    server_request_logger.exception(
                        "handler for server request %s raised", request.method
                    )
                    await self._reply_error(request.id, -32603, str(exc) or type(exc).__name__)
                    return
                try:
                    payload = encode_result(result)
                except Exception as exc:
                    server_request_logger.exception(
                        "handler for %s returned an unencodable result", request.method
                    )
                    await self._reply_error(request.id, -32603, f"bad handler result: {exc}")
                    return
                await self._reply({"id": request.id, "result": payload})
        finally:
            if self._tasks.get(request.id) is task:
                del self._tasks[request.id]

    async def _reply_error(
        self, request_id: int | str, code: int, message: str, data: Any = None
    ) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        await self._reply({"id": request_id, "error": error})

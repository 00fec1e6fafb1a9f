"""Who answers a server request: dynamic tools, handlers by scope, the queue, or the default.

For each request from the runtime, in order:

1. ``item/tool/call`` for a dynamic tool registered on the request's thread runs that tool;
2. the handler for the request's kind in the handlers of the active turn (``turn(...,
   handlers=)``), else of the thread (``thread_start(..., handlers=)``), else of the client
   (``AsyncCodex(handlers=)``);
3. an open :meth:`AsyncCodex.server_requests` queue, where the caller answers by hand; a
   request left unanswered for ``answer_timeout`` seconds is answered fail-closed;
4. the fail-closed default (approvals declined; anything else a JSON-RPC error).

Each request runs in its own task (see ``_connection.py``), so a handler may take its time,
ask a human, or call back into the client without holding anything else up; it is cancelled
when its turn completes.

Approvals and security: ``ApprovalPolicy.accept_all()`` lets the model run any command and
write any file the sandbox would otherwise have asked about; use it only inside a disposable
sandbox or container. The default, ``decline_all``, tells the agent "no" and lets the turn go
on; ``ask(callback)`` lets code decide per request.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import Any, Literal

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._exceptions import JsonRpcError
from .._rpc._connection import CodexClient
from .._rpc._server_requests import ServerRequest, default_response
from ._tools import DynamicTool

__all__ = [
    "ApprovalPolicy",
    "Dispatcher",
    "Handlers",
    "PendingServerRequest",
    "ServerRequestQueue",
]

logger = logging.getLogger("codex_anyio.server_request")

RawHandler = Callable[[ServerRequest], Awaitable[Any]]
TypedHandler = Callable[[Any], Awaitable[Any]]

_APPROVAL_METHODS = {
    "item/commandExecution/requestApproval": ("accept", "decline"),
    "item/fileChange/requestApproval": ("accept", "decline"),
    "execCommandApproval": ("approved", "denied"),
    "applyPatchApproval": ("approved", "denied"),
}


@attrs.frozen
class ApprovalPolicy:
    """How command, file-change and permission approvals are answered.

    * :meth:`decline_all` (the default): the agent is told no and the turn goes on.
    * :meth:`accept_all`: everything the model asks for is approved. The sandbox no longer
      protects anything the model decides to do; use only where that is acceptable.
    * :meth:`ask`: an async callback receives the :class:`ServerRequest` (typed ``params``:
      the command, cwd and reason, or the file changes) and returns True to approve.
    """

    mode: Literal["decline", "accept", "ask"]
    decide: Callable[[ServerRequest], Awaitable[bool]] | None = None

    @classmethod
    def decline_all(cls) -> ApprovalPolicy:
        return cls("decline")

    @classmethod
    def accept_all(cls) -> ApprovalPolicy:
        return cls("accept")

    @classmethod
    def ask(cls, decide: Callable[[ServerRequest], Awaitable[bool]]) -> ApprovalPolicy:
        return cls("ask", decide)

    def handles(self, method: str) -> bool:
        return method in _APPROVAL_METHODS or method == "item/permissions/requestApproval"

    async def answer(self, request: ServerRequest) -> dict[str, Any]:
        if self.mode == "accept":
            approve = True
        elif self.mode == "ask":
            assert self.decide is not None
            approve = bool(await self.decide(request))
        else:
            approve = False
        if request.method == "item/permissions/requestApproval":
            granted = request.raw.get("permissions") if approve else {}
            return {"permissions": granted or {}}
        yes, no = _APPROVAL_METHODS[request.method]
        return {"decision": yes if approve else no}


_TYPED_FIELDS = {
    "item/commandExecution/requestApproval": "command_approval",
    "item/fileChange/requestApproval": "file_change_approval",
    "item/permissions/requestApproval": "permissions_approval",
    "item/tool/requestUserInput": "user_input",
    "mcpServer/elicitation/request": "elicitation",
    "account/chatgptAuthTokens/refresh": "auth_refresh",
    "item/tool/call": "tool_call",
}


@attrs.frozen(kw_only=True)
class Handlers:
    """Async functions that answer the runtime's requests. Unset means "not here".

    Typed handlers receive the typed params and return the typed response (or a dict):

    :param approvals: policy for command, file-change and permission approvals.
    :param command_approval: ``CommandExecutionRequestApprovalParams`` →
        ``CommandExecutionRequestApprovalResponse`` (overrides ``approvals`` for commands).
    :param file_change_approval: ``FileChangeRequestApprovalParams`` →
        ``FileChangeRequestApprovalResponse``.
    :param permissions_approval: ``PermissionsRequestApprovalParams`` →
        ``PermissionsRequestApprovalResponse``.
    :param user_input: ``ToolRequestUserInputParams`` → ``ToolRequestUserInputResponse``.
    :param elicitation: ``McpServerElicitationRequestParams`` →
        ``McpServerElicitationRequestResponse``.
    :param auth_refresh: ``ChatgptAuthTokensRefreshParams`` →
        ``ChatgptAuthTokensRefreshResponse``.
    :param tool_call: ``DynamicToolCallParams`` → ``DynamicToolCallResponse``, for tool
        calls no registered :class:`DynamicTool` matches.
    :param by_method: raw handlers by wire method (receive the :class:`ServerRequest`), for
        anything else (``currentTime/read``, ...) or to take over a method entirely.
    """

    approvals: ApprovalPolicy | None = None
    command_approval: TypedHandler | None = None
    file_change_approval: TypedHandler | None = None
    permissions_approval: TypedHandler | None = None
    user_input: TypedHandler | None = None
    elicitation: TypedHandler | None = None
    auth_refresh: TypedHandler | None = None
    tool_call: TypedHandler | None = None
    by_method: Mapping[str, RawHandler] = attrs.field(factory=dict)

    def find(self, method: str) -> RawHandler | None:
        """The handler this object has for ``method``, as a raw handler."""
        raw = self.by_method.get(method)
        if raw is not None:
            return raw
        field = _TYPED_FIELDS.get(method)
        typed: TypedHandler | None = getattr(self, field) if field else None
        if typed is not None:

            async def call_typed(request: ServerRequest) -> Any:
                return await typed(request.params)

            return call_typed
        if self.approvals is not None and self.approvals.handles(method):
            return self.approvals.answer
        return None


class PendingServerRequest:
    """A server request waiting in the queue for an answer from the caller.

    Answer it once with :meth:`respond`, :meth:`reject` or :meth:`decline`; all are
    non-blocking. Unanswered requests fail closed after the queue's ``answer_timeout``.
    """

    def __init__(self, request: ServerRequest) -> None:
        self.request = request
        self._send, self._receive = anyio.create_memory_object_stream[tuple[str, Any]](1)
        self._answered = False

    @property
    def method(self) -> str:
        return self.request.method

    @property
    def params(self) -> Any:
        return self.request.params

    @property
    def answered(self) -> bool:
        return self._answered

    def _answer(self, kind: str, value: Any) -> None:
        if self._answered:
            raise RuntimeError(f"server request {self.request.id} was already answered")
        self._answered = True
        try:
            self._send.send_nowait((kind, value))
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            logger.warning("server request %s was answered too late", self.request.id)
        self._send.close()

    def respond(self, result: Any) -> None:
        """Answer with ``result`` (the typed response object or a dict)."""
        self._answer("result", result)

    def reject(self, message: str, *, code: int = -32000, data: Any = None) -> None:
        """Answer with a JSON-RPC error."""
        self._answer("error", JsonRpcError(code, message, data))

    def decline(self) -> None:
        """Answer fail-closed, as if nobody had handled it."""
        self._answer("default", None)

    def _discard(self) -> None:
        self._send.close()
        self._receive.close()

    async def _wait(self, answer_within: float) -> Any:
        with self._receive, self._send:
            kind: str | None = None
            value: Any = None
            with anyio.move_on_after(answer_within):
                try:
                    kind, value = await self._receive.receive()
                except anyio.EndOfStream:
                    kind = "default"
        if kind is None:
            logger.warning(
                "server request %s (%s) was not answered in %g s; failing closed",
                self.request.id,
                self.request.method,
                answer_within,
            )
            return await default_response(self.request)
        if kind == "result":
            return value
        if kind == "error":
            raise value
        return await default_response(self.request)

    def __repr__(self) -> str:
        return f"PendingServerRequest({self.request!r})"


class ServerRequestQueue:
    """``async with codex.server_requests() as requests: async for pending in requests``.

    While open, requests that no handler takes come here instead of the fail-closed
    default. The buffer is bounded (``buffer``): when full, a request fails closed at once.
    Closing the queue fails closed every request still buffered.
    """

    def __init__(self, dispatcher: Dispatcher, *, answer_timeout: float, buffer: int) -> None:
        self._dispatcher = dispatcher
        self.answer_timeout = answer_timeout
        self._send: MemoryObjectSendStream[PendingServerRequest]
        self._receive: MemoryObjectReceiveStream[PendingServerRequest]
        self._send, self._receive = anyio.create_memory_object_stream[PendingServerRequest](buffer)

    def offer(self, pending: PendingServerRequest) -> bool:
        try:
            self._send.send_nowait(pending)
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        return True

    async def __aenter__(self) -> ServerRequestQueue:
        self._dispatcher._queues.append(self)
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        if self in self._dispatcher._queues:
            self._dispatcher._queues.remove(self)
        self._send.close()
        while True:
            try:
                pending = self._receive.receive_nowait()
            except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
                break
            if not pending.answered:
                pending.decline()
        self._receive.close()

    def __aiter__(self) -> ServerRequestQueue:
        return self

    async def __anext__(self) -> PendingServerRequest:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None


class Dispatcher:
    """Routes each server request to its answerer (see the module docstring)."""

    def __init__(self, handlers: Handlers) -> None:
        self.handlers = handlers
        self._thread_handlers: dict[str, Handlers] = {}
        self._turn_handlers: dict[str, Handlers] = {}
        self._tools: dict[str, dict[str, DynamicTool]] = {}
        self._registrations: dict[str, object] = {}
        self._queues: list[ServerRequestQueue] = []
        self._client: CodexClient | None = None

    def attach(self, client: CodexClient) -> None:
        self._client = client

    def detach(self) -> None:
        self._client = None
        for queue in list(self._queues):
            queue.close()

    # -- registration -------------------------------------------------------------------------

    def set_thread(
        self,
        thread_id: str,
        *,
        handlers: Handlers | None = None,
        tools: list[DynamicTool] | None = None,
    ) -> object | None:
        """Register a thread's handlers and tools; returns a token for :meth:`forget_thread`
        (None if there was nothing to register)."""
        if handlers is None and not tools:
            return None
        if handlers is not None:
            self._thread_handlers[thread_id] = handlers
        if tools:
            self._tools.setdefault(thread_id, {}).update({tool.name: tool for tool in tools})
        token = self._registrations[thread_id] = object()
        return token

    def forget_thread(self, thread_id: str, token: object | None = None) -> None:
        """Drop a thread's handlers and tools: it was archived (``token`` None), or the
        ``Thread`` object that registered them (``token``) was garbage-collected and no later
        registration replaced it. Called from finalizers too: plain dict work only."""
        if token is not None and self._registrations.get(thread_id) is not token:
            return
        self._registrations.pop(thread_id, None)
        self._thread_handlers.pop(thread_id, None)
        self._tools.pop(thread_id, None)
        self._turn_handlers.pop(thread_id, None)

    def registered_threads(self) -> int:
        """How many threads have handlers or tools registered (a gauge for leak tests)."""
        return len(self._thread_handlers.keys() | self._tools.keys())

    def push_turn_handlers(self, thread_id: str, handlers: Handlers) -> None:
        """Handlers for the thread's active turn (a thread runs one turn at a time)."""
        self._turn_handlers[thread_id] = handlers

    def pop_turn_handlers(self, thread_id: str, handlers: Handlers) -> None:
        if self._turn_handlers.get(thread_id) is handlers:
            del self._turn_handlers[thread_id]

    def open_queue(self, *, answer_timeout: float, buffer: int) -> ServerRequestQueue:
        if answer_timeout <= 0 or math.isnan(answer_timeout):
            raise ValueError("answer_timeout must be positive")
        return ServerRequestQueue(self, answer_timeout=answer_timeout, buffer=buffer)

    # -- answering ----------------------------------------------------------------------------

    async def dispatch(self, request: ServerRequest) -> Any:
        thread_id = request.thread_id
        if request.method == "item/tool/call" and thread_id is not None:
            tool = self._tools.get(thread_id, {}).get(str(request.raw.get("tool")))
            if tool is not None:
                return await tool.call(request.raw.get("arguments"))
        scopes: list[Handlers] = []
        if thread_id is not None:
            for table in (self._turn_handlers, self._thread_handlers):
                found = table.get(thread_id)
                if found is not None:
                    scopes.append(found)
        scopes.append(self.handlers)
        for scope in scopes:
            handler = scope.find(request.method)
            if handler is not None:
                return await handler(request)
        for queue in list(self._queues):
            pending = PendingServerRequest(request)
            if queue.offer(pending):
                return await pending._wait(queue.answer_timeout)
            pending._discard()
        return await default_response(request)

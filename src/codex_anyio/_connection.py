"""The JSON-RPC connection: one reader task, a pending table, serialized writes, handler tasks.

Design, and why:

* **One reader.** A single task, owned by the client's task group, reads the transport. It
  decodes each line and routes it synchronously: a response goes to the waiter of its id, a
  notification to the router (``_router.py``), a server request to a new handler task. It
  never runs user code. The only other thing it awaits is room in a full notification
  buffer, for at most ``Limits.overflow_grace`` seconds (backpressure, see
  ``_notifications.py``), so a stalled consumer can delay other responses by that much at
  worst, never forever. It yields every :data:`READER_CHECKPOINT_EVERY` lines so that
  consumers keep up with a burst arriving in one large read.
* **Pending table.** Each request owns a one-slot memory stream keyed by its id. The buffer is
  one so the reader's ``send_nowait`` always succeeds even before the waiter parks. The waiter
  removes its entry in ``finally``, so a cancelled request leaves no residue; a response that
  arrives after that is counted (``statistics().unknown_responses``) and logged.
* **Writes.** Serialized by a lock, and each message is written in a shielded, bounded scope:
  it goes out whole or, if the pipe stays blocked for :data:`WRITE_TIMEOUT`, the connection
  is declared dead. A half-written line would corrupt every later message.
* **Server requests.** Each runs as its own task in the client's task group, behind a wrapper
  that turns an exception into a JSON-RPC error reply (the connection lives on). At most
  ``Limits.server_requests`` run at once; beyond that the runtime gets "server busy" at once.
  A handler is cancelled when its turn completes or the runtime says the request is resolved.
* **The end.** When the transport ends (exit, crash, or our own shutdown) every pending
  request, every stream and every subscription ends with :class:`TransportClosedError`
  carrying the exit status and the stderr tail. Nothing waits forever.
* **Bad input.** A line that is not JSON, or JSON that is not an object, is counted and
  logged and the connection continues; with ``strict=True`` it is fatal.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any, NamedTuple, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectSendStream

from . import _json
from ._exceptions import (
    JsonRpcError,
    ProtocolError,
    TransportClosedError,
    map_jsonrpc_error,
)
from ._framing import LineSplitter
from ._generated.converter import converter
from ._generated.methods import ClientMethods
from ._notifications import NotificationStream
from ._router import Limits, Router, RouterStatistics
from ._server_requests import (
    ServerRequest,
    ServerRequestHandler,
    default_response,
    encode_result,
)
from ._transport import Transport

__all__ = ["ClientStatistics", "CodexClient", "open_client"]

logger = logging.getLogger("codex_anyio")

T = TypeVar("T")

WRITE_TIMEOUT = 30.0
"""A write that cannot complete in this time means the runtime stopped reading stdin; the
connection is then closed rather than left with a half-written message."""

READER_CHECKPOINT_EVERY = 64
"""The reader yields to other tasks at least once per this many lines."""

_json_loads = _json.loads
_json_dumps = _json.dumps


class ClientStatistics(NamedTuple):
    """Counters and gauges of one connection (see ``CodexClient.statistics``)."""

    pending_requests: int
    server_requests_in_flight: int
    bad_lines: int
    unknown_responses: int
    router: RouterStatistics


class _ServerTask:
    __slots__ = ("request", "scope")

    def __init__(self, request: ServerRequest, scope: anyio.CancelScope) -> None:
        self.request = request
        self.scope = scope


class CodexClient(ClientMethods):
    """Low-level typed JSON-RPC client over one transport.

    Use it through ``AsyncCodex.client``; :func:`open_client` exists for custom transports.
    ``request`` sends any method; the generated methods (``thread_start``, ``fs_read_file``,
    ...) take and return the typed models.
    """

    def __init__(
        self,
        transport: Transport,
        task_group: anyio.abc.TaskGroup,
        *,
        limits: Limits,
        strict: bool = False,
        server_request_handler: ServerRequestHandler | None = None,
    ) -> None:
        self._transport = transport
        self._task_group = task_group
        self._limits = limits
        self._strict = strict
        self._handler = server_request_handler
        self._router = Router(limits, on_turn_completed=self._cancel_turn_requests)
        self._pending: dict[int, MemoryObjectSendStream[dict[str, Any]]] = {}
        self._response_hooks: dict[int, Callable[[dict[str, Any]], None]] = {}
        self._next_id = 1
        self._write_lock = anyio.Lock()
        self._server_tasks: dict[int | str, _ServerTask] = {}
        self._closed_error: TransportClosedError | None = None
        self._closing = False
        self._bad_lines = 0
        self._unknown_responses = 0

    # -- public -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed_error is not None

    def set_server_request_handler(self, handler: ServerRequestHandler | None) -> None:
        """Replace the function that answers server requests (``None``: fail-closed defaults)."""
        self._handler = handler

    async def request(self, method: str, params: Any = None) -> Any:
        """Send request ``method`` and return the raw ``result``.

        Bound the wait the AnyIO way, with ``anyio.fail_after`` around the call; a cancelled
        request leaves nothing behind.

        :param params: a dict, an attrs params object, or None for no params.
        :raises JsonRpcError: (a subclass per code) if the server answers with an error.
        :raises TransportClosedError: if the connection ends first.
        """
        return await self._request(method, params)

    async def _request(
        self,
        method: str,
        params: Any = None,
        on_response: Callable[[dict[str, Any]], None] | None = None,
    ) -> Any:
        """``request``, with a hook the reader runs on the response before handing it over."""
        if self._closed_error is not None:
            raise self._closed()
        if params is not None and not isinstance(params, dict):
            params = converter.unstructure(params)
        request_id = self._next_id
        self._next_id += 1
        send, receive = anyio.create_memory_object_stream[dict[str, Any]](1)
        self._pending[request_id] = send
        if on_response is not None:
            self._response_hooks[request_id] = on_response
        message: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        try:
            with receive:
                await self._write(message)
                try:
                    response = await receive.receive()
                except anyio.EndOfStream:
                    raise self._closed() from None
        finally:
            self._pending.pop(request_id, None)
            self._response_hooks.pop(request_id, None)
            send.close()
        error = response.get("error")
        if error is not None:
            if not isinstance(error, dict):
                raise JsonRpcError(-32603, f"malformed error response: {error!r}")
            raise map_jsonrpc_error(
                int(error.get("code", -32603)), str(error.get("message", "")), error.get("data")
            )
        return response.get("result")

    async def _call_typed(self, method: str, params: object | None, response_type: Any) -> Any:
        result = await self.request(method, params)
        return converter.structure(result if result is not None else {}, response_type)

    async def notify(self, method: str, params: Any = None) -> None:
        """Send a client notification (``initialized`` is the only one the schema has)."""
        message: dict[str, Any] = {"method": method}
        if params is not None:
            message["params"] = params
        await self._write(message)

    def subscribe_turn(self, turn_id: str) -> NotificationStream:
        """Notifications of turn ``turn_id`` (for a turn not started by this client)."""
        return self._router.subscribe_turn(turn_id)

    def subscribe_thread(
        self, thread_id: str, *, include_turns: bool = False
    ) -> NotificationStream:
        """Notifications of thread ``thread_id``; with ``include_turns``, its turns' too."""
        return self._router.subscribe_thread(thread_id, include_turns=include_turns)

    def subscribe(self, *, everything: bool = False) -> NotificationStream:
        """Global notifications and whatever no other subscriber took (all, with
        ``everything``)."""
        return self._router.subscribe_global(everything=everything)

    async def start_turn(
        self, thread_id: str, params: Any
    ) -> tuple[dict[str, Any], NotificationStream]:
        """Send ``turn/start`` and return (raw result, the turn's stream).

        Notifications the runtime sends for the new turn before its response are held and
        come first on the stream: nothing is lost between the write and the subscription.
        The stream is created by the reader itself when it reads the response, so no event
        of the new turn can be routed between the response and the subscription.
        """
        outcome: list[NotificationStream | BaseException] = []
        answered = False

        def on_response(message: dict[str, Any]) -> None:
            nonlocal answered
            answered = True
            try:
                result = message.get("result")
                if isinstance(result, dict):
                    turn_id = result["turn"]["id"]
                    outcome.append(self._router.claim_turn(thread_id, turn_id))
            except Exception as exc:  # never let a bad response break the reader
                outcome.append(exc)
            finally:
                self._router.end_turn_start(thread_id)

        self._router.begin_turn_start(thread_id)
        try:
            result = await self._request("turn/start", params, on_response)
        except BaseException:
            if not answered:
                self._router.end_turn_start(thread_id)
            elif outcome and isinstance(outcome[0], NotificationStream):
                outcome[0].close()  # the turn started, but its starter is gone
            raise
        claimed = outcome[0] if outcome else None
        if not isinstance(claimed, NotificationStream):
            raise ProtocolError(f"malformed turn/start response: {result!r}") from claimed
        return result, claimed

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            pending_requests=len(self._pending),
            server_requests_in_flight=len(self._server_tasks),
            bad_lines=self._bad_lines,
            unknown_responses=self._unknown_responses,
            router=self._router.statistics(),
        )

    # -- writing ----------------------------------------------------------------------------

    def _closed(self) -> TransportClosedError:
        assert self._closed_error is not None
        return self._closed_error.clone()

    async def _write(self, message: dict[str, Any]) -> None:
        data = _json_dumps(message) + b"\n"
        async with self._write_lock:
            if self._closed_error is not None:
                raise self._closed()
            with anyio.CancelScope(shield=True):
                with anyio.move_on_after(WRITE_TIMEOUT) as scope:
                    try:
                        await self._transport.send(data)
                    except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                        # The reader sees the end too; it knows the exit status.
                        await self._wait_closed()
                        raise self._closed() from None
                if scope.cancelled_caught:
                    self._shut(
                        TransportClosedError(
                            f"the app-server did not read {len(data)} bytes in {WRITE_TIMEOUT} s"
                        )
                    )
                    raise self._closed()

    async def _wait_closed(self) -> None:
        if self._closed_error is None:
            returncode, tail = await self._transport.exit_info()
            self._shut(
                TransportClosedError(
                    "the app-server stopped reading its input",
                    returncode=returncode,
                    stderr_tail=tail,
                )
            )

    # -- reading ----------------------------------------------------------------------------

    async def read_loop(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The reader: run it in the client's task group until the transport ends."""
        task_status.started()
        splitter = LineSplitter(self._limits.max_line_bytes)
        handle_line = self._handle_line
        receive = self._transport.receive
        reason = "the app-server closed its output"
        cause: BaseException | None = None
        router = self._router
        countdown = READER_CHECKPOINT_EVERY
        try:
            while True:
                try:
                    chunk = await receive()
                except anyio.EndOfStream:
                    break
                for line in splitter.feed(chunk):
                    handle_line(line)
                    if router.blocked:
                        await router.flush_blocked()
                    countdown -= 1
                    if not countdown:
                        # One chunk can hold thousands of events: let consumers run.
                        countdown = READER_CHECKPOINT_EVERY
                        await anyio.lowlevel.checkpoint()
        except ProtocolError as exc:
            reason, cause = f"protocol error: {exc}", exc
        finally:
            if self._closed_error is None:
                if self._closing:
                    reason = "the client was closed"
                returncode, tail = await self._transport.exit_info()
                error = TransportClosedError(reason, returncode=returncode, stderr_tail=tail)
                error.__cause__ = cause
                self._shut(error)
        if cause is not None:
            with anyio.CancelScope(shield=True):
                await self._transport.aclose()

    def _handle_line(self, line: bytes) -> None:
        try:
            message = _json_loads(line)
        except ValueError:
            self._bad_line(line, "it is not JSON")
            return
        if type(message) is not dict:
            self._bad_line(line, "it is not a JSON object")
            return
        method = message.get("method")
        if method is None:
            request_id = message.get("id")
            if type(request_id) is not int:
                request_id = None
            waiter = self._pending.get(request_id) if request_id is not None else None
            if waiter is None or request_id is None:
                self._unknown_responses += 1
                logger.debug("response for unknown request id %r", request_id)
                return
            hook = self._response_hooks.pop(request_id, None)
            if hook is not None:
                hook(message)
            try:
                waiter.send_nowait(message)
            except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._unknown_responses += 1
            return
        params = message.get("params")
        if not isinstance(params, dict):
            params = {}
        if "id" in message:
            self._start_server_request(message["id"], method, params)
        else:
            self._router.route(method, params)

    def _bad_line(self, line: bytes, why: str) -> None:
        self._bad_lines += 1
        preview = line[:200].decode("utf-8", "replace")
        if self._strict:
            raise ProtocolError(f"bad line from the app-server ({why}): {preview!r}")
        logger.warning("ignored a line from the app-server (%s): %r", why, preview)

    # -- server requests ----------------------------------------------------------------------

    def _start_server_request(self, request_id: Any, method: str, params: dict[str, Any]) -> None:
        if not isinstance(request_id, (int, str)) or isinstance(request_id, bool):
            self._bad_line(json.dumps(request_id).encode(), "a request id must be int or string")
            return
        request = ServerRequest(request_id, method, params)
        if len(self._server_tasks) >= self._limits.server_requests:
            self._task_group.start_soon(
                self._reply_error,
                request_id,
                -32000,
                f"client is busy: {len(self._server_tasks)} server requests in flight",
            )
            return
        if method == "serverRequest/resolved":  # pragma: no cover - it is a notification
            return
        task = _ServerTask(request, anyio.CancelScope())
        self._server_tasks[request_id] = task
        self._task_group.start_soon(self._serve, task, name=f"codex server request {method}")

    async def _serve(self, task: _ServerTask) -> None:
        request = task.request
        try:
            with task.scope:
                handler = self._handler or default_response
                try:
                    result = await handler(request)
                except JsonRpcError as exc:
                    await self._reply_error(request.id, exc.code, exc.message, exc.data)
                    return
                except Exception as exc:
                    logger.exception("handler for server request %s raised", request.method)
                    await self._reply_error(request.id, -32603, str(exc) or type(exc).__name__)
                    return
                try:
                    payload = encode_result(result)
                except Exception as exc:
                    logger.exception(
                        "handler for %s returned an unencodable result", request.method
                    )
                    await self._reply_error(request.id, -32603, f"bad handler result: {exc}")
                    return
                await self._reply({"id": request.id, "result": payload})
        finally:
            self._server_tasks.pop(request.id, None)

    async def _reply(self, message: dict[str, Any]) -> None:
        try:
            await self._write(message)
        except TransportClosedError:
            pass

    async def _reply_error(
        self, request_id: int | str, code: int, message: str, data: Any = None
    ) -> None:
        error: dict[str, Any] = {"code": code, "message": message}
        if data is not None:
            error["data"] = data
        await self._reply({"id": request_id, "error": error})

    def _cancel_turn_requests(self, turn_id: str) -> None:
        for task in list(self._server_tasks.values()):
            if task.request.turn_id == turn_id:
                task.scope.cancel()

    def cancel_server_request(self, request_id: int | str) -> None:
        """Stop the handler of a request the runtime no longer waits for."""
        task = self._server_tasks.get(request_id)
        if task is not None:
            task.scope.cancel()

    # -- the end --------------------------------------------------------------------------------

    def _shut(self, error: TransportClosedError) -> None:
        if self._closed_error is not None:
            return
        self._closed_error = error
        for send in list(self._pending.values()):
            send.close()
        self._router.close(error)
        for task in list(self._server_tasks.values()):
            task.scope.cancel()

    async def aclose(self) -> None:
        """Close the transport; the reader then ends every waiter with TransportClosedError."""
        self._closing = True
        with anyio.CancelScope(shield=True):
            await self._transport.aclose()


@asynccontextmanager
async def open_client(
    transport: Transport,
    *,
    limits: Limits | None = None,
    strict: bool = False,
    server_request_handler: ServerRequestHandler | None = None,
    on_started: Callable[[CodexClient], None] | None = None,
) -> AsyncIterator[CodexClient]:
    """Run a :class:`CodexClient` over ``transport`` for the duration of the block.

    The reader and every handler task live in a task group owned by this block; on exit the
    transport is closed (shielded, bounded) and no task outlives it.
    """
    async with anyio.create_task_group() as tg:
        client = CodexClient(
            transport,
            tg,
            limits=limits or Limits(),
            strict=strict,
            server_request_handler=server_request_handler,
        )
        await tg.start(client.read_loop, name="codex reader")
        if on_started is not None:
            on_started(client)
        try:
            yield client
        finally:
            await client.aclose()
            tg.cancel_scope.cancel()

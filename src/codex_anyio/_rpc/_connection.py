"""The JSON-RPC connection: one reader task, one writer task, a pending table, handler tasks.

Design, and the contracts (who may call what, from which task, with which bound):

* **One reader.** A single task, owned by the client's task group, reads the transport. It
  decodes each line and routes it synchronously: a response goes to the waiter of its id, a
  notification to the router (``_router.py``), a server request to a new handler task. It
  never runs user code and never waits on a consumer: events for a consumer whose buffer is
  full are parked (``_notifications.py``), so responses never queue behind a notification
  buffer. It stops reading only when ``Limits.backlog`` events are parked (real
  backpressure), and yields every :data:`READER_CHECKPOINT_EVERY` lines so consumers keep up
  with a burst. On Trio it is protected from ``KeyboardInterrupt``, which Trio then delivers
  to the main task: a Ctrl-C reaches the user's code (which interrupts its turn), never the
  reader.
* **Pending table.** Each request owns an answer slot (``_messages.Reply``: an event and a
  value) keyed by its id, and waits for the response only, not also for its write; the
  reader pops the entry when it delivers, so a duplicate response is counted
  (``statistics().unknown_responses``), and the waiter removes it in ``finally``, so a
  cancelled request leaves no residue. At most ``Limits.requests_in_flight`` requests wait for
  answers at once; more wait their turn in the client. A request the runtime rejects as
  overloaded (``-32001``, before doing anything) is retried with jittered backoff, at most
  ``Limits.overload_retries`` attempts in all.
* **Writes.** Callers queue whole messages (a deque; the writer is woken only when idle); one
  writer task writes them in order, so a message goes out whole or not at all. While the
  writer is idle with nothing queued, a caller writes its message itself without waiting
  (``Transport.try_send``, stdio only): no hop to the writer task per request; what the pipe
  does not take at once goes to the writer, already begun, and is finished whole. A caller's
  deadline or cancellation wins: it stops waiting at once, and its message is dropped if the
  writer has not started it. A write the runtime does not read for ``Limits.write_timeout``
  seconds declares the connection dead.
* **Turn starts.** ``start_turn`` creates the turn's stream in the reader when it reads the
  ``turn/start`` response. If the caller is gone by then (cancelled, a ``KeyboardInterrupt``,
  an asyncio-native ``task.cancel()``), the reader hands the new turn to a reaper task that
  interrupts it: a turn never runs on the server without an owner. The caller itself waits
  for that (shielded, within ``Limits.interrupt_timeout`` in all) before its exception
  continues, unless it is interrupted again while waiting (``_turn_start.py``).
* **Server requests** (``_server_tasks.py``). Each runs as its own task in the client's task
  group, behind a wrapper that turns an exception into a JSON-RPC error reply (the
  connection lives on). At most ``Limits.server_requests`` run at once; beyond that the
  runtime gets "server busy" at once; a duplicate id is answered with an error and starts
  nothing. A handler is cancelled when its turn completes or the runtime says the request is
  resolved (``serverRequest/resolved``).
* **The end.** When the transport ends (exit, crash, or our own shutdown) every pending
  request, every stream and every subscription ends with :class:`TransportClosedError`
  carrying the exit status and the stderr tail (for a server we attached to, which has
  neither: the transport's ``end_reason``, e.g. the WebSocket close code and reason). A
  protocol error (strict mode, an over-long line) ends everything at once, with the
  :class:`ProtocolError` as ``__cause__``.
* **Bad input.** A line that is not JSON, not an object, or has a non-string method is
  counted and logged (its head only, redacted: ``_redact.preview``) and the connection
  continues (with ``strict=True`` it is fatal). If an undecodable line is a response whose id
  can still be read, that request fails with :class:`ProtocolError`; an undecodable server
  request is answered with a parse error. A line nested too deeply to decode is such a line:
  the decoders' limits raise ``ValueError`` (``_json.loads_exact`` turns the stdlib's
  ``RecursionError`` into one), never an error that would end the reader.
  Integers beyond 64 bits in responses and server requests stay exact (such lines are decoded
  by the stdlib decoder; orjson would turn them into floats); notifications carry no such
  values in the pinned schema.
"""

from __future__ import annotations

import logging
import random
import re
import sys
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, Final, NamedTuple, NoReturn, TypeVar

import anyio
import anyio.abc
import anyio.lowlevel

from .. import _json
from .._exceptions import (
    ProtocolError,
    ServerBusyError,
    TransportClosedError,
    error_from_wire,
)
from .._protocol._generated.converter import converter
from .._protocol._generated.methods import ClientMethods
from .._redact import preview
from .._wire._framing import LineSplitter
from .._wire._transport import Transport, abort_transport
from ._instrument import RequestHooks
from ._interrupt import interrupt_and_wait
from ._messages import DROPPED, QUEUED, WRITING, WRITTEN, Outgoing, Reply, ResponseHook
from ._notifications import Notification, NotificationStream
from ._router import Limits, Router, RouterStatistics
from ._server_requests import ServerRequestHandler
from ._server_tasks import ServerTasks
from ._turn_start import TurnStart
from ._usage import RateLimits

__all__ = [
    "CONNECTION_READS",
    "ClientStatistics",
    "CodexClient",
    "open_client",
    "structure_result",
]

logger = logging.getLogger("codex_anyio")

T = TypeVar("T")

READER_CHECKPOINT_EVERY: Final = 256
"""The reader yields to other tasks, and services full buffers, once per this many lines
(~1 ms of events; measured 4% less CPU per event than 64, from fewer task switches)."""

OVERLOAD_FIRST_DELAY: Final = 0.05
OVERLOAD_MAX_DELAY: Final = 1.0
"""Backoff between attempts of a request rejected as overloaded (seconds, +-25 % jitter)."""

CONNECTION_READS: Final = frozenset(
    {"turn/completed", "serverRequest/resolved", "account/rateLimits/updated"}
)
"""Notifications the connection itself acts on: a turn's end (its stream, its handlers, an
interrupt's wait), a withdrawn server request (its handler is cancelled) and the usage
limits (``rate_limits``, a usage limit's reset time). Never opted out."""

_json_loads = _json.loads
_json_loads_exact = _json.loads_exact
_json_dumps = _json.dumps
_DIGITS_AS_ZERO: Final = bytes.maketrans(b"123456789", b"000000000")
_NINETEEN_DIGITS: Final = b"0" * 19


def _may_hold_big_int(line: bytes) -> bool:
    """Whether ``line`` has a run of 19 or more digits, one that orjson may turn into a float
    (beyond 64 bits): then it is decoded exactly. Every digit mapped to ``0`` and a substring
    search, both in C: 4.9 µs on a 4 kB ``thread/start`` answer, against 50 µs for the regular
    expression ``\\d{19,}`` it replaces (measured; it ran on every answer)."""
    return _NINETEEN_DIGITS in line.translate(_DIGITS_AS_ZERO)


_HEAD = re.compile(
    rb'\A\s*\{\s*"id"\s*:\s*(-?\d{1,18}|"[^"\\]{0,200}")\s*,\s*"(result|error|method)"'
    rb'\s*:\s*("[^"\\]{0,200}")?'
)
"""The head of a message as the runtime writes it (``{"id":N,"result":...``, ``{"id":N,
"method":"..."``): what a line no decoder can read (nested too deeply) still says about
which request it answers or makes."""


def structure_result(method: str, result: Any, response_type: Any) -> Any:
    """A response's ``result`` as ``response_type``.

    :raises ProtocolError: if it does not match the pinned schema (schema drift), naming the
        method and chaining the converter's error, instead of a bare ``KeyError``.
    """
    try:
        return converter.structure(result if result is not None else {}, response_type)
    except Exception as exc:
        raise ProtocolError(
            f"the response to {method!r} does not match the schema of this client's pinned "
            f"runtime: {exc!r}"
        ) from exc


def _raise_closed(error: TransportClosedError) -> NoReturn:
    raise error from error.__cause__


class ClientStatistics(NamedTuple):
    """Counters and gauges of one connection (see ``CodexClient.statistics``)."""

    pending_requests: int
    server_requests_in_flight: int
    bad_lines: int
    unknown_responses: int
    overload_retries: int
    turns_reaped: int
    router: RouterStatistics
    chunks_received: int
    """Reads from the transport so far: a watchdog compares two samples to see whether the
    peer said anything in between."""
    awaiting_input: bool
    """The reader waits for the peer (not for our own consumers to make room)."""


class CodexClient(ClientMethods):
    """Low-level typed JSON-RPC client over one transport.

    Use it through ``AsyncCodex.client``; :func:`open_client` exists for custom transports.
    ``request`` sends any method; the generated methods (``thread_start``, ``fs_read_file``,
    ...) take and return the typed models. Every method may be called from any task of the
    event loop that runs the client.
    """

    def __init__(
        self,
        transport: Transport,
        task_group: anyio.abc.TaskGroup,
        *,
        limits: Limits,
        strict: bool = False,
        server_request_handler: ServerRequestHandler | None = None,
        telemetry: RequestHooks | None = None,
    ) -> None:
        self._transport = transport
        self._telemetry = telemetry
        self._task_group = task_group
        self._limits = limits
        self._strict = strict
        self._server_tasks = ServerTasks(
            task_group,
            self._reply,
            limit=limits.server_requests,
            handler=server_request_handler,
            telemetry=telemetry,
        )
        self._router = Router(limits, on_turn_completed=self._server_tasks.cancel_turn)
        self._pending: dict[int, Reply] = {}
        self._response_hooks: dict[int, ResponseHook] = {}
        self._next_id = 1
        self._in_flight = anyio.CapacityLimiter(limits.requests_in_flight)
        self._outbox: deque[Outgoing] = deque()
        """Messages for the writer, in order (unbounded: each has a waiting sender)."""
        self._outbox_wakeup: anyio.Event | None = None
        """Set while the writer waits for a message."""
        self._send_now: Callable[[bytes], int] | None = getattr(transport, "try_send", None)
        """The transport's write-without-waiting, if it has one (stdio): used while the
        writer is idle, so a request costs no hop to the writer task."""
        self._closed_error: TransportClosedError | None = None
        self._closed_event = anyio.Event()
        """Set when the connection has ended (``wait_closed``)."""
        self._closing = False
        self._bad_lines = 0
        self._unknown_responses = 0
        self._overload_retries = 0
        self._turns_reaped = 0
        self._chunks_received = 0
        self._awaiting_input = False
        self.rate_limits = RateLimits()
        """The latest ``account/rateLimits/updated`` per limit id, stored by the reader."""
        self.dropped_turns: list[tuple[str, str]] = []
        """Turns whose handle was garbage-collected unfinished (appended by its finalizer);
        the reader hands each to a reaper."""

    # -- public -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed_error is not None

    @property
    def limits(self) -> Limits:
        return self._limits

    async def wait_closed(self) -> TransportClosedError:
        """Wait until the connection ends; return why (with the exit status and stderr tail).

        What a supervisor waits on: it costs nothing while the connection lives (a global
        subscription drained for the same purpose would take the router off its fast path).
        """
        await self._closed_event.wait()
        return self._closed()

    def set_server_request_handler(self, handler: ServerRequestHandler | None) -> None:
        """Replace the function that answers server requests (``None``: fail-closed defaults)."""
        self._server_tasks.handler = handler

    async def request(self, method: str, params: Any = None) -> Any:
        """Send request ``method`` and return the raw ``result``.

        Bound the wait the AnyIO way, with ``anyio.fail_after`` around the call; a cancelled
        request leaves nothing behind. A ``-32001`` "overloaded" answer is retried (see
        ``Limits.overload_retries``).

        :param params: a dict, an attrs params object, or None for no params.
        :raises JsonRpcError: (a subclass per code) if the server answers with an error.
        :raises TransportClosedError: if the connection ends first.
        :raises ProtocolError: if the response could not be decoded.
        """
        if params is not None and not isinstance(params, dict):
            params = converter.unstructure(params)
        if self._telemetry is not None:
            return await self._telemetry.client_request(
                method,
                lambda: self._with_overload_retries(lambda: self._request_once(method, params)),
            )
        return await self._with_overload_retries(lambda: self._request_once(method, params))

    async def _with_overload_retries(self, attempt: Callable[[], Awaitable[T]]) -> T:
        attempts = max(1, self._limits.overload_retries)
        delay = OVERLOAD_FIRST_DELAY
        for number in range(1, attempts + 1):
            try:
                return await attempt()
            except ServerBusyError:
                if number >= attempts:
                    raise
            self._overload_retries += 1
            await anyio.sleep(delay * random.uniform(0.75, 1.25))
            delay = min(OVERLOAD_MAX_DELAY, delay * 2)
        raise AssertionError("unreachable")  # pragma: no cover

    async def _request_once(
        self, method: str, params: Any, hook: ResponseHook | None = None
    ) -> Any:
        """One attempt. A ``hook`` outlives the caller: the reader runs it on the response,
        or, for a request never sent (the connection ended, or the caller left while waiting
        for a request slot), it is told at once that no response will come."""
        limiter = self._in_flight
        try:
            if self._closed_error is not None:
                _raise_closed(self._closed())
            try:
                limiter.acquire_nowait()  # no loop iteration when a slot is free (the usual case)
            except anyio.WouldBlock:
                await limiter.acquire()
        except BaseException:
            if hook is not None:
                hook.on_unsent()
            raise
        try:
            return await self._exchange(method, params, hook)
        finally:
            limiter.release()

    async def _exchange(self, method: str, params: Any, hook: ResponseHook | None) -> Any:
        request_id = self._next_id
        self._next_id += 1
        message: dict[str, Any] = {"id": request_id, "method": method}
        if params is not None:
            message["params"] = params
        try:
            outgoing = Outgoing(_json_dumps(message) + b"\n")
        except BaseException:  # unencodable params: nothing was sent or registered
            if hook is not None:
                hook.on_unsent()
            raise
        reply = self._pending[request_id] = Reply()
        if hook is not None:
            self._response_hooks[request_id] = hook
        try:
            self._push(outgoing)
            await self._await_reply(outgoing, reply)
            response = reply.value
            if response is None:
                _raise_closed(self._closed())
        except BaseException:
            if outgoing.state == QUEUED:
                outgoing.state = DROPPED  # the writer skips it: never half-written
            unsent = hook is not None and outgoing.state == DROPPED
            if unsent and self._response_hooks.pop(request_id, None) is not None:
                hook.on_unsent()  # type: ignore[union-attr]
            raise
        finally:
            self._pending.pop(request_id, None)
        if isinstance(response, BaseException):
            raise response
        error = response.get("error")
        if error is not None:
            raise error_from_wire(error)
        return response.get("result")

    async def _await_reply(self, outgoing: Outgoing, reply: Reply) -> None:
        """Wait for the response only, not for the write as well (one task switch less per
        request): a failed write ends the connection, which ends this wait too. (Also the
        seam where tests act right after a request is written, with ``_written``.)"""
        await reply.event.wait()

    async def _call_typed(self, method: str, params: object | None, response_type: Any) -> Any:
        return structure_result(method, await self.request(method, params), response_type)

    async def notify(self, method: str, params: Any = None) -> None:
        """Send a client notification (``initialized`` is the only one the schema has)."""
        message: dict[str, Any] = {"method": method}
        if params is not None:
            message["params"] = params
        await self._written(self._enqueue(message))

    def subscribe_turn(self, turn_id: str) -> NotificationStream:
        """Notifications of turn ``turn_id``.

        For a turn no stream of this client follows yet (one started by another client),
        this is its stream; for one that has a stream already (one this client started), an
        observer: an independent stream of every later event of the turn.
        """
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
        self,
        thread_id: str,
        params: Any,
        *,
        watch: Callable[[str, NotificationStream], None] | None = None,
    ) -> tuple[dict[str, Any], NotificationStream]:
        """Send ``turn/start`` and return (raw result, the turn's stream).

        Notifications the runtime sends for the new turn before its response are held and
        come first on the stream: nothing is lost between the write and the subscription.
        The stream is created by the reader itself when it reads the response. If this call
        is left before it returns (cancelled, interrupted) once the request was written, the
        turn is interrupted by a reaper task, and this call waits for that (shielded, within
        ``Limits.interrupt_timeout``) before its exception continues.

        If the thread has a turn running, the runtime joins the input into it: the stream is
        then an observer of that turn.

        ``watch`` (telemetry) is called in the reader with the turn id and an observer of the
        turn, subscribed before any event of the turn is routed.

        :raises ProtocolError: if the response names no turn (nothing is left installed).
        """

        async def attempt() -> tuple[dict[str, Any], NotificationStream]:
            start = TurnStart(self._router, self._spawn_reaper, thread_id, watch)
            self._router.begin_turn_start(thread_id)
            try:
                result = await self._request_once("turn/start", params, start)
            except BaseException:
                if not start.answered or start.stream is not None:
                    # Its response is still to come (the reader then hands the turn to a
                    # reaper), or it came and the turn has no owner: reap it.
                    start.orphan()
                await self._await_reaped(start)
                raise
            if start.stream is None:
                raise ProtocolError(f"malformed turn/start response: {result!r}") from start.error
            return result, start.stream

        if self._telemetry is not None:
            return await self._telemetry.client_request(
                "turn/start", lambda: self._with_overload_retries(attempt)
            )
        return await self._with_overload_retries(attempt)

    async def _await_reaped(self, start: TurnStart) -> None:
        """Give an orphaned start's reaper the chance to finish before the caller's exception
        continues (shielded, bounded); an interrupted wait leaves the reaper running."""
        if not start.orphaned or self._closed_error is not None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._limits.interrupt_timeout):
            await start.responded.wait()
            if start.reaped is not None:
                await start.reaped.wait()

    def statistics(self) -> ClientStatistics:
        return ClientStatistics(
            pending_requests=len(self._pending),
            server_requests_in_flight=len(self._server_tasks),
            bad_lines=self._bad_lines,
            unknown_responses=self._unknown_responses,
            overload_retries=self._overload_retries,
            turns_reaped=self._turns_reaped,
            router=self._router.statistics(),
            chunks_received=self._chunks_received,
            awaiting_input=self._awaiting_input,
        )

    # -- orphaned turns ------------------------------------------------------------------------

    def reap_turn(self, thread_id: str, turn_id: str, stream: NotificationStream) -> anyio.Event:
        """Interrupt a turn nobody owns any more, in a task of the client; the event is set when
        it has completed or the attempt ended (``Limits.interrupt_timeout``)."""
        return self._spawn_reaper(thread_id, turn_id, stream)

    def _spawn_reaper(
        self, thread_id: str, turn_id: str, stream: NotificationStream | None
    ) -> anyio.Event:
        done = anyio.Event()
        if self._closed_error is not None:
            if stream is not None:
                stream.close()
            done.set()
            return done
        self._task_group.start_soon(
            self._reap, thread_id, turn_id, stream, done, name=f"codex reaper {turn_id}"
        )
        return done

    async def _reap(
        self,
        thread_id: str,
        turn_id: str,
        stream: NotificationStream | None,
        done: anyio.Event,
    ) -> None:
        try:
            if stream is None:
                stream = self._router.subscribe_turn(turn_id)
            try:
                deadline = anyio.current_time() + self._limits.interrupt_timeout
                await interrupt_and_wait(
                    self, thread_id, turn_id, stream, _ignore, deadline=deadline
                )
            finally:
                stream.close()
            self._turns_reaped += 1
        except TransportClosedError:
            pass
        finally:
            done.set()

    def _reap_dropped(self) -> None:
        dropped, self.dropped_turns = self.dropped_turns, []
        for thread_id, turn_id in dropped:
            self._spawn_reaper(thread_id, turn_id, None)

    # -- writing ----------------------------------------------------------------------------

    def _closed(self) -> TransportClosedError:
        assert self._closed_error is not None
        return self._closed_error.clone()

    def _enqueue(self, message: dict[str, Any]) -> Outgoing:
        outgoing = Outgoing(_json_dumps(message) + b"\n")
        self._push(outgoing)
        return outgoing

    def _push(self, outgoing: Outgoing) -> None:
        """Queue ``outgoing`` for the writer (marked dropped if the connection has ended)."""
        if self._closed_error is not None:
            outgoing.state = DROPPED
            _raise_closed(self._closed())
        send_now = self._send_now
        if send_now is not None and self._outbox_wakeup is not None:
            # The writer waits with nothing queued and nothing half-written: write here.
            sent = send_now(outgoing.data)
            if sent == len(outgoing.data):
                outgoing.finished()
                return
            if sent:  # begun: the writer finishes it, whatever its sender does now
                outgoing.data = outgoing.data[sent:]
                outgoing.state = WRITING
        self._outbox.append(outgoing)
        self._wake_writer()

    def _wake_writer(self) -> None:
        wakeup = self._outbox_wakeup
        if wakeup is not None:
            self._outbox_wakeup = None
            wakeup.set()

    async def _written(self, outgoing: Outgoing) -> None:
        """Wait until the writer has written ``outgoing``. Leaving early drops it if the
        writer has not started it (a message is never half-written)."""
        try:
            if outgoing.state == WRITTEN or outgoing.failed:
                await anyio.lowlevel.checkpoint()
            else:
                if outgoing.done is None:
                    outgoing.done = anyio.Event()
                await outgoing.done.wait()
        except BaseException:
            if outgoing.state == QUEUED:
                outgoing.state = DROPPED
            raise
        if outgoing.failed:
            _raise_closed(self._closed())

    async def write_loop(
        self, *, task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED
    ) -> None:
        """The writer: run it in the client's task group; it writes queued messages in order."""
        task_status.started()
        timeout = self._limits.write_timeout
        send = self._transport.send
        outbox = self._outbox
        while True:
            if not outbox:
                if self._closed_error is not None:
                    return
                # An event only when idle: a memory object stream's receive() costs a loop
                # iteration per message, for its checkpoint.
                wakeup = self._outbox_wakeup = anyio.Event()
                await wakeup.wait()
                continue
            outgoing = outbox.popleft()
            if outgoing.state == DROPPED:
                continue
            outgoing.state = WRITING
            with anyio.move_on_after(timeout) as scope:
                try:
                    await send(outgoing.data)
                except (anyio.BrokenResourceError, anyio.ClosedResourceError, OSError):
                    # The reader sees the end too; it knows the exit status.
                    await self._wait_closed()
            if self._closed_error is None and scope.cancelled_caught:
                self._shut(
                    TransportClosedError(
                        f"the app-server read none of a {len(outgoing.data)}-byte message "
                        f"in {timeout:g} s (Limits.write_timeout)",
                        stderr_tail=self._transport.stderr_tail(),
                    )
                )
                with anyio.CancelScope(shield=True):
                    await self._transport.aclose()
            if self._closed_error is not None:
                outgoing.finished(failed=True)
                return
            outgoing.finished()

    async def _wait_closed(self) -> None:
        if self._closed_error is None:
            returncode, tail = await self._transport.exit_info()
            self._shut(
                TransportClosedError(
                    self._transport.end_reason() or "the app-server stopped reading its input",
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
        cause: ProtocolError | None = None
        router = self._router
        backlog = self._limits.backlog
        countdown = READER_CHECKPOINT_EVERY
        try:
            while True:
                self._awaiting_input = True
                try:
                    chunk = await receive()
                except anyio.EndOfStream:
                    reason = self._transport.end_reason() or reason
                    if splitter.pending_bytes:
                        self._bad_line(b"", "the output ended inside an unterminated line")
                    break
                self._awaiting_input = False
                self._chunks_received += 1
                for line in splitter.feed(chunk):
                    handle_line(line)
                    if router.blocked and router.parked() >= backlog:
                        # Real backpressure: read nothing more until consumers make room.
                        await router.relieve()
                    countdown -= 1
                    if not countdown:
                        # One chunk can hold thousands of events: let consumers run.
                        countdown = READER_CHECKPOINT_EVERY
                        if router.blocked:
                            router.service(anyio.current_time())
                        await anyio.lowlevel.checkpoint()
                if router.blocked:
                    router.service(anyio.current_time())
                if self.dropped_turns:
                    self._reap_dropped()
        except ProtocolError as exc:
            reason, cause = f"protocol error: {exc}", exc
            # Fail everyone now, with the cause; the process's exit status is not worth a wait.
            error = TransportClosedError(reason, stderr_tail=self._transport.stderr_tail())
            error.__cause__ = exc
            self._shut(error)
        finally:
            if self._closed_error is None:
                if self._closing:
                    reason = "the client was closed"
                returncode, tail = await self._transport.exit_info()
                self._shut(TransportClosedError(reason, returncode=returncode, stderr_tail=tail))
        if cause is not None:
            with anyio.CancelScope(shield=True):
                await self._transport.aclose()

    def _handle_line(self, line: bytes) -> None:
        try:
            message = _json_loads(line)
        except ValueError as exc:
            self._undecodable(line, f"it is not valid JSON: {exc}")
            return
        if type(message) is not dict:
            self._bad_line(line, "it is not a JSON object")
            return
        method = message.get("method")
        if method is None:
            if _may_hold_big_int(line):
                message = self._exactly(line, message)
                if message is None:
                    return
            self._response(message)
            return
        if type(method) is not str:
            self._bad_line(line, "its method is not a string")
            return
        params = message.get("params")
        if type(params) is not dict:
            params = {}
        if "id" in message:
            if _may_hold_big_int(line):
                exact = self._exactly(line, message)
                if exact is None:
                    return
                params = exact.get("params")
                if type(params) is not dict:
                    params = {}
                message = exact
            request_id = message["id"]
            if type(request_id) is not int and type(request_id) is not str:
                kind = type(request_id).__name__
                self._bad_line(b"", f"a request id must be int or string, not {kind}")
                return
            self._server_tasks.start(request_id, method, params)
        else:
            if method == "serverRequest/resolved":
                self._server_tasks.resolved(params)
            elif method == "account/rateLimits/updated":
                self.rate_limits.update(params)
            self._router.route(method, params)

    def _response(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        if type(request_id) is not int:
            self._unknown_responses += 1
            logger.debug("response for unknown request id %r", request_id)
            return
        hook = self._response_hooks.pop(request_id, None) if self._response_hooks else None
        waiter = self._pending.pop(request_id, None)
        if hook is not None:
            hook.on_response(message)
        if waiter is None:
            if hook is None:
                self._unknown_responses += 1
                logger.debug("response for unknown request id %r", request_id)
            return
        waiter.put(message)

    def _exactly(self, line: bytes, message: dict[str, Any]) -> dict[str, Any] | None:
        """``line`` decoded by the stdlib decoder (integers beyond 64 bits stay exact), or
        ``None`` if it cannot be (nested too deeply for it): then it is a bad line, and the
        request it answers or makes is failed."""
        try:
            exact: dict[str, Any] = _json_loads_exact(line)
        except ValueError as exc:
            self._undecodable(line, f"{exc} exactly", message)
            return None
        return exact

    def _undecodable(self, line: bytes, why: str, message: Any = None) -> None:
        """A line that cannot be decoded: count it, and if it still names a request, answer
        that (its waiter fails with ProtocolError; a server request gets a parse error)."""
        self._bad_line(line, why)
        if message is None:
            message = _salvage(line)
        if type(message) is not dict:
            return
        request_id = message.get("id")
        method = message.get("method")
        if method is None and type(request_id) is int:
            error = ProtocolError(
                f"the response to request {request_id} could not be decoded ({why}): "
                f"{preview(line)!r}"
            )
            hook = self._response_hooks.pop(request_id, None)
            if hook is not None:
                hook.on_response({"id": request_id, "error": {"code": -32700, "message": ""}})
            waiter = self._pending.pop(request_id, None)
            if waiter is not None:
                waiter.put(error)
        elif type(method) is str and isinstance(request_id, (int, str)):
            self._server_tasks.reply_error_soon(
                request_id, -32700, "the client could not decode this request"
            )

    def _bad_line(self, line: bytes, why: str) -> None:
        """Count a line the reader cannot use and say so: its head, redacted and truncated
        (a stray line can be anything, a credential included); fatal with ``strict``."""
        self._bad_lines += 1
        shown = preview(line)
        if self._strict:
            raise ProtocolError(f"bad line from the app-server ({why}): {shown!r}")
        logger.warning("ignored a line from the app-server (%s): %r", why, shown)

    # -- server requests ----------------------------------------------------------------------

    async def _reply(self, message: dict[str, Any]) -> None:
        """Write a reply to a server request (a connection that has ended takes none)."""
        try:
            await self._written(self._enqueue(message))
        except TransportClosedError:
            pass

    def cancel_server_request(self, request_id: int | str) -> None:
        """Stop the handler of a request the runtime no longer waits for (no reply is sent)."""
        self._server_tasks.cancel(request_id)

    # -- the end --------------------------------------------------------------------------------

    def _shut(self, error: TransportClosedError) -> None:
        if self._closed_error is not None:
            return
        self._closed_error = error
        self._closed_event.set()
        for reply in list(self._pending.values()):
            reply.put(None)  # empty: the connection ended
        self._pending.clear()
        hooks = list(self._response_hooks.values())
        self._response_hooks.clear()
        for hook in hooks:
            hook.on_unsent()  # no response will come: release whoever waits for one
        self._router.close(error)
        self._server_tasks.cancel_all()
        while self._outbox:
            self._outbox.popleft().finished(failed=True)
        self._wake_writer()  # it returns: the connection has ended

    async def abandon(self, error: TransportClosedError) -> None:
        """End the connection now with ``error``: a watchdog's verdict on a peer that stopped
        answering while the transport stayed open (a stopped process keeps its pipes). Every
        waiter gets ``error`` at once; the transport is then closed without its courtesy
        waits (see :func:`~codex_anyio._wire._transport.abort_transport`)."""
        self._shut(error)
        abort_transport(self._transport)
        with anyio.CancelScope(shield=True):
            await self._transport.aclose()

    async def aclose(self) -> None:
        """Interrupt turns whose handles were dropped unfinished, then close the transport; the
        reader then ends every waiter with TransportClosedError."""
        if self.dropped_turns and self._closed_error is None:
            with anyio.CancelScope(shield=True):
                dropped, self.dropped_turns = self.dropped_turns, []
                events = [self._spawn_reaper(th, tu, None) for th, tu in dropped]
                for event in events:
                    await event.wait()
        self._closing = True
        with anyio.CancelScope(shield=True):
            await self._transport.aclose()


def _salvage(line: bytes) -> Any:
    """What a line orjson rejects still says: the stdlib decoder's reading (invalid UTF-8
    replaced), else, for a line nested too deeply for any decoder, the id and method of its
    head as the runtime writes it (``None`` if neither)."""
    try:
        return _json_loads_exact(line.decode("utf-8", "replace"))
    except ValueError:
        pass
    head = _HEAD.match(line)
    if head is None:
        return None
    request_id, kind, method = head.groups()
    salvaged: dict[str, Any] = {"id": _json_loads_exact(request_id)}
    if kind == b"method":
        if method is None:
            return None
        salvaged["method"] = _json_loads_exact(method)
    return salvaged


def _ignore(note: Notification) -> None:
    pass


_F = TypeVar("_F", bound=Callable[..., Any])


def protect_from_ctrl_c(function: _F) -> _F:
    """On Trio, run ``function`` protected from ``KeyboardInterrupt``: a Ctrl-C that arrives
    while it runs is delivered to the main task instead (the user's code, which interrupts its
    turn), never into the reader or a drain task. No-op on asyncio, where Ctrl-C cancels the
    main task."""
    trio = sys.modules.get("trio")  # not imported: not running on Trio
    if trio is None:
        return function
    try:
        trio.lowlevel.current_root_task()
    except RuntimeError:  # Trio is imported, but this is another event loop
        return function
    protected: _F = trio.lowlevel.enable_ki_protection(function)
    return protected


@asynccontextmanager
async def open_client(
    transport: Transport,
    *,
    limits: Limits | None = None,
    strict: bool = False,
    server_request_handler: ServerRequestHandler | None = None,
    on_started: Callable[[CodexClient], None] | None = None,
    telemetry: RequestHooks | None = None,
) -> AsyncIterator[CodexClient]:
    """Run a :class:`CodexClient` over ``transport`` for the duration of the block.

    The reader, the writer and every handler task live in a task group owned by this block;
    on exit the transport is closed (shielded, bounded) and no task outlives it.
    """
    async with anyio.create_task_group() as tg:
        client = CodexClient(
            transport,
            tg,
            limits=limits or Limits(),
            strict=strict,
            server_request_handler=server_request_handler,
            telemetry=telemetry,
        )
        # The reader and the writer are shielded from the caller's cancellation: a scope
        # that encloses the client as well as a turn cancels both at once, and the turn's
        # shielded interrupt still needs a writer to send it and a reader to see its
        # answer. They end when the client closes (end of input; the writer's queue shut),
        # and are cancelled outright after that.
        loops: list[anyio.CancelScope] = []
        await tg.start(
            protect_from_ctrl_c(_serve_loop), client.read_loop, loops, name="codex reader"
        )
        await tg.start(
            protect_from_ctrl_c(_serve_loop), client.write_loop, loops, name="codex writer"
        )
        if on_started is not None:
            on_started(client)
        try:
            yield client
        finally:
            await client.aclose()
            for scope in loops:
                scope.cancel()
            tg.cancel_scope.cancel()


async def _serve_loop(
    loop: Callable[..., Awaitable[None]],
    scopes: list[anyio.CancelScope],
    *,
    task_status: anyio.abc.TaskStatus[None] = anyio.TASK_STATUS_IGNORED,
) -> None:
    """Run the reader or the writer in a shielded scope that only the client cancels."""
    with anyio.CancelScope(shield=True) as scope:
        scopes.append(scope)
        await loop(task_status=task_status)

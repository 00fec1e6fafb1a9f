"""OpenTelemetry traces and metrics: one span per turn, its tool items and server requests.

Why it is built this way:

* **Optional and free when off.** ``opentelemetry-api`` is an optional extra (``[otel]``); it is
  imported here only, and only when a client starts (:func:`resolve`) and some code imported
  it already (nobody can have set a provider otherwise). Telemetry is on when a real (SDK)
  tracer or meter provider is set globally, or when providers are passed in
  :class:`Telemetry`; otherwise ``resolve`` returns ``None`` and the core pays one ``is None``
  check per client request, server request, turn start and turn end, nothing per notification.
* **Parenting across tasks.** The turn span is started in the caller's task, so it is a child
  of whatever span is current there; the reader, watcher and handler tasks have contexts of
  their own, so item and server-request spans name their parent explicitly (a server request
  made for an item, a tool call or an approval, is a child of that item's span).
* **Items from events.** The turn's ``item/started``/``item/completed`` events reach a
  watcher task through an ordinary turn observer (``Router.subscribe_turn``), subscribed in
  the reader when the ``turn/start`` response arrives, before any event of the turn is routed.
  The watcher ends the turn span on ``turn/completed`` (status, usage, error), also for a turn
  whose caller left and that a reaper interrupted; its end time is when the turn's consumer
  saw the end (``turn_seen_completed``), so it ends inside the caller's span.
* **No user code in the reader.** Span processors and exporters run synchronously in
  ``span.end()``; spans are ended in the caller's, the watcher's or a handler's task, never in
  the reader.
* **Telemetry never fails or stalls a turn by surprise.** Span processors, exporters and
  metric instruments are user code: every call into OpenTelemetry is fenced
  (:meth:`Instrumentation.guarded`), so one that raises is logged once on
  ``codex_anyio.telemetry`` (later ones at DEBUG) and the turn, the request or the handler
  carries on, without that span or that measurement. A call cannot be fenced against
  *blocking*, though: a ``SimpleSpanProcessor`` exports inside ``span.end()``, on the event
  loop, so a slow exporter stalls every task of the client. Such a call is detected (it took
  longer than :data:`SLOW_TELEMETRY_CALL`) and warned about once; use ``BatchSpanProcessor``,
  which exports from a thread of its own.

Attribute names follow the OpenTelemetry GenAI semantic conventions where one applies
(``gen_ai.operation.name`` ``invoke_agent`` for a turn and ``execute_tool`` for tool items,
``gen_ai.conversation.id`` = thread id, ``gen_ai.usage.*``, ``gen_ai.tool.*``) and the
JSON-RPC ones for requests (``rpc.method``, ``rpc.jsonrpc.error_code``); codex-specific ones
are under ``codex.*``.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, TypeVar

import anyio
import attrs

from .._exceptions import JsonRpcError
from .._rpc._server_requests import ServerRequest, encode_result
from .._rpc._usage import TokenUsage, TurnTally

if TYPE_CHECKING:
    from opentelemetry.context import Context
    from opentelemetry.metrics import MeterProvider
    from opentelemetry.trace import Span, Tracer, TracerProvider

    from .._rpc._connection import CodexClient
    from .._rpc._notifications import NotificationStream

__all__ = [
    "WATCHED_NOTIFICATIONS",
    "GoalTrace",
    "Instrumentation",
    "Telemetry",
    "TurnTrace",
    "resolve",
    "token_counts",
]

T = TypeVar("T")

logger = logging.getLogger("codex_anyio.telemetry")

INSTRUMENTATION_NAME: Final = "codex_anyio"

SLOW_TELEMETRY_CALL: Final = 0.1
"""Seconds one call into OpenTelemetry (starting or ending a span, updating a metric) may take
before the client warns, once, that telemetry blocks its event loop: in-process processors and
exporters take microseconds; a ``SimpleSpanProcessor`` exporting over the network takes a
round trip or a timeout, during which no turn of the client moves."""

TRACED_ITEMS: Final = frozenset(
    {"commandExecution", "fileChange", "mcpToolCall", "dynamicToolCall", "webSearch"}
)
"""Item types that get a span of their own: the ones with a start, an end and an outcome."""

WATCHED_NOTIFICATIONS: Final = frozenset(
    {"item/started", "item/completed", "thread/tokenUsage/updated", "error", "turn/completed"}
)
"""What a turn's watcher reads (:meth:`TurnTrace._take`): a client with telemetry on never opts
out of these (``CodexConfig.opt_out_notification_methods``)."""

APPROVAL_METHODS: Final = frozenset(
    {
        "item/commandExecution/requestApproval",
        "item/fileChange/requestApproval",
        "item/permissions/requestApproval",
        "execCommandApproval",
        "applyPatchApproval",
        "mcpServer/elicitation/request",
        "item/tool/call",
    }
)
"""Server requests whose answer carries a decision worth recording."""


@attrs.frozen(kw_only=True)
class Telemetry:
    """Which OpenTelemetry providers a client reports to (``AsyncCodex(telemetry=...)``).

    By default a client reports to the global providers when real ones are set (checked once
    when it starts); ``telemetry=False`` turns that off. Passing providers here uses them
    instead of the global ones (handy in tests: global providers can be set once per process).

    :param tracer_provider: where spans go; ``None``: the global one if it is real, else none.
    :param meter_provider: where metrics go; ``None``: the global one if it is real, else none.
    """

    tracer_provider: TracerProvider | None = None
    meter_provider: MeterProvider | None = None


_missing: bool | None = None


def _otel_available() -> bool:
    global _missing
    if _missing is None:
        try:
            import opentelemetry.metrics
            import opentelemetry.trace  # noqa: F401
        except ImportError:
            _missing = True
        else:
            _missing = False
    return not _missing


def _real_tracer_provider() -> TracerProvider | None:
    from opentelemetry import trace

    provider = trace.get_tracer_provider()
    if isinstance(provider, (trace.ProxyTracerProvider, trace.NoOpTracerProvider)):
        return None
    return provider


def _real_meter_provider() -> MeterProvider | None:
    from opentelemetry import metrics

    provider = metrics.get_meter_provider()
    # The proxy that stands in until a provider is set is private: recognise it by name.
    if isinstance(provider, metrics.NoOpMeterProvider) or "Proxy" in type(provider).__name__:
        return None
    return provider


def resolve(setting: Telemetry | bool | None) -> Instrumentation | None:
    """The instrumentation for a client that starts now, or ``None`` (telemetry off).

    ``None`` (the default): on when opentelemetry is importable and a real global provider is
    set. ``True``: on with the global providers, even proxies (spans then go wherever a
    provider set later sends them). ``False``: off.

    :raises RuntimeError: for ``True`` or a :class:`Telemetry` without opentelemetry-api.
    """
    if setting is False:
        return None
    if setting is None and not (
        "opentelemetry.trace" in sys.modules or "opentelemetry.metrics" in sys.modules
    ):
        return None  # nobody imported opentelemetry, so nobody set a provider: don't import it
    if not _otel_available():
        if setting is None:
            return None
        raise RuntimeError(
            "telemetry needs the opentelemetry-api package: pip install 'codex-anyio[otel]'"
        )
    from opentelemetry import metrics, trace

    tracer_provider: TracerProvider | None
    meter_provider: MeterProvider | None
    if setting is True:
        tracer_provider = trace.get_tracer_provider()
        meter_provider = metrics.get_meter_provider()
    else:
        explicit = setting or Telemetry()
        tracer_provider = explicit.tracer_provider or _real_tracer_provider()
        meter_provider = explicit.meter_provider or _real_meter_provider()
    if tracer_provider is None and meter_provider is None:
        return None
    return Instrumentation(tracer_provider, meter_provider)


# -- token usage ------------------------------------------------------------------------------


def token_counts(usage: TokenUsage) -> dict[str, int]:
    """A turn's tokens by type (``input``, ``cached_input``, ``output``, ``reasoning``), from
    its usage as the usage accounting defines it (``_usage.TurnTally``: the thread's highest
    total during the turn minus its total before it), so a span and ``TurnResult.usage``
    agree, including when the runtime repeats earlier figures."""
    return {
        "input": usage.input_tokens,
        "cached_input": usage.cached_input_tokens,
        "output": usage.output_tokens,
        "reasoning": usage.reasoning_output_tokens,
    }


# -- the instrumentation of one client --------------------------------------------------------


class Instrumentation:
    """Tracer, instruments and the turns being traced, for one client."""

    def __init__(
        self, tracer_provider: TracerProvider | None, meter_provider: MeterProvider | None
    ) -> None:
        from opentelemetry import metrics, trace

        from ..__about__ import __version__

        self.failures = 0
        """Calls into OpenTelemetry that raised (each fenced: see :meth:`guarded`)."""
        self._warned_slow = False
        self.tracer: Tracer = trace.NoOpTracer()
        with self.guarded("getting a tracer"):
            self.tracer = (tracer_provider or trace.NoOpTracerProvider()).get_tracer(
                INSTRUMENTATION_NAME, __version__
            )
        created = False
        with self.guarded("creating metric instruments"):
            meter = (meter_provider or metrics.NoOpMeterProvider()).get_meter(
                INSTRUMENTATION_NAME, __version__
            )
            self._create_instruments(meter)
            created = True
        if not created:
            self._create_instruments(metrics.NoOpMeter(INSTRUMENTATION_NAME))
        self.turns: dict[str, TurnTrace] = {}
        """Turns being watched, by id: server requests of a turn are children of its span."""

    def _create_instruments(self, meter: Any) -> None:
        self.turn_duration = meter.create_histogram(
            "codex.turn.duration", unit="s", description="Duration of turns, start to completion"
        )
        self.tokens = meter.create_counter(
            "codex.token.usage",
            unit="{token}",
            description="Tokens used by turns, by gen_ai.token.type "
            "(input, cached_input, output, reasoning)",
        )
        self.active_turns = meter.create_up_down_counter(
            "codex.turns.active", unit="{turn}", description="Turns being watched now"
        )
        self.server_requests = meter.create_counter(
            "codex.server_requests",
            unit="{request}",
            description="Server requests handled, by method and decision",
        )
        self.server_request_duration = meter.create_histogram(
            "codex.server_request.duration", unit="s", description="Server request handler time"
        )

    # -- the fence around OpenTelemetry ---------------------------------------------------------

    def guarded(self, what: str) -> _Guard:
        """``with inst.guarded("ending a span"): span.end()``: an exception in the block is
        logged (the first with its traceback, at WARNING; later ones at DEBUG) and swallowed,
        and a block slower than :data:`SLOW_TELEMETRY_CALL` is warned about, once. Only for
        synchronous calls into OpenTelemetry, never around the caller's own work."""
        return _Guard(self, what)

    def _failed(self, what: str, exc: Exception) -> None:
        self.failures += 1
        if self.failures == 1:
            logger.warning(
                "telemetry raised while %s; the client carries on without it "
                "(later telemetry errors are logged at DEBUG)",
                what,
                exc_info=exc,
            )
        else:
            logger.debug("telemetry raised while %s: %r", what, exc)

    def _slow(self, what: str, elapsed: float) -> None:
        if self._warned_slow:
            return
        self._warned_slow = True
        logger.warning(
            "telemetry blocked the event loop for %.3f s while %s: a span processor or "
            "exporter does blocking work in the client's task, and every turn waits for it. "
            "Export with BatchSpanProcessor (not SimpleSpanProcessor) and a periodic metric "
            "reader; this is logged once",
            elapsed,
            what,
        )

    def start_span(self, name: str, **options: Any) -> Span:
        """``tracer.start_span``, fenced: a span that cannot be started is a no-op span."""
        from opentelemetry.trace import INVALID_SPAN

        with self.guarded(f"starting span {name!r}"):
            return self.tracer.start_span(name, **options)
        return INVALID_SPAN

    def end_span(self, span: Span, end_time: int | None = None) -> None:
        with self.guarded("ending a span (span processors run here)"):
            span.end(end_time=end_time)

    def add(self, instrument: Any, amount: float, labels: Mapping[str, Any]) -> None:
        with self.guarded("updating a metric"):
            instrument.add(amount, labels)

    def record(self, instrument: Any, value: float, labels: Mapping[str, Any]) -> None:
        with self.guarded("recording a metric"):
            instrument.record(value, labels)

    # -- turns ----------------------------------------------------------------------------------

    def start_turn(
        self, client: CodexClient, thread_id: str, params: Mapping[str, Any], info: Any
    ) -> TurnTrace:
        """Start a turn's span in the caller's task (its current span becomes the parent)."""
        model = params.get("model") or getattr(info, "model", None)
        provider = getattr(info, "model_provider", None)
        return TurnTrace(self, client, thread_id, model, provider)

    def start_goal(
        self, client: CodexClient, thread_id: str, info: Any, token_budget: int | None
    ) -> GoalTrace:
        """Start a goal's span in the caller's task (its current span becomes the parent)."""
        return GoalTrace(self, client, thread_id, info, token_budget)

    def turn_seen_completed(self, turn_id: str) -> None:
        """The turn's consumer saw ``turn/completed``: that is when its span ends (the watcher
        may handle it a moment later, possibly after the caller's own span has ended)."""
        trace = self.turns.get(turn_id)
        if trace is not None and trace.completed_at is None:
            trace.completed_at = time.time_ns()
            trace.completed_monotonic = time.monotonic()

    # -- client requests ------------------------------------------------------------------------

    async def client_request(self, method: str, call: Callable[[], Awaitable[T]]) -> T:
        """Run ``call`` (one client request, with its retries) inside a CLIENT span."""
        from opentelemetry.trace import SpanKind, use_span

        span = self.start_span(
            method,
            kind=SpanKind.CLIENT,
            attributes={"rpc.system": "jsonrpc", "rpc.method": method},
        )
        try:
            with use_span(
                span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                return await call()
        except anyio.get_cancelled_exc_class():
            with self.guarded("marking a span cancelled"):
                span.set_attribute("codex.cancelled", True)
            raise
        except BaseException as exc:
            with self.guarded("marking a span failed"):
                if isinstance(exc, JsonRpcError):
                    span.set_attribute("rpc.jsonrpc.error_message", exc.message)
                _failed(span, exc)
            raise
        finally:
            self.end_span(span)

    # -- server requests ------------------------------------------------------------------------

    async def server_request(
        self, request: ServerRequest, handler: Callable[[ServerRequest], Awaitable[Any]]
    ) -> Any:
        """Run ``handler`` inside a SERVER span, a child of its item's span (a tool call, the
        command or file change to approve) or its turn's, when the turn is traced."""
        from opentelemetry import trace
        from opentelemetry.context import Context
        from opentelemetry.trace import SpanKind

        method = request.method
        attributes: dict[str, Any] = {
            "rpc.system": "jsonrpc",
            "rpc.method": method,
            "rpc.jsonrpc.request_id": str(request.id),
        }
        if request.thread_id is not None:
            attributes["gen_ai.conversation.id"] = request.thread_id
        if request.turn_id is not None:
            attributes["codex.turn.id"] = request.turn_id
        raw = request.raw
        item_id = raw.get("itemId")
        if isinstance(item_id, str):
            attributes["codex.item.id"] = item_id
        if method == "item/tool/call":
            attributes["gen_ai.operation.name"] = "execute_tool"
            tool, call_id = raw.get("tool"), raw.get("callId")
            if isinstance(tool, str):
                attributes["gen_ai.tool.name"] = tool
            if isinstance(call_id, str):
                attributes["gen_ai.tool.call.id"] = call_id
        turn = self.turns.get(request.turn_id) if request.turn_id is not None else None
        if turn is None:
            # Not a traced turn's: a root span (this task's context is the client's, from
            # whenever it was opened, not the one of whoever waits on the turn).
            context = Context()
        else:
            item = _ITEM_OF_REQUEST.get(method)
            key = raw.get(item[0]) if item is not None else None
            if item is not None and isinstance(key, str):
                kind = item[1]
                tool = raw.get("tool") if kind == "dynamicToolCall" else None
                parent = turn.item_span(key, kind, tool if isinstance(tool, str) else item[2])
            else:
                parent = turn.span
            context = trace.set_span_in_context(parent)
        started = time.monotonic()
        decision = "error"
        span = self.start_span(
            f"codex.server_request {method}",
            context=context,
            kind=SpanKind.SERVER,
            attributes=attributes,
        )
        try:
            with trace.use_span(
                span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                result = await handler(request)
            decision = _decision(method, result)
            return result
        except anyio.get_cancelled_exc_class():
            decision = "cancelled"  # its turn ended or the runtime withdrew it
            raise
        except BaseException as exc:
            with self.guarded("marking a span failed"):
                _failed(span, exc)
            raise
        finally:
            with self.guarded("annotating a span"):
                span.set_attribute("codex.server_request.decision", decision)
            self.end_span(span)
            labels = {
                "codex.server_request.method": method,
                "codex.server_request.decision": decision,
            }
            self.add(self.server_requests, 1, labels)
            self.record(self.server_request_duration, time.monotonic() - started, labels)


class _Guard:
    """One fenced call into OpenTelemetry (see :meth:`Instrumentation.guarded`)."""

    __slots__ = ("_inst", "_started", "_what")

    def __init__(self, inst: Instrumentation, what: str) -> None:
        self._inst = inst
        self._what = what
        self._started = time.monotonic()

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool:
        elapsed = time.monotonic() - self._started
        if elapsed >= SLOW_TELEMETRY_CALL:
            self._inst._slow(self._what, elapsed)
        if isinstance(exc, Exception):  # never a cancellation, a KeyboardInterrupt, ...
            self._inst._failed(self._what, exc)
            return True
        return False


def _failed(span: Span, exc: BaseException) -> None:
    """Mark a request's span failed: a JSON-RPC error by its code, anything else by its type
    (with the exception recorded)."""
    from opentelemetry.trace import Status, StatusCode

    if isinstance(exc, JsonRpcError):
        span.set_attribute("rpc.jsonrpc.error_code", exc.code)
        span.set_attribute("error.type", str(exc.code))
        span.set_status(Status(StatusCode.ERROR, exc.message))
    else:
        span.set_attribute("error.type", type(exc).__qualname__)
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, str(exc)))


_ITEM_OF_REQUEST: Final = {
    "item/tool/call": ("callId", "dynamicToolCall", "tool"),
    "item/commandExecution/requestApproval": ("itemId", "commandExecution", "shell"),
    "item/fileChange/requestApproval": ("itemId", "fileChange", "apply_patch"),
}
"""Server requests made for one item: (the params key of its id, its type, its tool name)."""


def _decision(method: str, result: Any) -> str:
    """What a server request's answer decided: ``accept``/``decline``/..., or ``answered``."""
    if method not in APPROVAL_METHODS:
        return "answered"
    try:
        payload = encode_result(result)
    except Exception:
        return "answered"
    if not isinstance(payload, dict):
        return "answered"
    if method == "item/tool/call":
        return "success" if payload.get("success") else "failure"
    if method == "item/permissions/requestApproval":
        return "granted" if payload.get("permissions") else "declined"
    value = payload.get("decision", payload.get("action"))
    if isinstance(value, str):
        return value
    if isinstance(value, dict) and value:
        return str(next(iter(value)))  # a decision with details: {"acceptWithX": {...}}
    return "answered"


class TurnTrace:
    """One turn's span, from the ``turn/start`` request to ``turn/completed``."""

    def __init__(
        self,
        instrumentation: Instrumentation,
        client: CodexClient,
        thread_id: str,
        model: str | None,
        provider: str | None,
        parent: Context | None = None,
    ) -> None:
        from opentelemetry import trace

        self._inst = instrumentation
        self._client = client
        self.thread_id = thread_id
        self.turn_id: str | None = None
        self._labels: dict[str, Any] = {"gen_ai.operation.name": "invoke_agent"}
        if model:
            self._labels["gen_ai.request.model"] = model
        if provider:
            self._labels["gen_ai.provider.name"] = provider
        self._started = time.monotonic()
        self.span: Span = instrumentation.start_span(
            "codex.turn",
            context=parent,
            kind=trace.SpanKind.INTERNAL,
            attributes={**self._labels, "gen_ai.conversation.id": thread_id},
        )
        self._context: Context = trace.set_span_in_context(self.span)
        self._items: dict[str, Span] = {}
        self._done_items: set[str] = set()
        self._usage = TurnTally(None, thread_id, "")
        """The turn's usage from the updates this watcher sees (no ledger: counted once,
        by the turn's handle)."""
        self._usage_reported = False
        self._last_error: Any = None
        self._watched = False
        self._ended = False
        self.completed_at: int | None = None
        """When the turn's consumer saw it complete (ns since the epoch), if before us."""
        self.completed_monotonic: float | None = None

    async def start(
        self, client: CodexClient, params: Any
    ) -> tuple[dict[str, Any], NotificationStream]:
        """``client.start_turn`` with this span current (the request span is its child); a
        start that fails before the runtime named the turn ends the span with the error."""
        from opentelemetry import trace

        try:
            with trace.use_span(
                self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
            ):
                return await client.start_turn(self.thread_id, params, watch=self.attach)
        except BaseException as exc:
            if not self._watched:
                self._end(error=exc)
            raise

    # -- in the reader, when the turn/start response names the turn -----------------------------

    def attach(self, turn_id: str, stream: NotificationStream) -> None:
        """Watch ``stream`` (an observer of the new turn) in a task of the client."""
        if self._ended:  # the caller left before the response; its span says so already
            stream.close()
            return
        self._watched = True
        self.turn_id = turn_id
        joined = turn_id in self._inst.turns
        if not joined:
            self._inst.turns[turn_id] = self
        # Spans end in that task, never here: span processors are user code.
        self._client._task_group.start_soon(
            self._watch, stream, joined, name=f"codex trace {turn_id}"
        )

    # -- the watcher task -----------------------------------------------------------------------

    async def _watch(self, stream: NotificationStream, joined: bool) -> None:
        inst = self._inst
        with inst.guarded("annotating a span"):
            self.span.set_attribute("codex.turn.id", str(self.turn_id))
        if joined:
            # The runtime joined this input into a running turn, which is traced already.
            stream.close()
            with inst.guarded("annotating a span"):
                self.span.set_attribute("codex.turn.joined", True)
            self._end()
            return
        inst.add(inst.active_turns, 1, self._labels)
        error: BaseException | None = None
        try:
            async with stream:
                async for note in stream:
                    if self.feed(note):
                        return
        except anyio.get_cancelled_exc_class():
            raise
        except Exception as exc:  # the connection ended, or this watcher fell behind
            error = exc
        finally:
            self._unwatch(error)

    # -- a turn the runtime started (a goal's), fed by its consumer -----------------------------

    def follow(self, turn_id: str) -> None:
        """Trace turn ``turn_id``, whose events the caller will :meth:`feed` (no watcher task:
        the runtime started it, so no ``turn/start`` response attached one)."""
        inst = self._inst
        self._watched = True
        self.turn_id = turn_id
        inst.turns.setdefault(turn_id, self)  # its server requests become its children
        with inst.guarded("annotating a span"):
            self.span.set_attribute("codex.turn.id", turn_id)
        inst.add(inst.active_turns, 1, self._labels)

    def feed(self, note: Any) -> bool:
        """Trace one event of the turn (fenced); True once the turn has completed."""
        with self._inst.guarded(f"tracing {note.method}"):
            return self._take(note)
        return False

    def _unwatch(self, error: BaseException | None) -> None:
        """The turn is no longer watched: forget it, and end its span if it is still open
        (the turn's end was never seen: ``unknown``)."""
        inst = self._inst
        if self.turn_id is not None and inst.turns.get(self.turn_id) is self:
            del inst.turns[self.turn_id]
        inst.add(inst.active_turns, -1, self._labels)
        if not self._ended:
            self._end(error=error, status="unknown")

    def _take(self, note: Any) -> bool:
        """Trace one event of the turn; True once the turn has completed."""
        method = note.method
        if method == "item/started":
            self._item_started(note.raw)
        elif method == "item/completed":
            self._item_completed(note.raw)
        elif method == "thread/tokenUsage/updated":
            self._usage.update(note.raw.get("tokenUsage"))
            self._usage_reported = True
        elif method == "error":
            if not note.raw.get("willRetry"):
                self._last_error = note.raw.get("error")
        elif method == "turn/completed":
            turn = note.raw.get("turn")
            self._complete(turn if isinstance(turn, dict) else {})
            return True
        return False

    def item_span(self, item_id: str, kind: str, tool: str) -> Span:
        """The span of item ``item_id`` (a server request's parent), started now if the watcher
        has not handled its ``item/started`` yet: the request's handler task may well run first.
        The turn's span if the item is over or the turn has ended."""
        span = self._items.get(item_id)
        if span is None and not self._ended and item_id not in self._done_items:
            span = self._start_item(item_id, kind, tool, None)
        return span or self.span

    def _item_started(self, params: dict[str, Any]) -> None:
        item = params.get("item")
        if not isinstance(item, dict) or item.get("type") not in TRACED_ITEMS:
            return
        item_id = item.get("id")
        if not isinstance(item_id, str) or item_id in self._done_items:
            return
        tool = _tool_name(item)
        early = self._items.get(item_id)
        if early is not None:  # started by a server request of the item
            early.update_name(f"execute_tool {tool}")
            early.set_attribute("gen_ai.tool.name", tool)
            return
        self._start_item(item_id, str(item["type"]), tool, _ns(params.get("startedAtMs")))

    def _start_item(self, item_id: str, kind: str, tool: str, start_time: int | None) -> Span:
        attributes = {
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": tool,
            "gen_ai.tool.call.id": item_id,
            "gen_ai.conversation.id": self.thread_id,
            "codex.item.id": item_id,
            "codex.item.type": kind,
        }
        if self.turn_id is not None:
            attributes["codex.turn.id"] = self.turn_id
        span = self._items[item_id] = self._inst.start_span(
            f"execute_tool {tool}",
            context=self._context,
            attributes=attributes,
            start_time=start_time,
        )
        return span

    def _item_completed(self, params: dict[str, Any]) -> None:
        item = params.get("item")
        if not isinstance(item, dict):
            return
        item_id = str(item.get("id"))
        span = self._items.pop(item_id, None)
        if span is None:
            return
        self._done_items.add(item_id)
        from opentelemetry.trace import Status, StatusCode

        status = item.get("status")
        if isinstance(status, str):
            span.set_attribute("codex.item.status", status)
        exit_code = item.get("exitCode")
        if isinstance(exit_code, int):
            span.set_attribute("codex.command.exit_code", exit_code)
        duration = item.get("durationMs")
        if isinstance(duration, int):
            span.set_attribute("codex.item.duration_ms", duration)
        success = item.get("success")
        if isinstance(success, bool):
            span.set_attribute("codex.tool.success", success)
        failed = (
            status in ("failed", "declined")
            or success is False
            or (isinstance(exit_code, int) and exit_code != 0)
        )
        if failed:
            error = item.get("error")
            message = error.get("message") if isinstance(error, dict) else None
            span.set_status(Status(StatusCode.ERROR, str(message or status)))
        self._inst.end_span(span, _ns(params.get("completedAtMs")))

    def _complete(self, turn: dict[str, Any]) -> None:
        status = turn.get("status")
        status = status if isinstance(status, str) else "unknown"
        duration_ms = turn.get("durationMs")
        if isinstance(duration_ms, int):
            self.span.set_attribute("codex.turn.duration_ms", duration_ms)
        if self._usage_reported:
            counts = token_counts(self._usage.usage)
            self.span.set_attribute("gen_ai.usage.input_tokens", counts["input"])
            self.span.set_attribute("gen_ai.usage.output_tokens", counts["output"])
            self.span.set_attribute("codex.usage.cached_input_tokens", counts["cached_input"])
            self.span.set_attribute("codex.usage.reasoning_output_tokens", counts["reasoning"])
            for kind, count in counts.items():
                if count:
                    labels = {**self._labels, "gen_ai.token.type": kind}
                    self._inst.add(self._inst.tokens, count, labels)
        failure = turn.get("error") or (self._last_error if status == "failed" else None)
        self._end(status=status, failure=failure)

    def _end(
        self,
        *,
        status: str | None = None,
        error: BaseException | None = None,
        failure: Any = None,
    ) -> None:
        """End the span once: ``error`` an exception here, ``failure`` the turn's own error."""
        if self._ended:
            return
        self._ended = True
        inst = self._inst
        for item in self._items.values():  # never completed: the turn ended under them
            with inst.guarded("annotating a span"):
                item.set_attribute("codex.item.status", "incomplete")
            inst.end_span(item)
        self._items.clear()
        with inst.guarded("annotating a span"):
            self._annotate_end(status, error, failure)
        inst.end_span(self.span, self.completed_at)
        labels = self._labels if status is None else {**self._labels, "codex.turn.status": status}
        end = self.completed_monotonic or time.monotonic()
        inst.record(inst.turn_duration, end - self._started, labels)

    def _annotate_end(self, status: str | None, error: BaseException | None, failure: Any) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        if status is not None:
            span.set_attribute("codex.turn.status", status)
        if error is not None:
            if isinstance(error, anyio.get_cancelled_exc_class()):
                span.set_attribute("codex.cancelled", True)
            else:
                span.set_attribute("error.type", type(error).__qualname__)
                span.record_exception(error)
                span.set_status(Status(StatusCode.ERROR, str(error)))
        elif failure is not None or status == "failed":
            message = failure.get("message") if isinstance(failure, dict) else None
            span.set_attribute("error.type", "turn_failed")
            span.set_status(Status(StatusCode.ERROR, str(message or "the turn failed")))


class GoalTrace:
    """One goal's span, ``codex.goal``, from ``thread/goal/set`` to the end of the goal's
    scope; the span of each turn the runtime runs for the goal is its child.

    The goal's turns are started by the runtime, so no ``turn/start`` response attaches a
    watcher to them: the goal's consumer, which reads every event of the thread in order
    (``_goal``), starts each turn's :class:`TurnTrace` on its ``turn/started`` and feeds it
    the turn's events, in the caller's task (where the spans end, as a turn's do when its
    consumer sees the end). Each turn's tokens are counted once, by its own span and the
    ``codex.token.usage`` metric; the goal's span only carries their sum as attributes.
    Nothing of the objective is recorded (as a turn's span records nothing of its input).
    """

    def __init__(
        self,
        instrumentation: Instrumentation,
        client: CodexClient,
        thread_id: str,
        info: Any,
        token_budget: int | None,
    ) -> None:
        from opentelemetry import trace

        self._inst = instrumentation
        self._client = client
        self.thread_id = thread_id
        self._model: str | None = getattr(info, "model", None)
        self._provider: str | None = getattr(info, "model_provider", None)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "invoke_agent",
            "gen_ai.conversation.id": thread_id,
        }
        if self._model:
            attributes["gen_ai.request.model"] = self._model
        if self._provider:
            attributes["gen_ai.provider.name"] = self._provider
        if token_budget is not None:
            attributes["codex.goal.token_budget"] = token_budget
        self.span: Span = instrumentation.start_span(
            "codex.goal", kind=trace.SpanKind.INTERNAL, attributes=attributes
        )
        self._context: Context = trace.set_span_in_context(self.span)
        self._turn: TurnTrace | None = None
        self._ended = False

    def current(self) -> Any:
        """``with goal_trace.current():`` the goal's span is the current one (its requests,
        ``thread/goal/set`` and the pause, become its children)."""
        from opentelemetry import trace

        return trace.use_span(
            self.span, end_on_exit=False, record_exception=False, set_status_on_exception=False
        )

    def take(self, note: Any) -> None:
        """One event of the goal's thread: a turn's start begins its span, a turn's events
        go to it, its completion ends it."""
        if note.method == "turn/started":
            turn = note.raw.get("turn")
            turn_id = turn.get("id") if isinstance(turn, dict) else None
            if isinstance(turn_id, str) and (self._turn is None or self._turn.turn_id != turn_id):
                self._stop_turn(None)
                self._turn = TurnTrace(
                    self._inst,
                    self._client,
                    self.thread_id,
                    self._model,
                    self._provider,
                    parent=self._context,
                )
                self._turn.follow(turn_id)
            return
        live = self._turn
        if live is not None and note.turn_id == live.turn_id and live.feed(note):
            self._stop_turn(None)

    def _stop_turn(self, error: BaseException | None) -> None:
        live, self._turn = self._turn, None
        if live is not None:
            live._unwatch(error)

    def end(
        self,
        *,
        status: str | None,
        turns: int,
        usage: TokenUsage,
        error: BaseException | None = None,
    ) -> None:
        """End the goal's span once (and a turn span left open: ``unknown``): its last
        status (``cleared`` if it was; None: it was never set), the turns it ran, their
        summed usage; ``error`` what ended the goal's scope, if anything did."""
        if self._ended:
            return
        self._ended = True
        self._stop_turn(error)
        inst = self._inst
        with inst.guarded("annotating a span"):
            self._annotate_end(status, turns, usage, error)
        inst.end_span(self.span)

    def _annotate_end(
        self, status: str | None, turns: int, usage: TokenUsage, error: BaseException | None
    ) -> None:
        from opentelemetry.trace import Status, StatusCode

        span = self.span
        if status is not None:
            span.set_attribute("codex.goal.status", status)
        span.set_attribute("codex.goal.turns", turns)
        counts = token_counts(usage)
        span.set_attribute("gen_ai.usage.input_tokens", counts["input"])
        span.set_attribute("gen_ai.usage.output_tokens", counts["output"])
        span.set_attribute("codex.usage.cached_input_tokens", counts["cached_input"])
        span.set_attribute("codex.usage.reasoning_output_tokens", counts["reasoning"])
        if error is None:
            return
        if isinstance(error, anyio.get_cancelled_exc_class()):
            span.set_attribute("codex.cancelled", True)
        else:
            span.set_attribute("error.type", type(error).__qualname__)
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, str(error)))


def _tool_name(item: dict[str, Any]) -> str:
    """``gen_ai.tool.name`` of an item: the tool it calls, or its kind for built-ins."""
    kind = str(item.get("type"))
    tool = item.get("tool")
    if kind == "mcpToolCall" and isinstance(tool, str):
        server = item.get("server")
        return f"{server}.{tool}" if isinstance(server, str) else tool
    if kind == "dynamicToolCall" and isinstance(tool, str):
        return tool
    return {"commandExecution": "shell", "fileChange": "apply_patch"}.get(kind, kind)


def _ns(ms: Any) -> int | None:
    """A runtime timestamp in milliseconds as span time (ns); ``None``: now."""
    return ms * 1_000_000 if isinstance(ms, int) and ms > 0 else None

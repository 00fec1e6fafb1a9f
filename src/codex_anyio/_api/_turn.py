"""``TurnHandle`` and ``TurnResult``: one turn, owned by the scope that started it.

The rule this module exists for: a turn never outlives its scope. When the block that owns a
running turn is left early (``break`` out of its stream, an exception, a ``move_on_after`` or
``fail_after`` expiring, the task group being cancelled, ``KeyboardInterrupt``, an
asyncio-native cancellation), the handle interrupts the turn (``_interrupt.py``: shielded,
``Limits.interrupt_timeout`` seconds in all, once, however many ways it is left), waits for
its ``turn/completed``, and only then lets the exception or cancellation continue. The runtime
then drops the model's stream, so an abandoned turn stops spending.

The owning scope is ``async with thread.turn(...) as handle`` (or ``async with await
thread.turn(...)``); ``thread.run(...)`` and ``handle.run()`` own their turn themselves. A
handle obtained with a bare ``await thread.turn(...)`` is owned by whoever consumes it:
``run()`` or ``stream()`` interrupt it when they are left early. A handle dropped unfinished
(garbage-collected) releases its buffers at once and its turn is interrupted by the client
as soon as the reader next runs, and at the latest when the client closes.

Who may call what, from which task:

* One consumer at a time: ``stream()``/``stream_text()`` iteration, ``run()`` and
  ``cancel()`` consume the turn's events. A second task that starts iterating while another
  task's iterator is live gets ``RuntimeError`` at once (use :meth:`TurnHandle.observe` or
  ``client.subscribe_turn(turn_id)`` for an independent stream of the same events).
  ``run()``/``cancel()`` called while another task streams wait for that task to see the
  end instead of taking events from it.
* ``interrupt()`` and ``steer()`` may be called from any task at any time: they only send a
  request. ``interrupt()`` returns the runtime's answer; the consumer then sees the turn
  complete (``interrupted``). ``cancel()`` is interrupt-and-wait.
"""

from __future__ import annotations

import logging
import weakref
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import anyio
import attrs

from .._exceptions import (
    SubscriptionOverflowError,
    TransportClosedError,
    TurnFailedError,
    TurnIdleTimeoutError,
    UsageLimitError,
    fresh,
    is_usage_limit,
)
from .._protocol._generated.converter import converter
from .._protocol._generated.models import Turn, TurnInterruptResponse, TurnStatus, TurnSteerResponse
from .._rpc._interrupt import interrupt_and_wait, send_interrupt
from .._rpc._notifications import Notification, NotificationStream
from .._rpc._usage import TurnTally, TurnUsage, UsageLedger
from ._inputs import Input, to_wire_input

if TYPE_CHECKING:
    from .._rpc._connection import CodexClient
    from ..telemetry._telemetry import Instrumentation
    from ._dispatch import Dispatcher, Handlers
    from ._model_calls import ModelCallSource

__all__ = ["INTERRUPT_TIMEOUT", "OBSERVED", "TurnEvents", "TurnHandle", "TurnResult"]

logger = logging.getLogger("codex_anyio.turn")

INTERRUPT_TIMEOUT: Final = 10.0
"""Default of ``Limits.interrupt_timeout``: the bound, in all, on the clean-up after a turn's
scope is left early (``turn/interrupt`` plus waiting for ``turn/completed``; measured: about
115 ms on the real runtime). If it runs out, the exception continues anyway; a dead runtime
cannot hold a cancellation hostage."""


CONSUMER_RECHECK: Final = 0.25
"""While another task streams the turn, ``run()``/``cancel()`` wait for it to see the end and
re-check this often (seconds) whether that task still holds its iterator."""


@attrs.frozen(kw_only=True)
class TurnResult:
    """What a finished turn produced.

    ``final_response`` follows the official SDK: the last agent message whose phase is
    ``final_answer``, else the last one with no phase. ``items`` are the turn's completed
    items in order, ``errors`` every ``error`` notification the turn sent (including retried
    ones); ``error`` is the turn's own error.

    ``usage`` is what this turn spent (a :class:`TurnUsage`: zero if the runtime reported
    nothing), also for an interrupted turn: what was reported before the interrupt counts.
    It also reads as the official ``ThreadTokenUsage`` (``usage.total``, ``usage.last``: the
    runtime's last report, ``total`` being the thread's running total).
    ``usage_limit`` is set when the turn's error is the account's usage limit (a failed turn
    raises it instead).

    ``model_calls`` are the turn's model calls, in order, as the client's model gateway
    recorded them (:class:`~codex_anyio.gateway.Exchange`: request, answer, timing, usage,
    the join); empty without ``AsyncCodex(gateway=...)``.
    """

    id: str
    thread_id: str
    status: TurnStatus
    """A ``str`` enum: ``== "completed"`` and ``TurnStatus.completed`` both work."""
    error: Any
    final_response: str | None
    items: list[Any]
    usage: TurnUsage
    started_at: int | None
    completed_at: int | None
    duration_ms: int | None
    errors: list[Any]
    turn: Turn | None
    usage_limit: UsageLimitError | None = None
    model_calls: list[Any] = attrs.field(factory=list)


def _final_response(items: list[Any]) -> str | None:
    unphased: str | None = None
    for item in reversed(items):
        if getattr(item, "type", None) != "agentMessage":
            continue
        phase = getattr(item, "phase", None)
        if phase == "final_answer":
            text: str | None = item.text
            return text
        if phase is None and unphased is None:
            unphased = item.text
    return unphased


OBSERVED = frozenset(("item/completed", "thread/tokenUsage/updated", "error", "turn/completed"))
"""The methods :meth:`TurnHandle._observe` collects (a ``TurnResult`` is made of them); the
others pass by with one set lookup."""


def _turn_of(note: Notification, turn_id: str) -> Turn:
    """The final turn of a ``turn/completed``, even if its params do not fit the schema."""
    params = note.params
    turn = getattr(params, "turn", None)
    if isinstance(turn, Turn):
        return turn
    raw = note.raw.get("turn")
    raw = raw if isinstance(raw, dict) else {}
    try:
        typed: Turn = converter.structure(raw, Turn)
    except Exception:
        status: Any = raw.get("status")
        typed = Turn(
            id=turn_id,
            items=[],
            status=TurnStatus(status if isinstance(status, str) else "completed"),
        )
    return typed


def _field(params: Any, name: str, key: str) -> Any:
    """``params.name`` for typed params, ``params[key]`` for raw (untypeable) ones."""
    if isinstance(params, dict):
        return params.get(key)
    return getattr(params, name, None)


class TurnHandle:
    """A running (or finished) turn.

    ``async for event in handle.stream()`` gives this turn's typed notifications in order,
    ending after its ``turn/completed``; ``await handle.run()`` collects a
    :class:`TurnResult`. Use it as ``async with`` to make its scope explicit.
    """

    def __init__(
        self,
        *,
        client: CodexClient,
        dispatcher: Dispatcher,
        thread_id: str,
        turn: Turn,
        stream: NotificationStream,
        idle_timeout: float | None = None,
        handlers: Handlers | None = None,
        owner: object = None,
        ledger: UsageLedger | None = None,
        telemetry: Instrumentation | None = None,
        gateway: ModelCallSource | None = None,
    ) -> None:
        self._client = client
        self._gateway = gateway
        self._telemetry = telemetry
        self._dispatcher = dispatcher
        self.thread_id = thread_id
        self.id: str = turn.id
        self._started_turn = turn
        self._stream = stream
        self._idle_timeout = idle_timeout
        self._handlers = handlers
        self._owner = owner  # keeps the Thread (its handlers and tools) alive while we are
        self._final: Turn | None = None
        self._items: list[Any] = []
        self._tally = TurnTally(ledger, thread_id, turn.id)
        self._errors: list[Any] = []
        self._failure: BaseException | None = None
        self._abandoned = False
        self._released = False
        self._consumer: tuple[weakref.ref[object], int] | None = None
        self._ended: anyio.Event | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Whether this turn has completed (its ``turn/completed`` was received)."""
        return self._final is not None

    @property
    def usage(self) -> TurnUsage:
        """What this turn has spent so far (final once it is done)."""
        return self._tally.result()

    @property
    def status(self) -> TurnStatus:
        """``inProgress`` until completion, then ``completed``, ``interrupted`` or ``failed``."""
        turn = self._final or self._started_turn
        return TurnStatus(turn.status)

    # -- consuming -------------------------------------------------------------------------

    def _observe(self, note: Notification) -> None:
        """Collect what the result needs. Never raises: a payload that does not fit the
        schema is taken raw (or skipped), it must not fail the turn or mask a cancellation."""
        method = note.method
        if method == "item/completed":
            item = _field(note.params, "item", "item")
            if item is not None:
                self._items.append(item)
        elif method == "thread/tokenUsage/updated":
            self._tally.update(_field(note.params, "token_usage", "tokenUsage"))
        elif method == "error":
            self._errors.append(note.params)
        elif method == "turn/completed":
            self._final = _turn_of(note, self.id)
            self._finished()

    def _finished(self) -> None:
        telemetry = self._telemetry
        if telemetry is not None:  # the turn span ends now, not when its watcher gets there
            telemetry.turn_seen_completed(self.id)
        if self._handlers is not None:
            self._dispatcher.pop_turn_handlers(self.thread_id, self._handlers)
        self._stream.close()
        self._signal_end()

    def _signal_end(self) -> None:
        ended = self._ended
        if ended is not None:
            self._ended = None
            ended.set()

    async def _next(self) -> Notification | None:
        """The next event, or None after ``turn/completed``; enforces the idle timeout."""
        if self._final is not None:
            return None
        failure = self._failure
        if failure is not None:
            raise fresh(failure)
        try:
            if self._idle_timeout is None:
                note = await self._stream.receive()
            else:
                with anyio.fail_after(self._idle_timeout):
                    note = await self._stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            # The stream ended without turn/completed: only if it was released here.
            self._failure = RuntimeError(f"the stream of turn {self.id} was closed")
            self._signal_end()
            raise self._failure from None
        except TimeoutError:
            assert self._idle_timeout is not None
            error = TurnIdleTimeoutError(self.id, self._idle_timeout)
            await self._abandon()
            raise error from None
        except (TransportClosedError, SubscriptionOverflowError) as exc:
            self._failure = exc
            self._signal_end()
            raise
        if note.method in OBSERVED:
            self._observe(note)
        return note

    def stream(self) -> TurnEvents[Notification]:
        """This turn's notifications, in order, ending after ``turn/completed``.

        A plain async iterator, not a generator, so ``break`` leaves nothing to finalize;
        the turn itself is interrupted when its owning ``async with`` block ends. If the
        iteration is cancelled or fails, the turn is interrupted right away. One consumer at
        a time (see the module docstring); :meth:`observe` gives another task its own stream.
        """
        return TurnEvents(self, text_only=False)

    def stream_text(self) -> TurnEvents[str]:
        """Just the agent's message text, delta by delta, as it is generated."""
        return TurnEvents(self, text_only=True)

    def observe(self) -> NotificationStream:
        """An independent stream of every later event of this turn (for a second task: a
        progress display, a logger), ending after ``turn/completed``. Close it when done
        (``async with handle.observe() as events``)."""
        return self._client.subscribe_turn(self.id)

    def _claim(self, consumer: object) -> None:
        """Make ``consumer`` (an iterator) the one that takes this turn's events."""
        task = anyio.get_current_task().id
        current = self._consumer
        if current is not None and current[1] != task:
            holder = current[0]()
            if holder is not None and holder is not consumer and not self.done:
                raise RuntimeError(
                    f"turn {self.id} is already being consumed by another task; a turn has one "
                    "consumer at a time: use handle.observe() (or "
                    "codex.client.subscribe_turn(turn_id)) for an independent stream of its events"
                )
        self._consumer = (weakref.ref(consumer), task)
        # A streaming consumer wants every event as it comes, even if run() batches them.
        self._stream.batch_wake_ups(False)

    def _streamed_elsewhere(self) -> bool:
        current = self._consumer
        if current is None or current[0]() is None:
            return False
        return current[1] != anyio.get_current_task().id

    async def _next_owned(self) -> Notification | None:
        """``_next``, interrupting the turn if waiting is cancelled or fails."""
        try:
            return await self._next()
        except BaseException:
            if not self.done:
                await self._abandon()
            raise

    async def _wait_end(self) -> None:
        """Consume until the end, or wait for the task that streams to see it."""
        stream = self._stream
        try:
            while self._final is None:
                failure = self._failure
                if failure is not None:
                    raise fresh(failure)
                if self._streamed_elsewhere():
                    stream.batch_wake_ups(False)  # that task wants every event as it comes
                    if self._ended is None:
                        self._ended = anyio.Event()
                    # Re-check now and then: that task may drop its iterator without the end.
                    with anyio.move_on_after(CONSUMER_RECHECK):
                        await self._ended.wait()
                    continue
                # This task consumes, and needs no event before the end (an idle timeout
                # does): wake it for batches, not for every chunk the runtime writes.
                stream.batch_wake_ups(self._idle_timeout is None)
                await self._next_owned()
        finally:
            stream.batch_wake_ups(False)

    async def run(self) -> TurnResult:
        """Wait for the turn to finish and collect its result.

        :raises TurnFailedError: if the turn ended with status ``failed``
            (:class:`UsageLimitError` if the account's usage limit is reached).
        :raises TurnIdleTimeoutError: if an idle timeout is set and the turn went silent.
        """
        await self._wait_end()
        await self._settle_model_calls()
        return self.result()

    async def _settle_model_calls(self) -> None:
        """Let the gateway finish recording this turn's calls (bounded), so ``model_calls``
        of the result are complete."""
        if self._gateway is not None:
            await self._gateway.settle(self.thread_id, self.id)

    def result(self) -> TurnResult:
        """The result of a completed turn.

        :raises UsageLimitError: if it failed because the account's usage limit is reached.
        :raises ReplayMismatchError: if a replaying model gateway failed it: the runtime asked
            for a call the cassette does not hold.
        :raises TurnFailedError: if it failed otherwise.
        :raises RuntimeError: if it has not completed.
        """
        turn = self._final
        if turn is None:
            raise RuntimeError(f"turn {self.id} has not completed")
        items = self._items or list(turn.items or [])
        error = turn.error
        if error is None:
            for notice in reversed(self._errors):
                if not _field(notice, "will_retry", "willRetry"):
                    error = _field(notice, "error", "error")
                    break
        usage_limit: UsageLimitError | None = None
        if error is not None and is_usage_limit(error):
            limits = self._client.rate_limits
            usage_limit = UsageLimitError(
                turn, error, resets_at=limits.exhausted_reset(), rate_limits=limits.latest
            )
        gateway = self._gateway
        if str(turn.status) == "failed":
            planted = gateway.turn_error(self.thread_id, self.id, turn, error) if gateway else None
            raise planted or usage_limit or TurnFailedError(turn, error)
        return TurnResult(
            id=turn.id,
            thread_id=self.thread_id,
            status=TurnStatus(turn.status),
            error=error,
            final_response=_final_response(items),
            items=items,
            usage=self._tally.result(),
            started_at=turn.started_at,
            completed_at=turn.completed_at,
            duration_ms=turn.duration_ms,
            errors=list(self._errors),
            turn=turn,
            usage_limit=usage_limit,
            model_calls=[] if gateway is None else gateway.model_calls(self.thread_id, self.id),
        )

    # -- control ---------------------------------------------------------------------------

    async def steer(self, input: Input) -> TurnSteerResponse:
        """Add input to this running turn (``turn/steer`` with ``expectedTurnId``)."""
        result = await self._client.request(
            "turn/steer",
            {"threadId": self.thread_id, "expectedTurnId": self.id, "input": to_wire_input(input)},
        )
        response: TurnSteerResponse = converter.structure(result, TurnSteerResponse)
        return response

    async def interrupt(self) -> TurnInterruptResponse:
        """Send ``turn/interrupt`` and return the runtime's answer, as the official client does.

        Safe from any task at any time: the consumer of the turn then sees it complete
        (``interrupted``). Before the runtime has set the turn up it answers "no active turn";
        that is retried (within ``Limits.interrupt_timeout``) until it is accepted or the turn
        has ended. After the turn's end this returns an empty answer without a request. To
        interrupt and wait for the end, use :meth:`cancel`.

        :raises InvalidRequestError: if the runtime still has no such active turn after
            ``Limits.interrupt_timeout`` seconds while the turn has not ended either.
        """
        # A turn that is done has closed its stream: send_interrupt then sends nothing.
        params = {"threadId": self.thread_id, "turnId": self.id}
        deadline = anyio.current_time() + self._client.limits.interrupt_timeout
        await send_interrupt(self._client, params, self._stream, deadline=deadline)
        return TurnInterruptResponse()

    async def cancel(self) -> TurnResult:
        """Interrupt the turn and return its result once it has completed (status
        ``interrupted``, or whatever it reached first)."""
        if not self.done:
            await self.interrupt()
            await self._wait_end()
        await self._settle_model_calls()
        return self.result()

    async def _abandon(self) -> None:
        """Interrupt and wait for completion, shielded, bounded, once; never raises."""
        if self.done or self._abandoned:
            return
        self._abandoned = True
        deadline = anyio.current_time() + self._client.limits.interrupt_timeout
        with anyio.CancelScope(shield=True):
            await interrupt_and_wait(
                self._client,
                self.thread_id,
                self.id,
                self._stream,
                self._observe,
                deadline=deadline,
            )
        self._signal_end()

    async def aclose(self) -> None:
        """Interrupt the turn if it is still running, and release its stream."""
        await self._abandon()
        self._release()

    def _release(self) -> None:
        self._released = True
        self._stream.close()
        if self._handlers is not None:
            self._dispatcher.pop_turn_handlers(self.thread_id, self._handlers)

    def __del__(self) -> None:
        # Dropped without being closed: free the buffers now (no ResourceWarning), and let
        # the client interrupt the turn. Only plain attribute work here: this may run inside
        # the event loop at any point.
        if getattr(self, "_released", True):
            return
        stream = self._stream
        running = self._final is None and not stream.ended
        stream.close()
        if running:
            self._client.dropped_turns.append((self.thread_id, self.id))

    async def __aenter__(self) -> TurnHandle:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<TurnHandle {self.id} of thread {self.thread_id} status={self.status}>"


T_co = TypeVar("T_co", covariant=True)


class TurnEvents(Generic[T_co]):
    """Iterator over a turn's events (or only its text deltas): see ``TurnHandle.stream``."""

    __slots__ = ("__weakref__", "_claimed", "_handle", "_text_only")

    def __init__(self, handle: TurnHandle, *, text_only: bool) -> None:
        self._handle = handle
        self._text_only = text_only
        self._claimed = False

    def __aiter__(self) -> TurnEvents[T_co]:
        return self

    async def __anext__(self) -> T_co:
        handle = self._handle
        if not self._claimed:
            if not handle.done:
                handle._claim(self)
            self._claimed = True
        stream = handle._stream
        while True:
            # The fast path: an event is buffered and the turn is live (no await, no
            # coroutine per event); else TurnHandle._next_owned, inlined.
            note = None
            if handle._final is None and handle._failure is None:
                note = stream.take_buffered()
                if note is not None and note.method in OBSERVED:
                    handle._observe(note)
            if note is None:
                try:
                    note = await handle._next()
                except BaseException:
                    if not handle.done:
                        await handle._abandon()
                    raise
                if note is None:
                    raise StopAsyncIteration
            if not self._text_only:
                return note  # type: ignore[return-value]
            if note.method == "item/agentMessage/delta":
                delta: T_co = note.raw["delta"]
                return delta

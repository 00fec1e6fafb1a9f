"""``TurnHandle`` and ``TurnResult``: one turn, owned by the scope that started it.

The rule this module exists for: a turn never outlives its scope. When the block that owns a
running turn is left early (``break`` out of its stream, an exception, a ``move_on_after`` or
``fail_after`` expiring, the task group being cancelled, ``KeyboardInterrupt``), the handle
sends ``turn/interrupt`` in a shielded scope bounded by :data:`INTERRUPT_TIMEOUT`, waits for
the turn's ``turn/completed``, and only then lets the exception or cancellation continue. The
runtime then drops the model's stream, so an abandoned turn stops spending.

The owning scope is ``async with thread.turn(...) as handle`` (or ``async with await
thread.turn(...)``); ``thread.run(...)`` and ``handle.run()`` own their turn themselves. A
handle obtained with a bare ``await thread.turn(...)`` is owned by whoever consumes it:
``run()`` or ``stream()`` interrupt it when they are left early.
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final, Generic, TypeVar

import anyio
import attrs

from ._exceptions import (
    JsonRpcError,
    SubscriptionOverflowError,
    TransportClosedError,
    TurnFailedError,
    TurnIdleTimeoutError,
    fresh,
)
from ._generated.converter import converter
from ._generated.models import Turn, TurnSteerResponse
from ._inputs import Input, to_wire_input
from ._notifications import Notification, NotificationStream

if TYPE_CHECKING:
    from ._connection import CodexClient
    from ._dispatch import Dispatcher, Handlers

__all__ = ["INTERRUPT_TIMEOUT", "TurnEvents", "TurnHandle", "TurnResult"]

logger = logging.getLogger("codex_anyio")

INTERRUPT_TIMEOUT: Final = 10.0
"""Upper bound on the clean-up after a turn's scope is left early: ``turn/interrupt`` plus
waiting for ``turn/completed`` (measured: about 115 ms on the real runtime). If it runs out,
the exception continues anyway; a dead runtime cannot hold a cancellation hostage."""


@attrs.frozen(kw_only=True)
class TurnResult:
    """What a finished turn produced.

    ``final_response`` follows the official SDK: the last agent message whose phase is
    ``final_answer``, else the last one with no phase. ``items`` are the turn's completed
    items in order, ``usage`` the last token-usage update, ``errors`` every ``error``
    notification the turn sent (including retried ones); ``error`` is the turn's own error.
    """

    id: str
    thread_id: str
    status: str
    error: Any
    final_response: str | None
    items: list[Any]
    usage: Any
    started_at: int | None
    completed_at: int | None
    duration_ms: int | None
    errors: list[Any]
    turn: Turn | None


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
    ) -> None:
        self._client = client
        self._dispatcher = dispatcher
        self.thread_id = thread_id
        self.id: str = turn.id
        self._started_turn = turn
        self._stream = stream
        self._idle_timeout = idle_timeout
        self._handlers = handlers
        self._final: Turn | None = None
        self._items: list[Any] = []
        self._usage: Any = None
        self._errors: list[Any] = []
        self._failure: BaseException | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        """Whether this turn has completed (its ``turn/completed`` was received)."""
        return self._final is not None

    @property
    def status(self) -> str:
        """``inProgress`` until completion, then ``completed``, ``interrupted`` or ``failed``."""
        turn = self._final or self._started_turn
        return str(turn.status)

    # -- consuming -------------------------------------------------------------------------

    def _observe(self, note: Notification) -> None:
        method = note.method
        if method == "item/completed":
            self._items.append(note.params.item)
        elif method == "thread/tokenUsage/updated":
            self._usage = note.params.token_usage
        elif method == "error":
            self._errors.append(note.params)
        elif method == "turn/completed":
            self._final = note.params.turn
            self._finished()

    def _finished(self) -> None:
        if self._handlers is not None:
            self._dispatcher.pop_turn_handlers(self.thread_id, self._handlers)
        self._stream.close()

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
        except anyio.EndOfStream:
            # The stream ended without turn/completed: only if we closed it ourselves.
            self._failure = RuntimeError(f"the stream of turn {self.id} was closed")
            raise self._failure from None
        except TimeoutError:
            assert self._idle_timeout is not None
            error = TurnIdleTimeoutError(self.id, self._idle_timeout)
            await self._abandon()
            raise error from None
        except (TransportClosedError, SubscriptionOverflowError) as exc:
            self._failure = exc
            raise
        self._observe(note)
        return note

    def stream(self) -> TurnEvents[Notification]:
        """This turn's notifications, in order, ending after ``turn/completed``.

        A plain async iterator, not a generator, so ``break`` leaves nothing to finalize;
        the turn itself is interrupted when its owning ``async with`` block ends. If the
        iteration is cancelled or fails, the turn is interrupted right away.
        """
        return TurnEvents(self, text_only=False)

    def stream_text(self) -> TurnEvents[str]:
        """Just the agent's message text, delta by delta, as it is generated."""
        return TurnEvents(self, text_only=True)

    async def _next_owned(self) -> Notification | None:
        """``_next``, interrupting the turn if waiting is cancelled or fails."""
        try:
            return await self._next()
        except BaseException:
            if not self.done:
                await self._abandon()
            raise

    async def run(self) -> TurnResult:
        """Wait for the turn to finish and collect its result.

        :raises TurnFailedError: if the turn ended with status ``failed``.
        :raises TurnIdleTimeoutError: if an idle timeout is set and the turn went silent.
        """
        while await self._next_owned() is not None:
            pass
        return self.result()

    def result(self) -> TurnResult:
        """The result of a completed turn.

        :raises TurnFailedError: if it failed.
        :raises RuntimeError: if it has not completed.
        """
        turn = self._final
        if turn is None:
            raise RuntimeError(f"turn {self.id} has not completed")
        items = self._items or list(turn.items or [])
        error = turn.error
        if error is None:
            for notice in reversed(self._errors):
                if not notice.will_retry:
                    error = notice.error
                    break
        if str(turn.status) == "failed":
            raise TurnFailedError(turn, error)
        return TurnResult(
            id=turn.id,
            thread_id=self.thread_id,
            status=str(turn.status),
            error=error,
            final_response=_final_response(items),
            items=items,
            usage=self._usage,
            started_at=turn.started_at,
            completed_at=turn.completed_at,
            duration_ms=turn.duration_ms,
            errors=list(self._errors),
            turn=turn,
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

    async def interrupt(self) -> TurnResult:
        """Interrupt the turn and return once it has completed (status ``interrupted``,
        or whatever it reached first)."""
        if not self.done:
            await self._client.request(
                "turn/interrupt", {"threadId": self.thread_id, "turnId": self.id}
            )
            while await self._next() is not None:
                pass
        return self.result()

    async def _abandon(self) -> None:
        """Interrupt and wait for completion, shielded and bounded; never raises."""
        if self.done:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(INTERRUPT_TIMEOUT) as scope:
            try:
                await self._client.request(
                    "turn/interrupt", {"threadId": self.thread_id, "turnId": self.id}
                )
            except JsonRpcError as exc:
                # Typically: the turn completed meanwhile. Its turn/completed is on the stream.
                logger.debug("turn/interrupt for %s: %s", self.id, exc)
            except TransportClosedError:
                return
            try:
                while self._final is None:
                    note = await self._stream.receive()
                    self._observe(note)
            except (anyio.EndOfStream, TransportClosedError, SubscriptionOverflowError):
                return
        if scope.cancelled_caught:
            logger.warning(
                "turn %s did not confirm its interruption within %g s", self.id, INTERRUPT_TIMEOUT
            )

    async def aclose(self) -> None:
        """Interrupt the turn if it is still running, and release its stream."""
        await self._abandon()
        self._stream.close()
        if self._handlers is not None:
            self._dispatcher.pop_turn_handlers(self.thread_id, self._handlers)

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

    def __init__(self, handle: TurnHandle, *, text_only: bool) -> None:
        self._handle = handle
        self._text_only = text_only

    def __aiter__(self) -> TurnEvents[T_co]:
        return self

    async def __anext__(self) -> T_co:
        while True:
            note = await self._handle._next_owned()
            if note is None:
                raise StopAsyncIteration
            if not self._text_only:
                return note  # type: ignore[return-value]
            if note.method == "item/agentMessage/delta":
                delta: T_co = note.raw["delta"]
                return delta

"""Goals: ``thread.run_goal(...)`` and ``async with thread.goal(...) as goal``.

A thread goal (the runtime's experimental ``thread/goal/*`` surface) is an objective the
runtime pursues by itself: once ``thread/goal/set`` makes it ``active`` on an idle thread, the
runtime starts a turn, and another each time one ends, until the model marks the goal
``complete`` (its ``update_goal`` tool), the token budget is spent (``budgetLimited``), the
account's usage limit is hit, or a client pauses or clears it. No client starts those turns,
so none owns them: this module makes the goal the unit a scope owns.

The rule, as for a turn (``_turn``): a goal never outlives its scope. Leaving
``async with thread.goal(...)`` before the goal is over (``break``, an exception, a deadline,
a cancelled task group, ``KeyboardInterrupt``) pauses the goal first, so the runtime starts no
further continuation, then interrupts whichever continuation turn is live and waits for its
``turn/completed``, shielded and bounded by ``Limits.interrupt_timeout`` in all. Pausing
alone would not do: the runtime lets a running turn finish after a pause or a clear (measured,
0.163.0). A continuation the runtime started while the pause was in flight is interrupted too:
its ``turn/started`` precedes the pause's response on the wire, so it is seen before the
clean-up looks for live turns, and a thread still running after that is waited for and
interrupted as well.

The events of every turn of the goal come as one stream: the thread's notifications (its
turns' included), read from one thread subscription opened before the goal is set, so no
event of a runtime-started turn can be missed. Each turn's ``TurnResult`` is collected by a
``TurnHandle`` fed from that stream (the same collection a turn started by ``thread.turn``
gets: items, usage, errors, usage limit), never by a stream of its own.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Iterable
from contextlib import AbstractContextManager, nullcontext
from types import TracebackType
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs

from .._exceptions import JsonRpcError, SubscriptionOverflowError, TransportClosedError
from .._protocol._generated import models as m
from .._protocol._generated.converter import converter
from .._rpc._interrupt import interrupt_and_wait
from .._rpc._notifications import Notification, NotificationStream, open_subscription
from .._rpc._usage import TokenUsage
from ._turn import OBSERVED, TurnHandle, TurnResult

if TYPE_CHECKING:
    from .._rpc._connection import CodexClient
    from .._rpc._usage import UsageLedger
    from ..telemetry._telemetry import GoalTrace, Instrumentation
    from ._dispatch import Dispatcher
    from ._model_calls import ModelCallSource

__all__ = ["GOAL_READS", "Goal", "GoalResult", "GoalStatus", "check_goal_reads"]

logger = logging.getLogger("codex_anyio.goal")

GoalStatus = m.ThreadGoalStatus
"""A goal's status: ``active``, ``paused``, ``blocked``, ``usageLimited``, ``budgetLimited``,
``complete`` (a ``str`` enum)."""

STOPPED: Final = frozenset(
    (
        GoalStatus.paused,
        GoalStatus.blocked,
        GoalStatus.usage_limited,
        GoalStatus.budget_limited,
        GoalStatus.complete,
    )
)
"""Statuses under which the runtime starts no continuation turn."""


GOAL_READS: Final = frozenset(("turn/started", "thread/goal/updated", "thread/goal/cleared"))
"""What a goal reads besides a turn's results: the starts of the turns the runtime runs for
it, and the goal's own updates. A client that opts out of any of them cannot follow a goal."""


def check_goal_reads(opted_out: Iterable[str]) -> None:
    """Refuse a goal on a client that opts out of what it reads (:data:`GOAL_READS`): it
    would miss the runtime's turns and never see the goal end.

    :raises ValueError: naming the methods (``CodexConfig.opt_out_notification_methods``).
    """
    missing = sorted(GOAL_READS.intersection(opted_out))
    if missing:
        raise ValueError(
            f"a goal needs the notifications {', '.join(missing)}, which this client opts out "
            "of (CodexConfig.opt_out_notification_methods)"
        )


_CLEARED: Final = "cleared"
"""``Goal._echo`` after ``thread/goal/clear``: waiting for ``thread/goal/cleared``."""


@attrs.frozen(kw_only=True)
class GoalResult:
    """What a goal's run produced.

    ``status`` is the goal's last status (``complete`` when the model met it; None if it was
    cleared); ``turns`` every turn the runtime ran for it, in order (interrupted ones
    included); ``usage`` the sum of their ``usage``; ``final_response`` the last non-empty
    ``final_response`` among them; ``goal`` the runtime's last ``ThreadGoal`` (tokens used,
    time used, budget), None once cleared.
    """

    thread_id: str
    objective: str
    status: m.ThreadGoalStatus | None
    turns: list[TurnResult]
    usage: TokenUsage
    final_response: str | None
    goal: m.ThreadGoal | None


def _goal_of(raw: Any) -> m.ThreadGoal | None:
    if not isinstance(raw, dict):
        return None
    goal: m.ThreadGoal = converter.structure(raw, m.ThreadGoal)
    return goal


class Goal:
    """One goal of a thread, owned by the ``async with thread.goal(...)`` block.

    ``async for event in goal`` gives the notifications of the thread and of every turn the
    runtime runs for the goal, in order, ending once the goal has stopped (met, paused,
    cleared, out of budget, usage-limited, blocked) and no turn of it is live; ``await
    goal.run()`` consumes them and returns a :class:`GoalResult`. One consumer at a time.
    """

    def __init__(
        self,
        *,
        client: CodexClient,
        dispatcher: Dispatcher,
        thread_id: str,
        objective: str,
        token_budget: int | None = None,
        owner: object = None,
        ledger: UsageLedger | None = None,
        gateway: ModelCallSource | None = None,
        telemetry: Instrumentation | None = None,
        info: Any = None,
    ) -> None:
        self._client = client
        self._dispatcher = dispatcher
        self._owner = owner  # keeps the Thread (its handlers and tools) alive while we are
        self._ledger = ledger
        self._gateway = gateway
        self._telemetry = telemetry
        self._info = info  # the thread's: the model and provider its spans name
        self._trace: GoalTrace | None = None
        self._exit_error: BaseException | None = None
        self.thread_id = thread_id
        self.objective = objective
        self.token_budget = token_budget
        self.goal: m.ThreadGoal | None = None
        """The runtime's latest ``ThreadGoal`` for this thread (None once cleared)."""
        self._cleared = False
        self._stream: NotificationStream | None = None
        self._pending: deque[Notification] = deque()
        self._live: TurnHandle | None = None
        self._turns: list[TurnResult] = []
        self._failure: BaseException | None = None
        self._holding = False  # this client paused or cleared it: no turn may run now
        self._echo: GoalStatus | str | None = None
        """What this client last asked for (a status, or :data:`_CLEARED`) until the
        runtime's notification of it arrives: the goal notifications before it are older
        than the request (a pause's ``paused`` read after a resume would end the stream)."""
        self._closed = False
        self._set_sent = False
        """Whether ``thread/goal/set active`` may have reached the runtime (its answer may
        not have: a scope cancelled while it was in flight must still pause the goal)."""

    # -- state ------------------------------------------------------------------------------

    @property
    def status(self) -> m.ThreadGoalStatus | None:
        """The goal's latest known status (None before it is set, or once cleared)."""
        return None if self._cleared or self.goal is None else self.goal.status

    @property
    def turns(self) -> list[TurnResult]:
        """The results of the goal's turns completed so far, in order."""
        return list(self._turns)

    @property
    def over(self) -> bool:
        """Whether the goal has stopped and no turn of it is live (the stream's end)."""
        return self._live is None and (self._cleared or self.status in STOPPED)

    def result(self) -> GoalResult:
        """What the goal produced so far (see :class:`GoalResult`)."""
        turns = list(self._turns)
        final = next((t.final_response for t in reversed(turns) if t.final_response), None)
        return GoalResult(
            thread_id=self.thread_id,
            objective=self.objective,
            status=self.status,
            turns=turns,
            usage=sum((t.usage for t in turns), TokenUsage()),
            final_response=final,
            goal=None if self._cleared else self.goal,
        )

    # -- the events -------------------------------------------------------------------------

    def _take(self, note: Notification) -> None:
        """Fold one event into the goal's state. Never raises; a turn that failed is kept
        as ``_failure`` for the consumer to raise."""
        method = note.method
        if self._trace is not None:
            self._trace.take(note)
        if method == "turn/started":
            turn = note.params.turn if isinstance(note.params, m.TurnStartedNotification) else None
            if turn is not None and (self._live is None or self._live.id != turn.id):
                self._live = self._collector(turn)
            return
        live = self._live
        if live is not None and note.turn_id == live.id and method in OBSERVED:
            live._observe(note)
            if method == "turn/completed":
                self._live = None
                live._release()
                try:
                    self._turns.append(live.result())
                except Exception as exc:  # a failed turn: TurnFailedError, UsageLimitError
                    self._failure = exc
        elif method == "thread/goal/updated":
            goal = _goal_of(note.raw.get("goal"))
            if goal is not None and self._echo in (None, goal.status):
                self._echo = None
                self.goal = goal
                self._cleared = False
        elif method == "thread/goal/cleared" and self._echo in (None, _CLEARED):
            self._echo = None
            self._cleared = True

    def _collector(self, turn: m.Turn) -> TurnHandle:
        """A ``TurnHandle`` that only collects: the goal's stream feeds it (``_take``)."""
        _, stream = open_subscription(limit=1, what=f"goal turn {turn.id}")
        return TurnHandle(
            client=self._client,
            dispatcher=self._dispatcher,
            thread_id=self.thread_id,
            turn=turn,
            stream=stream,
            owner=self._owner,
            ledger=self._ledger,
            gateway=self._gateway,
        )

    def _keep(self, note: Notification) -> None:
        """Take an event read during a clean-up, and keep it for the consumer."""
        self._take(note)
        self._pending.append(note)

    def _drain(self) -> None:
        """Take every event already delivered (never waits)."""
        stream = self._stream
        if stream is None:
            return
        try:
            while True:
                self._keep(stream.receive_nowait())
        except (anyio.WouldBlock, anyio.EndOfStream, anyio.ClosedResourceError):
            pass

    def __aiter__(self) -> Goal:
        return self

    async def __anext__(self) -> Notification:
        if self._pending:
            return self._pending.popleft()
        failure = self._failure
        if failure is not None:
            self._failure = None
            raise failure
        if self.over or self._stream is None:
            raise StopAsyncIteration
        try:
            note = await self._stream.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise RuntimeError(
                f"the stream of the goal of thread {self.thread_id} closed"
            ) from None
        self._take(note)
        if self._holding and note.method == "turn/started":
            # Started after this client paused or cleared the goal: not wanted.
            await self._stop_live()
        if self._failure is not None:
            failure, self._failure = self._failure, None
            raise failure
        return note

    async def run(self) -> GoalResult:
        """Consume the goal's events until it stops; return what it produced.

        :raises TurnFailedError: if one of its turns failed (:class:`UsageLimitError` for the
            account's usage limit); leaving the scope then pauses the goal.
        """
        async for _ in self:
            pass
        return self.result()

    # -- control ----------------------------------------------------------------------------

    async def _set(self, **params: Any) -> None:
        # Set before the request: its echo may be read (by another task) before the answer.
        self._echo = GoalStatus(params["status"])
        result = await self._client.request(
            "thread/goal/set", {"threadId": self.thread_id, **params}
        )
        goal = _goal_of(result.get("goal") if isinstance(result, dict) else None)
        if goal is not None:
            self.goal = goal
            self._cleared = False

    async def pause(self) -> None:
        """Pause the goal: the runtime starts no further turn for it, and the live one is
        interrupted (waited for, bounded). The stream then ends; :meth:`resume` goes on."""
        self._holding = True
        await self._set(status="paused")
        await self._stop_live()

    async def resume(self) -> None:
        """Make the goal active again: the runtime starts a continuation turn, and the
        stream goes on with it."""
        self._holding = False
        await self._set(status="active")

    async def clear(self) -> None:
        """Remove the goal from the thread, interrupting its live turn (the stream ends)."""
        self._holding = True
        self._echo = _CLEARED
        await self._client.request("thread/goal/clear", {"threadId": self.thread_id})
        self._cleared = True
        await self._stop_live()

    async def _stop_live(self) -> None:
        """Interrupt the goal's live turn, and any the runtime started meanwhile, and wait
        for their ends; bounded by ``Limits.interrupt_timeout`` in all, never raises."""
        deadline = anyio.current_time() + self._client.limits.interrupt_timeout
        with anyio.CancelScope(shield=True):
            await self._interrupt_until_idle(deadline)

    async def _interrupt_until_idle(self, deadline: float) -> None:
        stream = self._stream
        if stream is None:
            return
        self._drain()
        interrupt = functools.partial(
            interrupt_and_wait, self._client, self.thread_id, stream=stream, observe=self._keep
        )
        while self._live is not None and anyio.current_time() < deadline:
            turn_id = self._live.id
            await interrupt(turn_id, deadline=deadline)
            if self._live is not None and self._live.id == turn_id:
                return  # not confirmed in time: the warning is logged, nothing more to do
            self._drain()
        if self._live is None and await self._thread_running():
            # A turn the runtime started whose turn/started is not here yet: wait for it.
            with anyio.move_on_after(max(0.0, deadline - anyio.current_time())):
                while self._live is None:
                    self._keep(await stream.receive())
            if self._live is not None:
                await self._interrupt_until_idle(deadline)

    async def _thread_running(self) -> bool:
        try:
            result = await self._client.request(
                "thread/read", {"threadId": self.thread_id, "includeTurns": False}
            )
        except Exception:
            return False
        status = result.get("thread", {}).get("status", {}) if isinstance(result, dict) else {}
        return isinstance(status, dict) and status.get("type") == "active"

    # -- the scope --------------------------------------------------------------------------

    async def start(self) -> Goal:
        """Subscribe to the thread, then set the goal ``active`` (the runtime starts its
        first turn). :meth:`aclose` must follow."""
        if self._stream is not None:
            raise RuntimeError("this goal was already started")
        self._stream = self._client.subscribe_thread(self.thread_id, include_turns=True)
        if self._telemetry is not None:  # the goal's span: a child of the caller's current one
            self._trace = self._telemetry.start_goal(
                self._client, self.thread_id, self._info, self.token_budget
            )
        try:
            params: dict[str, Any] = {"objective": self.objective, "status": "active"}
            if self.token_budget is not None:
                params["tokenBudget"] = self.token_budget
            self._set_sent = True
            with self._in_span():
                await self._set(**params)
        except JsonRpcError as exc:
            self._set_sent = False  # refused (an ephemeral thread): there is no goal to pause
            self._exit_error = exc
            await self.aclose()
            raise
        except BaseException as exc:
            self._exit_error = exc
            await self.aclose()
            raise
        return self

    async def aclose(self) -> None:
        """End the scope: pause the goal if it is still active (the runtime starts no more
        turns), interrupt its live turn, release the stream. Shielded, bounded; never raises
        for the clean-up's own failures."""
        if self._closed:
            return
        self._closed = True
        stream = self._stream
        if stream is None:
            return
        deadline = anyio.current_time() + self._client.limits.interrupt_timeout
        try:
            with anyio.CancelScope(shield=True, deadline=deadline):
                self._drain()
                # Active, or perhaps active: the set went out but its answer and echo did not
                # arrive before the scope was left (the runtime may be starting its turn).
                unknown = self.goal is None and self._set_sent
                if not self._cleared and (self.status == GoalStatus.active or unknown):
                    self._holding = True
                    with self._in_span():
                        await self._set(status="paused")
                await self._interrupt_until_idle(deadline)
        except (TransportClosedError, SubscriptionOverflowError):
            pass  # the connection is gone: so are its turns
        except JsonRpcError as exc:
            # The clean-up must not replace what ended the scope; the turns were stopped
            # or the runtime refused the pause (a thread it no longer has).
            logger.warning("pausing the goal of thread %s failed: %s", self.thread_id, exc)
        finally:
            live = self._live
            if live is not None:
                live._release()
            stream.close()
            self._end_trace()

    def _in_span(self) -> AbstractContextManager[Any]:
        """The goal's span as the current one (its requests become its children)."""
        return nullcontext() if self._trace is None else self._trace.current()

    def _end_trace(self) -> None:
        trace = self._trace
        if trace is not None:
            result = self.result()
            status = "cleared" if self._cleared else None
            if result.status is not None:
                status = result.status.value
            error = self._exit_error
            trace.end(status=status, turns=len(result.turns), usage=result.usage, error=error)

    async def __aenter__(self) -> Goal:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._exit_error = exc
        await self.aclose()

    def __repr__(self) -> str:
        return f"<Goal of thread {self.thread_id} status={self.status}>"

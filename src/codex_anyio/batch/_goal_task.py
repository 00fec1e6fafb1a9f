"""What a goal task (a task line's ``"goal"``) changes in an attempt: its thread, its run, and
its row (``_attempt`` runs every task; this module holds what only goal tasks need).

**The thread.** A batch's threads are lean (``lean_thread_options``): ephemeral, with the
runtime's ``goals`` feature off. Neither suits a goal (measured on 0.163.0): an ephemeral
thread refuses ``thread/goal/set`` (``-32600 ephemeral thread does not support goals``), and
on a thread with the feature off the goal is accepted but no turn ever starts. So a goal task's
thread, and only its, is persisted (archived, which unloads it, when the task ends) with the
feature on in its own ``config`` overrides; ordinary tasks keep their lean threads.

**The notifications.** A goal follows the turns the runtime starts for it by their
``turn/started`` and its own ``thread/goal/updated``/``cleared`` (``GOAL_READS``), which a
batch's pool otherwise opts out of (``result_only_opt_outs``): keeping ``turn/started`` costs
an ordinary task ~0.5 ms of runtime CPU (measured: 200 one-turn tasks, paired runs, 13.5 vs
13.8 ms per task; the goal notifications never come without a goal). A batch keeps them
only when it may hold a goal task (:func:`may_hold_goals`), so a batch of ordinary tasks
given as a list (a tasks file) pays nothing.

**The row.** The goal's turns are summed: ``usage`` is the last turn's report with ``total``
the sum of the turns' usage (the thread's running total: the thread is new), ``turns`` how
many ran, ``turn_id`` the last one's, ``final_response`` the last non-empty one. The status
comes from the goal's last status (:data:`GOAL_STATUSES`).
"""

from __future__ import annotations

from collections.abc import AsyncIterable, Iterable
from typing import Any, Final

from .._api._goal import Goal, GoalResult, GoalStatus
from .._api._presets import merge_options
from .._protocol._generated.converter import converter
from .._rpc._usage import TokenUsage
from ..pool._thread import PooledThread
from ._files import BatchTask, goal_options

__all__ = ["GOAL_CONFIG", "GOAL_STATUSES", "GoalAttempt", "may_hold_goals"]

GOAL_CONFIG: Final = {"features": {"goals": True}}
"""The config overrides of a goal task's thread (over the lean preset's ``goals = false``)."""

GOAL_STATUSES: Final[dict[GoalStatus | None, tuple[str, str | None]]] = {
    GoalStatus.complete: ("completed", None),
    GoalStatus.budget_limited: ("interrupted", "GoalBudgetLimited"),
    GoalStatus.paused: ("interrupted", "GoalPaused"),
    None: ("interrupted", "GoalCleared"),
    GoalStatus.blocked: ("failed", "GoalBlocked"),
    GoalStatus.usage_limited: ("failed", "GoalUsageLimited"),
    GoalStatus.active: ("failed", "GoalNotOver"),
}
"""A goal's last status -> the row's status and its error type.

``complete`` (the model met it) is ``completed``. A spent token budget stopped it short, as an
interrupt stops a turn: ``interrupted``, not retried within the run (another attempt would
spend the budget again), run again by ``--retry-failed``. Paused or cleared by another client
likewise. ``blocked`` (the model says it cannot go on) is ``failed``, retried while attempts
remain. The account's usage limit normally fails the goal's turn (``UsageLimitError``): as for
any task, the account is paused and the task starts again, its goal from the start on a new
thread, without using an attempt; a ``usageLimited`` goal without it is ``failed``."""


def may_hold_goals(tasks: Iterable[BatchTask] | AsyncIterable[BatchTask]) -> bool:
    """Whether a batch's pool must keep the notifications a goal reads: not for a list or
    tuple without a goal task; always for a lazy source (it cannot be looked into first)."""
    if isinstance(tasks, (list, tuple)):
        return any(goal_options(task) is not None for task in tasks)
    return True


def _breakdown(usage: TokenUsage) -> dict[str, int]:
    """``usage`` as the wire's ``TokenUsageBreakdown``."""
    return {
        "inputTokens": usage.input_tokens,
        "cachedInputTokens": usage.cached_input_tokens,
        "outputTokens": usage.output_tokens,
        "reasoningOutputTokens": usage.reasoning_output_tokens,
        "totalTokens": usage.total_tokens,
    }


class GoalAttempt:
    """One attempt's goal: the thread options it needs, the run, what goes in the row."""

    def __init__(self, task: BatchTask, options: dict[str, Any]) -> None:
        self._task = task
        self._options = options
        self._goal: Goal | None = None
        self.refused = False
        """The client cannot follow a goal (its pool opts out of ``GOAL_READS``): another
        attempt would be refused the same way."""

    @classmethod
    def of(
        cls, task: BatchTask, thread: dict[str, Any], turn: dict[str, Any]
    ) -> GoalAttempt | None:
        """For a goal task, a :class:`GoalAttempt`, and ``thread`` made to suit it (persisted,
        the feature on, the approval handlers on the thread: the runtime starts its turns);
        None for an ordinary task."""
        options = goal_options(task)
        if options is None:
            return None
        thread["ephemeral"] = False
        thread["config"] = merge_options(thread.get("config") or {}, GOAL_CONFIG)
        if "handlers" in turn:
            thread["handlers"] = turn.pop("handlers")
        return cls(task, options)

    async def run(self, thread: PooledThread) -> None:
        """Run the goal on ``thread`` until it stops; leaving early (the task's deadline)
        pauses it and interrupts its live turn (``Goal``)."""
        try:
            goal = self._goal = thread.goal(self._task.prompt, **self._options)
        except ValueError:
            self.refused = True
            raise
        async with goal:
            await goal.run()

    def result(self) -> GoalResult | None:
        """What the goal produced (so far, if it was left early)."""
        return None if self._goal is None else self._goal.result()

    def status(self) -> tuple[str, dict[str, str] | None]:
        """The row's status and error for a goal that ran to its stop (:data:`GOAL_STATUSES`)."""
        result = self.result()
        last = None if result is None else result.status
        status, kind = GOAL_STATUSES.get(last, ("failed", "GoalNotOver"))
        if kind is None:
            return status, None
        turns = 0 if result is None else len(result.turns)
        budget = self._options.get("token_budget")
        what = f"the goal stopped as {last or 'cleared'} after {turns} turn(s)"
        if last == GoalStatus.budget_limited and budget is not None:
            what += f" (its token budget of {budget} was spent before it was met)"
        return status, {"type": kind, "message": what}

    def row(self) -> dict[str, Any]:
        """The row's ``final_response``, ``usage``, ``turn_id`` and ``turns``."""
        result = self.result()
        if result is None:
            return {"final_response": None, "usage": None, "turn_id": None, "turns": 0}
        usage: Any = None
        reported = next(
            (t.usage.reported for t in reversed(result.turns) if t.usage.reported), None
        )
        if reported is not None:
            usage = converter.unstructure(reported)
            usage["total"] = _breakdown(result.usage)
        return {
            "final_response": result.final_response,
            "usage": usage,
            "turn_id": result.turns[-1].id if result.turns else None,
            "turns": len(result.turns),
        }

"""The batch core: one attempt at one task, and what every executor shares.

Both executors build on this module, never on the public facade: the local runner
(:mod:`._local`) and the Ray actor and driver (:mod:`._ray`) run each task through
:func:`attempt_task`, check counts and ids with the same functions, and retry by the same
rule (:func:`should_retry`), so a result row means the same whichever ran it.

This is also the one place that sorts what goes wrong into four kinds:

- **the batch's end** (:func:`ends_batch`): an error every other task would hit too, so no
  row is written for it (a row would be a final status that a re-run skips), the running turns
  are interrupted, and the exception ends the batch; the tasks left run on a re-run once the
  cause is fixed. Missing credentials, a runtime that cannot start (a bad config), a pool
  with no member left.
- **a usage limit** is not the task's failure either: the pool pauses that account until it
  resets, and the attempt starts again on a new thread (the same attempt: it does not use one
  up) on an account with headroom, or once the first account resets. Only if every account
  stays paused longer than the pool's ``max_wait`` does the task get a ``usage_limit`` row,
  which a re-run runs again.
- **this task's final error**: the task cannot run as given (a field that is not valid, a
  ``cwd`` that is not a directory this machine can enter). Its row says ``error`` with
  ``retryable`` false: another attempt would find the same, so none is made.
- **anything else** is this task's ``failed`` or ``error`` row, tried again while attempts
  remain.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping
from typing import Any, Final

import anyio
import attrs

from .._api._dispatch import Handlers
from .._api._goal import GOAL_READS
from .._api._presets import result_only_opt_outs
from .._api._turn import TurnResult
from .._exceptions import (
    CredentialsMissingError,
    RestartsExhaustedError,
    StartupError,
    TurnFailedError,
    UsageLimitError,
    UsageLimitWaitError,
)
from .._protocol._generated.converter import converter
from ..pool._accounts import AccountPaused
from ..pool._pool import CodexPool
from ..pool._thread import PooledThread
from ._files import APPROVALS, BatchResult, BatchTask, check_task, positive_seconds
from ._goal_task import GoalAttempt

__all__ = [
    "ENDS_BATCH",
    "RECYCLE_AFTER",
    "RETRIED",
    "TaskDefaults",
    "attempt_task",
    "check_count",
    "check_cwd",
    "check_unique_ids",
    "each_task",
    "ends_batch",
    "error_of",
    "pool_defaults",
    "should_retry",
]

RETRIED: Final = frozenset({"failed", "error"})
"""Statuses that are tried again while attempts remain (unless the row is not
``retryable``)."""

ENDS_BATCH: Final = (
    CredentialsMissingError,
    StartupError,
    RestartsExhaustedError,
)
"""Errors that end a batch instead of making a task's row (see the module docstring): no
login, a runtime that cannot start, a pool whose every member was given up."""

RECYCLE_AFTER: Final = 200
"""Threads a batch pool member starts before it is recycled: ephemeral threads hold ~0.9 MB
each in the runtime until its process exits, so this bounds a member at ~200 MB of them."""


def pool_defaults(*, goals: bool = False) -> dict[str, Any]:
    """The :class:`CodexPool` options of a pool a batch starts itself (the caller's own
    ``pool_options`` win): members recycled every :data:`RECYCLE_AFTER` threads, and every
    notification a ``TurnResult`` does not need opted out, since a task only runs its turn
    to the result (8 of the 13 lines of a one-turn task; ~2.3 ms of runtime CPU each).
    ``goals``: the batch may hold a goal task, so the pool keeps what a goal reads
    (``GOAL_READS``; see ``_goal_task``)."""
    opt_outs = result_only_opt_outs()
    if goals:
        opt_outs = tuple(method for method in opt_outs if method not in GOAL_READS)
    return {"recycle_after": RECYCLE_AFTER, "opt_out_notification_methods": opt_outs}


def error_of(exc: BaseException) -> dict[str, str]:
    """A result row's ``error``: the exception's type name and message."""
    return {"type": type(exc).__name__, "message": str(exc)}


def ends_batch(exc: BaseException) -> bool:
    """Whether ``exc`` is not one task's result but the end of the batch (:data:`ENDS_BATCH`)."""
    return isinstance(exc, ENDS_BATCH)


def should_retry(result: BatchResult, attempt: int, attempts: int) -> bool:
    """Whether an executor makes another attempt after ``result``, the row of try number
    ``attempt`` of ``attempts``: for a retried status (:data:`RETRIED`) whose cause another
    attempt may get past (``result.retryable``)."""
    return result.status in RETRIED and result.retryable and attempt < attempts


def check_cwd(cwd: str | None) -> None:
    """Refuse a task's absolute ``cwd`` that is not a directory this process can enter.

    The runtime accepts any ``cwd`` at ``thread/start`` and only the commands of the turn fail
    in it (the turn itself may even complete), so the batch checks before it starts a thread,
    where the runtime runs on this machine. A relative one is left to the runtime, which
    resolves it against its own working directory.

    :raises ValueError: naming the path and what is wrong with it.
    """
    if cwd is None or not os.path.isabs(cwd):
        return
    if not os.path.exists(cwd):
        raise ValueError(f"'cwd' {cwd!r} does not exist")
    if not os.path.isdir(cwd):
        raise ValueError(f"'cwd' {cwd!r} is not a directory")
    if not os.access(cwd, os.X_OK):
        raise ValueError(f"'cwd' {cwd!r} cannot be entered (permission denied)")


def _reported_usage(outcome: TurnResult | None) -> Any:
    """The runtime's last usage report as wire JSON (``last``, ``total``, ...): the results
    file keeps the shape it had before ``TurnResult.usage`` was typed."""
    reported = outcome.usage.reported if outcome is not None else None
    return converter.unstructure(reported) if reported is not None else None


def _structured(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


@attrs.frozen(kw_only=True)
class TaskDefaults:
    """What a batch applies to every task that does not say otherwise: the settings one
    attempt needs besides the pool and the task. Frozen and picklable, so an executor can ship
    it to wherever the attempt runs (a Ray actor)."""

    timeout: float | None = attrs.field(default=None)
    model: str | None = None
    thread_options: Mapping[str, Any] = attrs.field(factory=dict)
    check_cwd: bool = True
    """Check each task's ``cwd`` here (:func:`check_cwd`): only where the runtime runs on the
    machine of the attempt (not attached to a server elsewhere, whose paths are its own)."""

    @timeout.validator
    def _check_timeout(self, attribute: attrs.Attribute[Any], value: float | None) -> None:
        if value is not None:
            positive_seconds(value, "timeout")


def _options(task: BatchTask, defaults: TaskDefaults) -> tuple[dict[str, Any], dict[str, Any]]:
    thread: dict[str, Any] = dict(defaults.thread_options)
    model = task.model or defaults.model
    if model is not None:
        thread["model"] = model
    if task.cwd is not None:
        thread["cwd"] = task.cwd
    if task.config is not None:
        thread["config"] = dict(task.config)
    turn: dict[str, Any] = {}
    if task.output_schema is not None:
        turn["output_schema"] = task.output_schema
    if task.approval is not None:
        turn["handlers"] = Handlers(approvals=APPROVALS[task.approval]())
    return thread, turn


async def attempt_task(
    pool: CodexPool,
    task: BatchTask,
    attempt: int,
    defaults: TaskDefaults,
    *,
    in_sandbox: bool = False,
) -> BatchResult:
    """One attempt at ``task`` on ``pool``: a new thread, one turn (a goal task: its goal,
    ``_goal_task``), the result row.

    A usage limit does not end the attempt: its account is paused and the task starts again
    on a new thread, once ``pool.wait_for_account()`` finds one with headroom; that wait is
    not counted against the task's ``timeout``. A ``usage_limit`` row only once every account
    stayed paused past the pool's ``max_wait``.

    Every executor runs a task through this one function (the local :class:`BatchRun`, and a
    Ray actor on its own node), so a row means the same whichever ran it. The task's deadline
    is applied here, next to the turn, so that expiry interrupts the turn on the server.
    Whatever goes wrong with this one task, from a field that is not valid (:func:`check_task`,
    :func:`check_cwd`: a row that is not ``retryable``) to a request the runtime rejects,
    becomes its ``error`` (or ``failed``) row. Cancellation from outside propagates (the turn
    is interrupted on the way out).

    ``in_sandbox``: ``pool`` is the task's own, in the sandbox its line names (the local
    executor starts it: ``_sandbox``); its ``cwd`` is then the sandbox's path, not checked
    here. A task that names a sandbox run on any other pool is refused (a row that is not
    ``retryable``): it must never run unsandboxed.

    :raises CredentialsMissingError: and the other :data:`ENDS_BATCH` errors: not this
        task's result but the batch's end (see the module docstring).
    """
    started = time.monotonic()
    thread: PooledThread | None = None
    turn_id: str | None = None
    outcome: TurnResult | None = None
    goal: GoalAttempt | None = None
    status = "error"
    error: dict[str, str] | None = None
    runnable = False
    try:
        check_task(task)
        if not in_sandbox and (task.sandbox is not None or task.container is not None):
            raise ValueError(
                "the task names a sandbox, which this executor does not start "
                "(the local run_batch does): it is not run outside it"
            )
        if defaults.check_cwd and not in_sandbox and task.cwd is not None:
            await anyio.to_thread.run_sync(check_cwd, task.cwd)
        runnable = True
        thread_options, turn_options = _options(task, defaults)
        timeout = task.timeout if task.timeout is not None else defaults.timeout
        while True:
            await pool.wait_for_account()
            goal = GoalAttempt.of(task, thread_options, turn_options)
            try:
                with anyio.move_on_after(timeout if timeout is not None else math.inf) as scope:
                    thread = await pool.thread_start(**thread_options)
                    thread._replaceable = True
                    if goal is not None:  # its turns are the runtime's; a deadline pauses it
                        await goal.run(thread)
                    else:
                        # Leaving this block before the turn completes interrupts it on the
                        # server.
                        async with thread.turn(task.prompt, **turn_options) as handle:
                            turn_id = handle.id
                            outcome = await handle.run()
            except UsageLimitWaitError:
                raise
            except (UsageLimitError, AccountPaused) as exc:
                # Its account is paused now: start again, on an account with headroom.
                if thread is not None:
                    if isinstance(exc, UsageLimitError):  # a goal's turn: not reported yet
                        pool._usage_limited(thread, exc)
                    await pool.finish_thread(thread)
                thread = turn_id = None
                continue
            break
        if scope.cancelled_caught:
            status = "timeout"
            error = {"type": "Timeout", "message": f"the task took longer than {timeout} s"}
        elif goal is not None:
            status, error = goal.status()
        elif outcome is not None:
            status = outcome.status
    except UsageLimitWaitError as exc:
        status = "usage_limit"
        error = error_of(exc)
        if exc.resets_at is not None:
            error["resets_at"] = exc.resets_at.isoformat()
    except Exception as exc:
        if ends_batch(exc):
            raise
        status = "failed" if isinstance(exc, TurnFailedError) else "error"
        error = error_of(exc)
    finally:
        if thread is not None:
            await pool.finish_thread(thread)
    final = outcome.final_response if outcome is not None else None
    row = (
        {"final_response": final, "usage": _reported_usage(outcome), "turn_id": turn_id}
        if goal is None
        else goal.row()
    )
    if goal is not None and goal.refused:
        runnable = False
    return BatchResult(
        id=task.id,
        status=status,
        structured_output=_structured(final) if task.output_schema is not None else None,
        duration_ms=round((time.monotonic() - started) * 1000),
        thread_id=thread.id if thread is not None else None,
        attempt=attempt,
        error=error,
        retryable=runnable,
        **row,
    )


def check_count(value: int | None, name: str) -> None:
    """A count the caller gave (``attempts``, ``servers``, ...): at least 1, never silently
    replaced by a default.

    :raises ValueError: naming it.
    """
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"{name} must be a whole number >= 1, not {value!r}")


def check_unique_ids(tasks: Iterable[BatchTask] | AsyncIterable[BatchTask]) -> None:
    """For a list or tuple of tasks, refuse a repeated id before anything runs (a lazy
    source is checked as it is read, by :func:`each_task`).

    :raises ValueError: naming the id.
    """
    if isinstance(tasks, (list, tuple)):
        seen: set[str] = set()
        for task in tasks:
            _note_id(seen, task)


def _note_id(seen: set[str], task: BatchTask) -> None:
    if task.id in seen:
        raise ValueError(
            f"task id {task.id!r} appears twice (a batch resumes by id: each must be unique)"
        )
    seen.add(task.id)


async def each_task(
    tasks: Iterable[BatchTask] | AsyncIterable[BatchTask],
) -> AsyncGenerator[BatchTask, None]:
    """The tasks of a list, a generator or an async iterable, one at a time and only when
    asked (a lazy source is read no further than the executor has room for).

    :raises ValueError: when a task repeats an id already read (before that task runs).
    """
    seen: set[str] = set()
    if isinstance(tasks, AsyncIterable):
        async for task in tasks:
            _note_id(seen, task)
            yield task
    else:
        for task in tasks:
            _note_id(seen, task)
            yield task

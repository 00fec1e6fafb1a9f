"""The batch core: one attempt at one task, and what every executor shares.

Both executors build on this module, never on the public facade: the local runner
(:mod:`._local`) and the Ray actor and driver (:mod:`._ray`) run each task through
:func:`attempt_task`, check counts and ids with the same functions, and retry the same
statuses, so a result row means the same whichever ran it.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterable, Iterable, Mapping
from typing import Any, Final

import anyio
import attrs

from .._api._dispatch import Handlers
from .._api._presets import result_only_opt_outs
from .._api._turn import TurnResult
from .._exceptions import TurnFailedError, UsageLimitError
from .._protocol._generated.converter import converter
from ..pool._pool import CodexPool
from ..pool._thread import PooledThread
from ._files import APPROVALS, BatchResult, BatchTask, check_task, positive_seconds

__all__ = [
    "RECYCLE_AFTER",
    "RETRIED",
    "TaskDefaults",
    "attempt_task",
    "check_count",
    "check_unique_ids",
    "each_task",
    "error_of",
    "pool_defaults",
]

RETRIED: Final = frozenset({"failed", "error"})
"""Statuses that are tried again while attempts remain."""

RECYCLE_AFTER: Final = 200
"""Threads a batch pool member starts before it is recycled: ephemeral threads hold ~0.9 MB
each in the runtime until its process exits, so this bounds a member at ~200 MB of them."""


def pool_defaults() -> dict[str, Any]:
    """The :class:`CodexPool` options of a pool a batch starts itself (the caller's own
    ``pool_options`` win): members recycled every :data:`RECYCLE_AFTER` threads, and every
    notification a ``TurnResult`` does not need opted out, since a task only runs its turn
    to the result (8 of the 13 lines of a one-turn task; ~2.3 ms of runtime CPU each)."""
    return {"recycle_after": RECYCLE_AFTER, "opt_out_notification_methods": result_only_opt_outs()}


def error_of(exc: BaseException) -> dict[str, str]:
    """A result row's ``error``: the exception's type name and message."""
    return {"type": type(exc).__name__, "message": str(exc)}


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
    pool: CodexPool, task: BatchTask, attempt: int, defaults: TaskDefaults
) -> BatchResult:
    """One attempt at ``task`` on ``pool``: a new thread, one turn, the result row.

    Every executor runs a task through this one function (the local :class:`BatchRun`, and a
    Ray actor on its own node), so a row means the same whichever ran it. The task's deadline
    is applied here, next to the turn, so that expiry interrupts the turn on the server.
    Whatever goes wrong with this one task, from a field that is not valid (:func:`check_task`)
    to a request the runtime rejects, becomes its ``error`` (or ``failed``) row. Cancellation
    from outside propagates (the turn is interrupted on the way out).

    :raises UsageLimitError: the account's usage limit: not this task's result but the
        batch's end (see the module docstring).
    """
    started = time.monotonic()
    thread: PooledThread | None = None
    turn_id: str | None = None
    outcome: TurnResult | None = None
    status = "error"
    error: dict[str, str] | None = None
    try:
        check_task(task)
        thread_options, turn_options = _options(task, defaults)
        timeout = task.timeout if task.timeout is not None else defaults.timeout
        with anyio.move_on_after(timeout if timeout is not None else float("inf")) as scope:
            thread = await pool.thread_start(**thread_options)
            # Leaving this block before the turn completes interrupts it on the server.
            async with thread.turn(task.prompt, **turn_options) as handle:
                turn_id = handle.id
                outcome = await handle.run()
        if scope.cancelled_caught:
            status = "timeout"
            error = {"type": "Timeout", "message": f"the task took longer than {timeout} s"}
        elif outcome is not None:
            status = outcome.status
    except UsageLimitError:
        raise
    except TurnFailedError as exc:
        status, error = "failed", error_of(exc)
    except Exception as exc:
        status, error = "error", error_of(exc)
    finally:
        if thread is not None:
            await pool.finish_thread(thread)
    final = outcome.final_response if outcome is not None else None
    return BatchResult(
        id=task.id,
        status=status,
        final_response=final,
        structured_output=_structured(final) if task.output_schema is not None else None,
        usage=_reported_usage(outcome),
        duration_ms=round((time.monotonic() - started) * 1000),
        thread_id=thread.id if thread is not None else None,
        turn_id=turn_id,
        attempt=attempt,
        error=error,
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

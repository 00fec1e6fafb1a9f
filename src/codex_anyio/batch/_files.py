"""The batch file formats: :class:`BatchTask` (a tasks-file line), :class:`BatchResult` (a
results-file line), reading tasks files, and the checks that make one bad line an error naming
that line instead of a batch that dies half-way (``_batch_results`` owns the results file).

A task is checked where it enters: :meth:`BatchTask.from_json` refuses a tasks-file line that
is not a valid task (:class:`TaskFileError` naming the line, before anything runs), and
:func:`check_task` is the same check for a task built in Python, which the executors apply to
each task as they run it (a bad one gets its own ``error`` row).

Sharding (``--shard i/N``, for SLURM arrays and Kubernetes indexed jobs) is file logic too: a
task belongs to shard ``sha256(id) mod N``, a stable hash (Python's ``hash()`` is salted per
process), so N independent jobs reading the same file split it between them with no engine
and no coordination, and each id lands in exactly one shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
from collections.abc import Mapping
from datetime import datetime
from typing import Any, Final

import attrs

from .._api._dispatch import ApprovalPolicy
from .._exceptions import TaskFileError
from ._sandbox import check_task_sandbox

__all__ = [
    "APPROVALS",
    "GOAL_KEYS",
    "RUN_AGAIN",
    "STATUSES",
    "BatchResult",
    "BatchTask",
    "TaskFileError",
    "check_goal",
    "check_task",
    "goal_options",
    "parse_shard",
    "positive_seconds",
    "read_tasks",
    "shard_of",
]

logger = logging.getLogger("codex_anyio.batch")

STATUSES: Final = ("completed", "interrupted", "failed", "timeout", "error", "usage_limit")
"""Every status a :class:`BatchResult` can have. ``usage_limit``: every account stayed paused
by its usage limit longer than the pool's ``max_wait``; a re-run runs such a task again."""

RUN_AGAIN: Final = frozenset({"usage_limit"})
"""Statuses a re-run always runs again, as if the task had no row: nothing about the task
decided them, only the accounts' limits at the time."""

APPROVALS: Final = {"decline": ApprovalPolicy.decline_all, "accept": ApprovalPolicy.accept_all}
"""A task's ``approval`` choice: how the client answers the runtime's approval requests."""


def json_type(value: object) -> str:
    """What ``value`` is, in JSON's words (for messages about a file's content)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, Mapping):
        return "an object"
    if isinstance(value, (list, tuple)):
        return "an array"
    return type(value).__name__


def positive_seconds(value: object, what: str) -> float:
    """``value`` as seconds, if it is a finite number above zero.

    A deadline of 0, a negative one or NaN would end every task at once as ``timeout`` (a
    final status: a re-run skips them all), so they are refused where they are given.

    :raises ValueError: for anything else, naming ``what``.
    """
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        seconds = float(value)
        if math.isfinite(seconds) and seconds > 0:
            return seconds
    raise ValueError(f"{what} must be a positive number of seconds, not {value!r}")


def _is_text(value: str) -> bool:
    """Whether ``value`` is Unicode that can be written (a JSON ``"\\ud800"`` escape gives a
    lone surrogate, which no UTF-8 file can hold and no hash can take)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _optional(task: BatchTask, name: str, kind: type | tuple[type, ...], what: str) -> None:
    value = getattr(task, name)
    if value is not None and not isinstance(value, kind):
        raise ValueError(f"'{name}' must be {what}, not {json_type(value)}")


def check_task(task: BatchTask) -> None:
    """Check the fields of a task (what :meth:`BatchTask.from_json` checks for a line).

    :raises ValueError: naming the first field that is not valid.
    """
    if not isinstance(task.id, str) or not task.id:
        raise ValueError(f"'id' must be a non-empty string, not {task.id!r}")
    if not _is_text(task.id):
        raise ValueError(f"'id' {task.id!r} is not valid Unicode text (a lone surrogate)")
    if not isinstance(task.prompt, (str, Mapping, list, tuple)):
        # ValueError for a wrong type, here and below: a task's fields are data (a line of a
        # file), and one error class is what callers catch for any bad field.
        raise ValueError(  # noqa: TRY004
            f"'prompt' must be a string or input items, not {json_type(task.prompt)}"
        )
    _optional(task, "cwd", str, "a string")
    _optional(task, "model", str, "a string")
    _optional(task, "output_schema", Mapping, "a JSON Schema object")
    _optional(task, "config", Mapping, "an object of config overrides")
    if task.approval is not None and task.approval not in APPROVALS:
        raise ValueError(f"'approval' must be one of {list(APPROVALS)}, not {task.approval!r}")
    if task.timeout is not None:
        positive_seconds(task.timeout, "'timeout'")
    check_goal(task)
    check_task_sandbox(task.sandbox, task.container)


GOAL_KEYS: Final = frozenset({"token_budget"})
"""What a task's ``goal`` object may hold: the ``run_goal`` keywords besides the objective
(which is the task's ``prompt``)."""


def goal_options(task: BatchTask) -> dict[str, Any] | None:
    """The ``run_goal`` keywords of a goal task (``{}`` for ``"goal": true``); None for an
    ordinary task (no ``goal``, or ``"goal": false``). The task must be valid."""
    if task.goal is None or task.goal is False:
        return None
    return {} if task.goal is True else dict(task.goal)


def check_goal(task: BatchTask) -> None:
    """Check a task's ``goal``: ``true``, or an object of :data:`GOAL_KEYS` (a positive whole
    ``token_budget``), with a string ``prompt`` (the objective) and no ``output_schema`` (the
    runtime starts a goal's turns itself, and takes no schema for them).

    :raises ValueError: naming what is not valid.
    """
    goal = task.goal
    if goal is None or goal is False:
        return
    if goal is not True and not isinstance(goal, Mapping):
        raise ValueError(f"'goal' must be true or an object, not {json_type(goal)}")
    if isinstance(goal, Mapping):
        if "objective" in goal:
            raise ValueError("a goal's objective is the task's 'prompt', not a 'goal' field")
        unknown = sorted(str(key) for key in set(goal) - GOAL_KEYS)
        if unknown:
            raise ValueError(
                f"'goal' has unknown field(s) {unknown} (it takes {sorted(GOAL_KEYS)})"
            )
        budget = goal.get("token_budget")
        if budget is not None and (
            isinstance(budget, bool) or not isinstance(budget, int) or budget < 1
        ):
            raise ValueError(f"'goal.token_budget' must be a whole number >= 1, not {budget!r}")
    if not isinstance(task.prompt, str) or not task.prompt:
        raise ValueError("a goal task's 'prompt' is its objective: a non-empty string")
    if task.output_schema is not None:
        raise ValueError("'output_schema' is for one turn: a goal task takes none")


@attrs.frozen(kw_only=True)
class BatchTask:
    """One task: a prompt, run as one turn on a new thread.

    :param id: unique within a batch; the key for resuming.
    :param prompt: the input (a string, or input items as ``thread.turn`` takes them).
    :param cwd: working directory of the thread.
    :param model: model for this task (over the batch's).
    :param output_schema: JSON Schema of the final message; the parsed object is the
        result's ``structured_output``.
    :param config: runtime config overrides for this task's thread (``{"features": ...}``).
    :param approval: ``"decline"`` (default) or ``"accept"``: how approval requests are
        answered. ``accept`` lets the model run anything the sandbox asks about.
    :param timeout: seconds for this task (over the batch's); on expiry the turn is
        interrupted and the status is ``timeout``.
    :param sandbox: run this task's runtime with this command (over the batch's sandbox): a
        template string, split like a shell line, or a list of arguments; ``{id}``, ``{cwd}``,
        ``{runtime}`` and ``{codex_home}`` are filled in per argument (see ``codex-anyio
        batch --sandbox``).
    :param container: run this task's runtime in a new container of this image (over the
        batch's sandbox), removed afterwards (see ``codex-anyio batch --container``).
    :param goal: run the task as a goal (``thread.run_goal``) instead of one turn: ``True``,
        or ``{"token_budget": N}``; the ``prompt`` (a string) is the objective. The runtime
        runs turns until the goal is met (``completed``), its budget is spent
        (``interrupted``), or it is blocked (``failed``); the deadline pauses it (``timeout``).
    """

    id: str
    prompt: Any
    cwd: str | None = None
    model: str | None = None
    output_schema: Any = None
    config: Mapping[str, Any] | None = None
    approval: str | None = None
    timeout: float | None = None
    sandbox: Any = None
    container: str | None = None
    goal: Any = None

    @classmethod
    def from_json(cls, data: Any) -> BatchTask:
        """From a tasks-file value: an object with ``id`` (a string, or an integer taken as
        its decimal string), ``prompt`` (or ``input``), and the optional fields above.

        :raises TaskFileError: for anything else (the message names the task and the field).
        """
        if not isinstance(data, Mapping):
            raise TaskFileError(f"a task is a JSON object, not {json_type(data)}")
        if "id" not in data:
            raise TaskFileError("a task needs an 'id'")
        raw_id = data["id"]
        if isinstance(raw_id, bool) or not isinstance(raw_id, (str, int)):
            raise TaskFileError(f"a task's 'id' is a string or an integer, not {json_type(raw_id)}")
        task_id = str(raw_id)
        prompt = data.get("prompt", data.get("input"))
        if prompt is None:
            raise TaskFileError(f"task {task_id!r} needs a 'prompt' (or 'input')")
        unknown = set(data) - {f.name for f in attrs.fields(cls)} - {"input"}
        if unknown:
            raise TaskFileError(f"task {task_id!r}: unknown field(s) {sorted(unknown)}")
        try:
            timeout = data.get("timeout")
            task = cls(
                id=task_id,
                prompt=prompt,
                cwd=data.get("cwd"),
                model=data.get("model"),
                output_schema=data.get("output_schema"),
                config=data.get("config"),
                approval=data.get("approval"),
                timeout=positive_seconds(timeout, "'timeout'") if timeout is not None else None,
                sandbox=data.get("sandbox"),
                container=data.get("container"),
                goal=data.get("goal"),
            )
            check_task(task)
            # Any text of the task, not only its id: the prompt goes to the runtime as UTF-8.
            json.dumps(dict(data), ensure_ascii=False).encode("utf-8")
        except UnicodeEncodeError:
            raise TaskFileError(
                f"task {task_id!r} holds text that is not valid Unicode (a lone surrogate)"
            ) from None
        except ValueError as exc:
            raise TaskFileError(f"task {task_id!r}: {exc}") from None
        return task


@attrs.frozen(kw_only=True)
class BatchResult:
    """What one task came to; one line of the results file (:meth:`to_json`)."""

    id: str
    status: str
    final_response: str | None = None
    structured_output: Any = None
    usage: Any = None
    """The turn's token usage (``ThreadTokenUsage`` as JSON: ``last``, ``total`` ...)."""
    duration_ms: int = 0
    thread_id: str | None = None
    turn_id: str | None = None
    attempt: int = 1
    error: Mapping[str, str] | None = None
    """``{"type": ..., "message": ...}`` for ``failed``, ``timeout``, ``error`` and
    ``usage_limit`` (whose ``resets_at`` says when the first account resumes)."""
    turns: int | None = None
    """How many turns a goal task's goal ran (None for an ordinary task: one turn). Written
    to the file only for a goal task."""
    retryable: bool = True
    """False when another attempt cannot get past the error as things stand (the task is not
    valid, its ``cwd`` is not a directory): the executors make none. Written to the file only
    when false. A re-run with the status in its retry set runs the task again all the same
    (once the cause is fixed)."""

    @property
    def resets_at(self) -> datetime | None:
        """When a ``usage_limit`` row's first account resumes (its error's ``resets_at``, an
        aware datetime), or None if the row names no such time."""
        text = (self.error or {}).get("resets_at")
        try:
            return datetime.fromisoformat(text) if text else None
        except ValueError:
            return None

    @property
    def total_tokens(self) -> int:
        try:
            return int(self.usage["total"]["totalTokens"])
        except (TypeError, KeyError, ValueError):
            return 0

    def to_json(self) -> dict[str, Any]:
        data = attrs.asdict(self, recurse=False)
        if data["structured_output"] is None:
            del data["structured_output"]
        if data["turns"] is None:
            del data["turns"]
        if data["retryable"]:
            del data["retryable"]
        return data

    @classmethod
    def from_json(cls, data: Any) -> BatchResult:
        """From a results-file value: an object with a string ``id`` and a known ``status``
        (fields this version does not know are ignored).

        :raises ValueError: for anything else (not a result row).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a result row is a JSON object, not {json_type(data)}")  # noqa: TRY004
        task_id = data.get("id")
        if not isinstance(task_id, str):
            raise ValueError(f"a result row's 'id' is a string, not {json_type(task_id)}")  # noqa: TRY004
        if data.get("status") not in STATUSES:
            raise ValueError(f"a result row's 'status' is one of {list(STATUSES)}")
        names = {f.name for f in attrs.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def shard_of(task_id: str, count: int) -> int:
    """The shard (``0 .. count-1``) that ``task_id`` belongs to: the same on every machine."""
    if count < 1:
        raise ValueError("the shard count must be >= 1")
    digest = hashlib.sha256(task_id.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") % count


def parse_shard(text: str) -> tuple[int, int]:
    """``"i/N"`` (``0 <= i < N``; SLURM's ``$SLURM_ARRAY_TASK_ID`` with ``--array=0-(N-1)``,
    Kubernetes' ``$JOB_COMPLETION_INDEX``) as ``(i, N)``.

    :raises ValueError: for anything else.
    """
    index, slash, count = text.partition("/")
    try:
        shard = (int(index), int(count))
    except ValueError:
        shard = (-1, 0)
    if not slash or not 0 <= shard[0] < shard[1]:
        raise ValueError(f"a shard is 'i/N' with 0 <= i < N, not {text!r}")
    return shard


def read_tasks(
    path: str | os.PathLike[str], *, shard: tuple[int, int] | None = None
) -> list[BatchTask]:
    """Every task of a JSONL file (blank lines skipped); with ``shard=(i, N)``, only those
    whose id falls in shard ``i`` of ``N`` (see :func:`shard_of`).

    The whole file is checked whatever the shard, so that all shards agree on whether it is
    valid.

    :raises TaskFileError: for a file that cannot be read, a line that is not a task (the
        message is ``path:line: reason``), or a repeated id.
    """
    tasks: list[BatchTask] = []
    seen: set[str] = set()
    try:
        with open(path, "rb") as file:
            for number, line in enumerate(file, 1):
                if not line.strip():
                    continue
                try:
                    task = BatchTask.from_json(json.loads(line))
                except ValueError as exc:  # TaskFileError, bad JSON, bad UTF-8
                    raise TaskFileError(f"{os.fspath(path)}:{number}: {exc}") from None
                if task.id in seen:
                    raise TaskFileError(f"{os.fspath(path)}:{number}: id {task.id!r} appears twice")
                seen.add(task.id)
                tasks.append(task)
    except OSError as exc:
        raise TaskFileError(
            f"cannot read the tasks file {os.fspath(path)}: {exc.strerror or exc}"
        ) from exc
    if shard is not None:
        index, count = shard
        tasks = [task for task in tasks if shard_of(task.id, count) == index]
    return tasks

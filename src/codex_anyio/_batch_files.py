"""The batch file formats: :class:`BatchTask` (a tasks-file line), :class:`BatchResult` (a
results-file line), and reading and appending them so that a run can resume.

The results file is the batch's only state. :class:`ResultWriter` appends one JSON line per
result and flushes it, so a run killed at any point loses at most the line being written;
:func:`read_results` ignores such a truncated last line (and can cut it off, so the next
append starts on a line of its own). Ids already present are what a re-run skips.

Sharding (``--shard i/N``, for SLURM arrays and Kubernetes indexed jobs) is file logic too: a
task belongs to shard ``sha256(id) mod N``, a stable hash (Python's ``hash()`` is salted per
process), so N independent jobs reading the same file split it between them with no engine
and no coordination, and each id lands in exactly one shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import IO, Any, Final

import attrs

from ._dispatch import ApprovalPolicy

__all__ = [
    "APPROVALS",
    "STATUSES",
    "BatchResult",
    "BatchTask",
    "ResultWriter",
    "TaskFileError",
    "parse_shard",
    "read_results",
    "read_tasks",
    "shard_of",
]

logger = logging.getLogger("codex_anyio.batch")

STATUSES: Final = ("completed", "interrupted", "failed", "timeout", "error")
"""Every status a :class:`BatchResult` can have."""

APPROVALS: Final = {"decline": ApprovalPolicy.decline_all, "accept": ApprovalPolicy.accept_all}
"""A task's ``approval`` choice: how the client answers the runtime's approval requests."""


class TaskFileError(ValueError):
    """A tasks file line that is not a valid task (the message names the line)."""


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
    """

    id: str
    prompt: Any
    cwd: str | None = None
    model: str | None = None
    output_schema: Any = None
    config: Mapping[str, Any] | None = None
    approval: str | None = None
    timeout: float | None = None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchTask:
        """From a tasks-file object: ``id``, ``prompt`` (or ``input``), and the optional
        fields above."""
        if "id" not in data:
            raise TaskFileError("a task needs an 'id'")
        prompt = data.get("prompt", data.get("input"))
        if prompt is None:
            raise TaskFileError(f"task {data['id']!r} needs a 'prompt' (or 'input')")
        unknown = set(data) - {f.name for f in attrs.fields(cls)} - {"input"}
        if unknown:
            raise TaskFileError(f"task {data['id']!r}: unknown field(s) {sorted(unknown)}")
        approval = data.get("approval")
        if approval is not None and approval not in APPROVALS:
            raise TaskFileError(f"task {data['id']!r}: approval must be one of {list(APPROVALS)}")
        timeout = data.get("timeout")
        return cls(
            id=str(data["id"]),
            prompt=prompt,
            cwd=data.get("cwd"),
            model=data.get("model"),
            output_schema=data.get("output_schema"),
            config=data.get("config"),
            approval=approval,
            timeout=float(timeout) if timeout is not None else None,
        )


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
    """``{"type": ..., "message": ...}`` for ``failed`` and ``error``."""

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
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BatchResult:
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

    :raises TaskFileError: for a line that is not a task, or a repeated id.
    """
    tasks: list[BatchTask] = []
    seen: set[str] = set()
    with open(path, encoding="utf-8") as file:
        for number, line in enumerate(file, 1):
            if not line.strip():
                continue
            try:
                task = BatchTask.from_json(json.loads(line))
            except (ValueError, TypeError, AttributeError) as exc:
                raise TaskFileError(f"{path}:{number}: {exc}") from None
            if task.id in seen:
                raise TaskFileError(f"{path}:{number}: id {task.id!r} appears twice")
            seen.add(task.id)
            tasks.append(task)
    if shard is not None:
        index, count = shard
        tasks = [task for task in tasks if shard_of(task.id, count) == index]
    return tasks


def read_results(path: str | os.PathLike[str], *, repair: bool = False) -> dict[str, BatchResult]:
    """The results already in a JSONL results file, by id (missing file: none).

    A last line without its newline is what a run killed mid-write leaves: it is ignored, and
    with ``repair=True`` cut off the file, so the next append starts on a line of its own. A
    bad line elsewhere is skipped with a warning.
    """
    file = Path(path)
    if not file.exists():
        return {}
    data = file.read_bytes()
    complete = data.rfind(b"\n") + 1
    if complete < len(data):
        logger.warning("%s: ignoring a truncated last line (%d bytes)", path, len(data) - complete)
        if repair:
            with open(file, "r+b") as handle:
                handle.truncate(complete)
    results: dict[str, BatchResult] = {}
    for number, line in enumerate(data[:complete].splitlines(), 1):
        if not line.strip():
            continue
        try:
            result = BatchResult.from_json(json.loads(line))
        except (ValueError, TypeError) as exc:
            logger.warning("%s:%d: skipping a bad result line (%s)", path, number, exc)
            continue
        results[result.id] = result
    return results


class ResultWriter:
    """Appends results to a JSONL file, one flushed line each (a crash loses at most the
    line being written, which :func:`read_results` then ignores)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._file: IO[str] | None = None

    def __enter__(self) -> ResultWriter:
        read_results(self.path, repair=True)
        self._file = open(self.path, "a", encoding="utf-8")
        return self

    def write(self, result: BatchResult) -> None:
        assert self._file is not None, "use 'with ResultWriter(path) as writer'"
        self._file.write(json.dumps(result.to_json(), ensure_ascii=False) + "\n")
        self._file.flush()

    def __exit__(self, *exc_info: object) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None

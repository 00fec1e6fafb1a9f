"""Run many one-turn tasks through a :class:`~codex_anyio.CodexPool`, resumably.

The Python API behind ``codex-anyio batch``, for harnesses that embed it::

    from codex_anyio.batch import BatchTask, run_batch

    tasks = [BatchTask(id=str(i), prompt=f"Solve {i}") for i in range(1000)]
    async with run_batch(tasks, concurrency=16, timeout=120) as results:
        async for result in results:          # in completion order
            print(result.id, result.status, result.final_response)

Each task gets a fresh (lean, by default) thread and one turn. A result's ``status`` is the
turn's (``completed``, ``interrupted``, ``failed``), ``timeout`` when the task's deadline
interrupted its turn, or ``error`` when something else failed (the runtime died under it, a
request was rejected); ``failed`` and ``error`` are retried up to ``attempts`` times.
Leaving the ``async with`` early (``break``, Ctrl-C, cancellation) interrupts every running
turn on the server (shielded, bounded) and produces no result for them, so they run again on
the next attempt.

Resuming is a property of the files: :class:`ResultWriter` appends one JSON line per result
and flushes it; :func:`read_results` reads a results file back, tolerating a truncated last
line (a run killed mid-write), so ``pending = [t for t in tasks if t.id not in done]``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, AsyncExitStack, asynccontextmanager
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Final

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._config import CodexConfig
from ._dispatch import ApprovalPolicy, Handlers
from ._exceptions import TurnFailedError
from ._generated.converter import converter
from ._groups import collapse_groups
from ._pool import DEFAULT_MAX_TURNS, CodexPool, PooledThread
from ._turn import TurnResult

__all__ = [
    "STATUSES",
    "BatchResult",
    "BatchRun",
    "BatchTask",
    "ResultWriter",
    "read_results",
    "read_tasks",
    "run_batch",
]

logger = logging.getLogger("codex_anyio.batch")

STATUSES: Final = ("completed", "interrupted", "failed", "timeout", "error")
"""Every status a :class:`BatchResult` can have."""

RETRIED: Final = frozenset({"failed", "error"})
"""Statuses that are tried again while attempts remain."""

RECYCLE_AFTER: Final = 200
"""Threads a batch pool member starts before it is recycled: ephemeral threads hold ~0.9 MB
each in the runtime until its process exits, so this bounds a member at ~200 MB of them."""

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


# -- files -------------------------------------------------------------------------------------


def read_tasks(path: str | os.PathLike[str]) -> list[BatchTask]:
    """Every task of a JSONL file (blank lines skipped).

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


# -- running -----------------------------------------------------------------------------------


def _error(exc: BaseException) -> dict[str, str]:
    return {"type": type(exc).__name__, "message": str(exc)}


def _structured(text: str | None) -> Any:
    if text is None:
        return None
    try:
        return json.loads(text)
    except ValueError:
        return None


class BatchRun:
    """``async with run_batch(...) as results``: the pool, the tasks, and a stream of results.

    The results stream is bounded (``concurrency`` results): a consumer that stops reading
    pauses the batch rather than letting results pile up.
    """

    def __init__(
        self,
        tasks: Iterable[BatchTask] | AsyncIterable[BatchTask],
        *,
        pool: CodexPool | None,
        servers: int | None,
        concurrency: int,
        timeout: float | None,
        attempts: int,
        model: str | None,
        codex_config: CodexConfig | None,
        thread_options: Mapping[str, Any],
        pool_options: Mapping[str, Any],
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be >= 1")
        if concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        self._tasks = tasks
        self._pool = pool
        self._servers = servers
        self.concurrency = concurrency
        self._timeout = timeout
        self._attempts = attempts
        self._model = model
        self._codex_config = codex_config
        self._thread_options = dict(thread_options)
        self._pool_options = dict(pool_options)
        self.running = 0
        """Tasks in flight right now (for progress displays)."""
        self._cm: AbstractAsyncContextManager[MemoryObjectReceiveStream[BatchResult]] | None = None

    async def __aenter__(self) -> MemoryObjectReceiveStream[BatchResult]:
        cm = self._lifespan()
        with collapse_groups():
            stream = await cm.__aenter__()
        self._cm = cm
        return stream

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        cm, self._cm = self._cm, None
        assert cm is not None
        with collapse_groups():
            return await cm.__aexit__(exc_type, exc, tb)

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[MemoryObjectReceiveStream[BatchResult]]:
        async with AsyncExitStack() as stack:
            pool = self._pool
            if pool is None:
                options: dict[str, Any] = {
                    "max_turns": self.concurrency,
                    "recycle_after": RECYCLE_AFTER,
                    **self._pool_options,
                }
                if self._codex_config is not None:
                    options.setdefault("config", self._codex_config)
                pool = await stack.enter_async_context(CodexPool(self._servers, **options))
            send, receive = anyio.create_memory_object_stream[BatchResult](self.concurrency)
            stack.enter_context(receive)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._feed, pool, send)
                try:
                    yield receive
                finally:
                    tg.cancel_scope.cancel()

    async def _feed(self, pool: CodexPool, send: MemoryObjectSendStream[BatchResult]) -> None:
        slots = anyio.Semaphore(self.concurrency)
        async with send, anyio.create_task_group() as tg:
            if isinstance(self._tasks, AsyncIterable):
                async for task in self._tasks:
                    await slots.acquire()
                    tg.start_soon(self._run_task, pool, task, send, slots)
            else:
                for task in self._tasks:
                    await slots.acquire()
                    tg.start_soon(self._run_task, pool, task, send, slots)

    async def _run_task(
        self,
        pool: CodexPool,
        task: BatchTask,
        send: MemoryObjectSendStream[BatchResult],
        slots: anyio.Semaphore,
    ) -> None:
        self.running += 1
        try:
            for attempt in range(1, self._attempts + 1):
                result = await self._attempt(pool, task, attempt)
                if result.status not in RETRIED:
                    break
            await send.send(result)
        finally:
            self.running -= 1
            slots.release()

    def _options(self, task: BatchTask) -> tuple[dict[str, Any], dict[str, Any]]:
        thread: dict[str, Any] = dict(self._thread_options)
        model = task.model or self._model
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

    async def _attempt(self, pool: CodexPool, task: BatchTask, attempt: int) -> BatchResult:
        thread_options, turn_options = self._options(task)
        timeout = task.timeout if task.timeout is not None else self._timeout
        started = time.monotonic()
        thread: PooledThread | None = None
        turn_id: str | None = None
        outcome: TurnResult | None = None
        status = "error"
        error: dict[str, str] | None = None
        try:
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
        except TurnFailedError as exc:
            status, error = "failed", _error(exc)
        except Exception as exc:
            status, error = "error", _error(exc)
        finally:
            if thread is not None:
                await pool.finish_thread(thread)
        final = outcome.final_response if outcome is not None else None
        return BatchResult(
            id=task.id,
            status=status,
            final_response=final,
            structured_output=_structured(final) if task.output_schema is not None else None,
            usage=converter.unstructure(outcome.usage) if outcome and outcome.usage else None,
            duration_ms=round((time.monotonic() - started) * 1000),
            thread_id=thread.id if thread is not None else None,
            turn_id=turn_id,
            attempt=attempt,
            error=error,
        )


def run_batch(
    tasks: Iterable[BatchTask] | AsyncIterable[BatchTask],
    *,
    pool: CodexPool | None = None,
    servers: int | None = None,
    concurrency: int | None = None,
    timeout: float | None = None,
    attempts: int = 1,
    model: str | None = None,
    codex_config: CodexConfig | None = None,
    thread_options: Mapping[str, Any] | None = None,
    pool_options: Mapping[str, Any] | None = None,
) -> BatchRun:
    """Run ``tasks``; ``async with run_batch(tasks) as results: async for r in results``.

    :param pool: a running :class:`CodexPool` to use; default: one started for the batch
        (``servers`` processes, lean threads, members recycled every
        :data:`RECYCLE_AFTER` threads).
    :param concurrency: tasks in flight at once (default: 8 per CPU; the pool's turn limit).
    :param timeout: seconds per task (a task's own ``timeout`` wins); the turn is interrupted
        and the result's status is ``timeout``.
    :param attempts: tries per task while the status is ``failed`` or ``error``.
    :param model: model for tasks that name none.
    :param codex_config: how to launch each member of the batch's own pool.
    :param thread_options: ``thread_start`` keywords for every task (over the pool's
        ``thread_defaults``).
    :param pool_options: more :class:`CodexPool` keywords for the batch's own pool.
    """
    return BatchRun(
        tasks,
        pool=pool,
        servers=servers,
        concurrency=concurrency or DEFAULT_MAX_TURNS,
        timeout=timeout,
        attempts=attempts,
        model=model,
        codex_config=codex_config,
        thread_options=thread_options or {},
        pool_options=pool_options or {},
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])

"""Run many one-turn tasks through a :class:`~codex_anyio.CodexPool`, resumably.

The Python API behind ``codex-anyio batch``, for harnesses that embed it::

    from codex_anyio.batch import BatchTask, run_batch

    tasks = [BatchTask(id=str(i), prompt=f"Solve {i}") for i in range(1000)]
    async with run_batch(tasks, concurrency=16, timeout=120) as results:
        async for result in results:          # in completion order
            print(result.id, result.status, result.final_response)

Each task gets a fresh (lean, by default) thread and one turn. A result's ``status`` is the
turn's (``completed``, ``interrupted``, ``failed``), ``timeout`` when the task's deadline
interrupted its turn, or ``error`` when something else failed (the task is not valid, the
runtime died under it, a request was rejected); ``failed`` and ``error`` are retried up to
``attempts`` times. One task that fails never ends the batch: it gets its own row.

Two things do end it, as one exception out of the ``async with``: a usage limit
(:class:`~codex_anyio.UsageLimitError`: every other task would hit it too, and a row written
for each would be a final failure that a re-run skips; so no row is made, the running turns
are interrupted, and the tasks left run on a re-run after ``resets_at``), and a repeated task
id (``ValueError``: the id is what a results file resumes by; a list is checked before anything
runs). Leaving the ``async with`` early (``break``, Ctrl-C, cancellation) likewise interrupts
every running turn on the server (shielded, bounded) and produces no result for them, so they
run again on the next attempt.

Resuming is a property of the files (``_batch_results``, re-exported here): :class:`ResultWriter`
appends one whole row per result under the file's lock; :func:`read_results` reads a results
file back, tolerating a row cut short (a run killed mid-write), so
``pending = [t for t in tasks if t.id not in done]``.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import (
    AsyncGenerator,
    AsyncIterable,
    AsyncIterator,
    Iterable,
    Mapping,
    Sequence,
)
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from typing import TYPE_CHECKING, Any, Final

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._api._dispatch import Handlers
from .._api._turn import TurnResult
from .._exceptions import (
    ResultsFileError,
    ResultsWriteError,
    TaskFileError,
    TurnFailedError,
    UsageLimitError,
)
from .._groups import Lifespan
from .._protocol._generated.converter import converter
from .._wire._config import CodexConfig
from ..pool._pool import DEFAULT_MAX_TURNS, CodexPool
from ..pool._thread import PooledThread
from ._files import (
    APPROVALS,
    STATUSES,
    BatchResult,
    BatchTask,
    check_task,
    parse_shard,
    positive_seconds,
    read_tasks,
    shard_of,
)
from ._results import ResultWriter, read_results

if TYPE_CHECKING:  # Ray is optional: its executor is imported when first asked for
    from ._ray._driver import ActorStatistics, RayBatchRun

__all__ = [
    "STATUSES",
    "ActorStatistics",
    "BatchResult",
    "BatchRun",
    "BatchTask",
    "RayBatchRun",
    "ResultWriter",
    "ResultsFileError",
    "ResultsWriteError",
    "TaskFileError",
    "check_task",
    "parse_shard",
    "percentile",
    "read_results",
    "read_tasks",
    "run_batch",
    "run_batch_on_ray",
    "shard_of",
]

logger = logging.getLogger("codex_anyio.batch")

RETRIED: Final = frozenset({"failed", "error"})
"""Statuses that are tried again while attempts remain."""

RECYCLE_AFTER: Final = 200
"""Threads a batch pool member starts before it is recycled: ephemeral threads hold ~0.9 MB
each in the runtime until its process exits, so this bounds a member at ~200 MB of them."""


# -- running -----------------------------------------------------------------------------------


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


class BatchRun(Lifespan[MemoryObjectReceiveStream[BatchResult]]):
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
        check_count(attempts, "attempts")
        check_count(concurrency, "concurrency")
        check_count(servers, "servers")
        check_unique_ids(tasks)
        self._tasks = tasks
        self._pool = pool
        self._servers = servers
        self.concurrency = concurrency
        self._defaults = TaskDefaults(
            timeout=timeout, model=model, thread_options=dict(thread_options)
        )
        self._attempts = attempts
        self._codex_config = codex_config
        self._pool_options = dict(pool_options)
        self.running = 0
        """Tasks in flight right now (for progress displays)."""

    async def __aenter__(self) -> MemoryObjectReceiveStream[BatchResult]:
        return await self._enter_lifespan()

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
        # The source is closed when the feed ends, also half-way (a usage limit, a repeated
        # id, cancellation): its own cleanup runs here, not in the garbage collector.
        async with (
            send,
            anyio.create_task_group() as tg,
            aclosing(each_task(self._tasks)) as source,
        ):
            async for task in source:
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

    async def _attempt(self, pool: CodexPool, task: BatchTask, attempt: int) -> BatchResult:
        return await attempt_task(pool, task, attempt, self._defaults)


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
    :raises ValueError: for a count below 1, a timeout that is not a positive number of
        seconds, or (a list of tasks) a repeated id.
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
        concurrency=DEFAULT_MAX_TURNS if concurrency is None else concurrency,
        timeout=timeout,
        attempts=attempts,
        model=model,
        codex_config=codex_config,
        thread_options=thread_options or {},
        pool_options=pool_options or {},
    )


def run_batch_on_ray(
    tasks: Iterable[BatchTask] | AsyncIterable[BatchTask],
    *,
    address: str | None = None,
    actors: int | None = None,
    slots: int | None = None,
    servers: int | None = None,
    timeout: float | None = None,
    attempts: int = 1,
    model: str | None = None,
    codex_config: CodexConfig | None = None,
    thread_options: Mapping[str, Any] | None = None,
    pool_options: Mapping[str, Any] | None = None,
    max_restarts: int = 3,
    watchdog_grace: float | None = None,
    init_options: Mapping[str, Any] | None = None,
    actor_options: Mapping[str, Any] | None = None,
) -> RayBatchRun:
    """:func:`run_batch` with the pools on Ray actors: the same results, from a cluster.

    ``async with run_batch_on_ray(tasks, address="auto") as results: async for r in results``.
    One async actor per node (per node with a ``codex_slots`` resource, if any has one) hosts
    a :class:`CodexPool`; each keeps as many tasks in flight as it has slots, and the next task
    goes to the first actor that frees one. Needs ``pip install 'codex-anyio[ray]'``; the
    driver may run on asyncio or Trio. See ``_batch_ray`` for deadlines, deaths and Ctrl-C.

    :param address: passed to ``ray.init`` when Ray is not initialized yet (``None``: Ray's
        own choice, ``"auto"``: a running cluster, ``"local"``: a new one on this machine);
        a run that starts Ray shuts it down at the end, one that finds it running leaves it.
    :param actors: that many actors spread over the cluster, instead of one per node.
    :param slots: tasks in flight per actor (default: its ``codex_slots``, else 8 per CPU of
        its node).
    :param servers: app-server processes per actor's pool (default: 4 per CPU of the node).
    :param timeout: seconds per task (a task's own ``timeout`` wins), applied in the actor.
    :param attempts: tries per task while its status is ``failed`` or ``error``, or its actor
        died under it; the row's ``attempt`` says which try it is.
    :param max_restarts: Ray restarts of each actor (its calls are never retried by Ray).
    :param watchdog_grace: seconds past a task's deadline before the driver cancels the call.
    :param init_options: more ``ray.init`` keywords; ``actor_options``: more actor options
        (``runtime_env``, ``resources``, ...). The rest as for :func:`run_batch`.
    """
    from ._ray._driver import WATCHDOG_GRACE
    from ._ray._driver import run_batch_on_ray as run_on_ray

    return run_on_ray(
        tasks,
        address=address,
        actors=actors,
        slots=slots,
        servers=servers,
        timeout=timeout,
        attempts=attempts,
        model=model,
        codex_config=codex_config,
        thread_options=thread_options,
        pool_options=pool_options,
        max_restarts=max_restarts,
        watchdog_grace=WATCHDOG_GRACE if watchdog_grace is None else watchdog_grace,
        init_options=init_options,
        actor_options=actor_options,
    )


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (0 for no values)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return float(ordered[rank])


for _name in (
    "BatchResult",
    "BatchTask",
    "ResultWriter",
    "ResultsFileError",
    "ResultsWriteError",
    "TaskFileError",
):
    globals()[_name].__module__ = __name__
del _name


def __getattr__(name: str) -> Any:
    # The Ray executor's types, imported on first use (the module imports no Ray itself, but
    # it imports this one: importing it here eagerly would be a cycle).
    if name in ("ActorStatistics", "RayBatchRun"):
        from ._ray import _driver as _batch_ray

        return getattr(_batch_ray, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")

"""The local executor: a pool on this machine, the tasks, and a bounded stream of results
(:func:`run_batch`)."""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._groups import Lifespan
from .._wire._config import CodexConfig
from ..pool._pool import DEFAULT_MAX_TURNS, CodexPool
from ._attempt import (
    TaskDefaults,
    attempt_task,
    check_count,
    check_unique_ids,
    each_task,
    ends_batch,
    pool_defaults,
    should_retry,
)
from ._files import BatchResult, BatchTask

__all__ = ["BatchRun", "run_batch"]


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
            timeout=timeout,
            model=model,
            thread_options=dict(thread_options),
            # A pool of the caller's may run anywhere; one of ours runs here unless attached.
            check_cwd=pool is None and (codex_config is None or codex_config.connect is None),
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
                    **pool_defaults(),
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
        stopped: list[Exception] = []
        # The source is closed when the feed ends, also half-way (a usage limit, a repeated
        # id, cancellation): its own cleanup runs here, not in the garbage collector.
        async with send, aclosing(each_task(self._tasks)) as source:
            async with anyio.create_task_group() as tg:

                def stop(exc: Exception) -> None:
                    # The first batch-ending error wins; the tasks it cancels make no row.
                    if not stopped:
                        stopped.append(exc)
                    tg.cancel_scope.cancel()

                async for task in source:
                    await slots.acquire()
                    tg.start_soon(self._run_task, pool, task, send, slots, stop)
            if stopped:
                # Raised once, here: tasks that hit it at the same moment each caught it,
                # so no group of several copies leaves the batch.
                raise stopped[0]

    async def _run_task(
        self,
        pool: CodexPool,
        task: BatchTask,
        send: MemoryObjectSendStream[BatchResult],
        slots: anyio.Semaphore,
        stop: Callable[[Exception], None],
    ) -> None:
        self.running += 1
        try:
            attempt = 1
            while True:
                result = await self._attempt(pool, task, attempt)
                if not should_retry(result, attempt, self._attempts):
                    break
                attempt += 1
            await send.send(result)
        except Exception as exc:
            if not ends_batch(exc):
                raise
            stop(exc)
        finally:
            self.running -= 1
            slots.release()

    async def _attempt(self, pool: CodexPool, task: BatchTask, attempt: int) -> BatchResult:
        return await attempt_task(pool, task, attempt, self._defaults)


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
        :data:`RECYCLE_AFTER` threads, the notifications a result does not need opted out:
        :func:`~codex_anyio.result_only_opt_outs`).
    :param concurrency: tasks in flight at once (default: 8 per CPU; the pool's turn limit).
    :param timeout: seconds per task (a task's own ``timeout`` wins); the turn is interrupted
        and the result's status is ``timeout``.
    :param attempts: tries per task while the status is ``failed`` or ``error`` and the row
        is ``retryable`` (a task that is not valid, or whose ``cwd`` is not a directory here,
        is not tried again).
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

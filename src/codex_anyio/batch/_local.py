"""The local executor: a pool on this machine, the tasks, and a bounded stream of results
(:func:`run_batch`).

A task that runs in a sandbox (the batch's, or its own line's: ``_sandbox``) gets a runtime
of its own, a one-member pool started in its sandbox for that one attempt and closed after
it (never restarted: a sandbox that died is that task's error). The shared pool serves every
other task, and is not started at all when the whole batch runs in sandboxes.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable, Iterable, Mapping, Sequence
from contextlib import AsyncExitStack, aclosing, asynccontextmanager
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .._exceptions import StartupError
from .._groups import Lifespan
from .._wire._config import CodexConfig
from ..gateway._gateway import ModelGateway
from ..pool._pool import DEFAULT_MAX_TURNS, CodexPool
from ._attempt import (
    TaskDefaults,
    attempt_task,
    check_count,
    check_unique_ids,
    each_task,
    ends_batch,
    error_of,
    pool_defaults,
    should_retry,
)
from ._files import BatchResult, BatchTask, goal_options
from ._goal_task import may_hold_goals
from ._records import TaskRecords
from ._sandbox import SandboxSpec, batch_spec, sandbox_runtime, spec_of

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
        gateway: ModelGateway | None,
        record: str | os.PathLike[str] | None,
        trajectories: str | os.PathLike[str] | None,
        sandbox: SandboxSpec | None = None,
    ) -> None:
        if gateway is not None and pool is not None:
            raise ValueError(
                "gateway= is for the batch's own pool; a pool of yours uses its own gateway"
            )
        if sandbox is not None and (
            pool is not None or (codex_config is not None and codex_config.connect is not None)
        ):
            raise ValueError(
                "a batch in sandboxes starts each task's runtime itself: not with a pool of "
                "yours or a server to attach to"
            )
        if sandbox is not None and "accounts" in pool_options:
            raise ValueError(
                "a batch in sandboxes runs one runtime per task, in its sandbox: accounts= is "
                "for the batch's own pool"
            )
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
        self._gateway = gateway
        self._records = TaskRecords(
            gateway if pool is None else pool.gateway, record=record, trajectories=trajectories
        )
        self._sandbox = sandbox
        self.running = 0
        """Tasks in flight right now (for progress displays)."""
        self._running_pool: CodexPool | None = None

    async def __aenter__(self) -> MemoryObjectReceiveStream[BatchResult]:
        return await self._enter_lifespan()

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[MemoryObjectReceiveStream[BatchResult]]:
        async with AsyncExitStack() as stack:
            await anyio.to_thread.run_sync(self._records.prepare)
            if self._gateway is not None:
                # One gateway for the whole batch: the sandboxes' own pools, started and
                # ended per task, all find it running.
                await stack.enter_async_context(self._gateway.ensure_running())
            pool = self._pool
            if pool is None and self._sandbox is None:
                options: dict[str, Any] = {
                    "max_turns": self.concurrency,
                    **pool_defaults(goals=may_hold_goals(self._tasks)),
                    **self._pool_options,
                }
                if self._codex_config is not None:
                    options.setdefault("config", self._codex_config)
                if self._gateway is not None:
                    options["gateway"] = self._gateway
                pool = await stack.enter_async_context(CodexPool(self._servers, **options))
            self._running_pool = pool
            send, receive = anyio.create_memory_object_stream[BatchResult](self.concurrency)
            stack.enter_context(receive)
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._feed, pool, send)
                try:
                    yield receive
                finally:
                    tg.cancel_scope.cancel()

    async def pauses(self) -> AsyncIterator[str]:
        """While the batch runs: ``paused until 14:05 (account 0: usage limit reached)``
        each time the accounts' pauses change (an empty string once none is paused), for a
        progress display. A batch in sandboxes has no shared pool, and says nothing here."""
        pool = self._running_pool
        if pool is None:
            return
        said = ""
        while True:
            stats = pool.statistics()
            if stats.paused != said:
                said = stats.paused
                yield said
            ends = [a.paused_until.timestamp() for a in stats.accounts if a.paused_until]
            # A pause ends by itself at its reset time: look again then, too.
            with anyio.move_on_after(min(ends) - time.time() if ends else math.inf):
                await pool.wait_changed()

    async def _feed(
        self, pool: CodexPool | None, send: MemoryObjectSendStream[BatchResult]
    ) -> None:
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
        pool: CodexPool | None,
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
            # The task's files before its row: a run stopped between the two runs the task
            # again and replaces them (see ``_records``).
            await self._records.save(task, result)
            await send.send(result)
        except Exception as exc:
            if not ends_batch(exc):
                raise
            stop(exc)
        finally:
            self.running -= 1
            slots.release()

    async def _attempt(self, pool: CodexPool | None, task: BatchTask, attempt: int) -> BatchResult:
        try:
            spec, own = spec_of(task.sandbox, task.container, self._sandbox)
        except ValueError as exc:  # the task's own sandbox is not valid: its final error
            error = error_of(exc)
            return BatchResult(
                id=task.id, status="error", attempt=attempt, error=error, retryable=False
            )
        if spec is None:
            assert pool is not None
            return await attempt_task(pool, task, attempt, self._defaults)
        try:
            return await self._attempt_in_sandbox(spec, task, attempt)
        except StartupError as exc:
            # The batch's sandbox failing would fail every task (it ends the batch); one
            # task's own is that task's error.
            if not own:
                raise
            return BatchResult(id=task.id, status="error", attempt=attempt, error=error_of(exc))

    async def _attempt_in_sandbox(
        self, spec: SandboxSpec, task: BatchTask, attempt: int
    ) -> BatchResult:
        """One attempt on a runtime of the task's own, in its sandbox: the turn ends first
        (a deadline interrupts it), then the runtime, then the sandbox."""
        base = self._codex_config or CodexConfig()
        async with sandbox_runtime(spec, base, task_id=task.id, cwd=task.cwd) as config:
            options: dict[str, Any] = {
                **pool_defaults(goals=goal_options(task) is not None),
                **self._pool_options,
                "config": config,
                "max_turns": None,
                "recycle_after": None,
                "max_restarts": 0,
            }
            if self._gateway is not None:
                options["gateway"] = self._gateway
            async with CodexPool(1, **options) as pool:
                return await attempt_task(pool, task, attempt, self._defaults, in_sandbox=True)


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
    gateway: ModelGateway | None = None,
    record: str | os.PathLike[str] | None = None,
    trajectories: str | os.PathLike[str] | None = None,
    sandbox: str | Sequence[str] | None = None,
    container: str | None = None,
    container_engine: str = "docker",
    container_options: Sequence[str] = (),
) -> BatchRun:
    """Run ``tasks``; ``async with run_batch(tasks) as results: async for r in results``.

    :param pool: a running :class:`CodexPool` to use; default: one started for the batch
        (``servers`` processes, lean threads, members recycled every
        :data:`RECYCLE_AFTER` threads, the notifications a result does not need opted out:
        :func:`~codex_anyio.result_only_opt_outs`, but for those a goal reads when the batch
        may hold a goal task: ``tasks`` not a list or tuple, or one with a ``goal``).
    :param concurrency: tasks in flight at once (default: 8 per CPU; the pool's turn limit).
    :param timeout: seconds per task (a task's own ``timeout`` wins); the turn is interrupted
        and the result's status is ``timeout``.
    :param attempts: tries per task while the status is ``failed`` or ``error`` and the row
        is ``retryable`` (a task that is not valid, or whose ``cwd`` is not a directory here,
        is not tried again).
    :param model: model for tasks that name none.
    :param codex_config: how to launch each member of the batch's own pool.
    :param thread_options: ``thread_start`` keywords for every task (over the pool's
        ``thread_defaults``).
    :param pool_options: more :class:`CodexPool` keywords for the batch's own pool (and for
        each task's own, in a sandbox).
    :param gateway: a :class:`~codex_anyio.gateway.ModelGateway` every member of the batch's
        own pool (and every task's runtime in a sandbox: one that shares this machine's
        loopback) sends its model calls through (forwarding to an upstream, answering from a
        policy, replaying a cassette); a ``pool=`` of yours uses its own ``gateway``.
    :param record: a folder (created if missing) for one cassette per task,
        ``<id>.jsonl``: the model calls of the task's last attempt, replayable with
        ``ModelGateway(cassette=...)``. Needs a gateway (``gateway=``, or the pool's).
    :param trajectories: a folder for one ATIF trajectory per task,
        ``<id>.trajectory.json`` (:mod:`codex_anyio.trajectory`). Needs a gateway too. An id
        that is not a plain file name is percent-encoded in both
        (:func:`~codex_anyio.batch.file_stem`); each file is written whole before the task's
        row, so a resumed run neither loses nor duplicates one.
    :param sandbox: run each task's runtime in a sandbox of its own, started with this
        command template (a shell-like string, split once, or a list of arguments) in which
        ``{id}``, ``{cwd}``, ``{runtime}`` (the bundled ``codex``) and ``{codex_home}`` are
        filled in per argument, e.g. ``"bwrap --ro-bind / / --dev /dev --proc /proc --bind
        {cwd} {cwd} --bind {codex_home} {codex_home} --unshare-pid -- {runtime}
        app-server"``. A task line's own ``sandbox`` or
        ``container`` wins.
    :param container: run each task's runtime in a new container of this image
        (``container_engine``: ``docker`` or ``podman``), with the bundled runtime mounted in
        it, removed when the task ends; ``container_options`` are more ``run`` arguments
        (``--network=host`` for a model on this machine's loopback).
    :raises ValueError: for a count below 1, a timeout that is not a positive number of
        seconds, (a list of tasks) a repeated id, ``record=`` or ``trajectories=`` without a
        gateway,
        ``gateway=`` with ``pool=``, a sandbox template that is not valid, or a sandbox with a
        ``pool`` or a ``codex_config`` that attaches (``connect``).
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
        gateway=gateway,
        record=record,
        trajectories=trajectories,
        sandbox=batch_spec(sandbox, container, container_engine, container_options),
    )

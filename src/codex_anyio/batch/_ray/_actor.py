"""The Ray side of a batch: the actor that hosts one :class:`~codex_anyio.CodexPool` on a node.

It runs each task it is sent through :func:`~codex_anyio.batch.attempt_task`, exactly as the
local runner does. The pool's ``async with`` belongs to one long-lived owner task: every actor
call is an asyncio task of its own, and a cancel scope entered in one and left in another
fails ("Attempted to exit cancel scope in a different task"). The first call starts the owner,
``close()`` ends it. This side always runs on Ray's asyncio loop (the driver may be Trio), so
it uses plain asyncio where AnyIO has no equivalent: a task that outlives the call starting it.

Nothing here imports Ray at module level: the class is made a Ray actor by
:func:`actor_class` when a run starts.
"""

from __future__ import annotations

import asyncio
import importlib
import logging
import os
from collections.abc import Mapping
from typing import Any, NamedTuple

from ..._exceptions import ClusterError
from ...pool._pool import CodexPool
from .._attempt import TaskDefaults, attempt_task, ends_batch, error_of
from .._files import BatchResult, BatchTask

__all__ = ["ActorStatistics", "PoolActor", "actor_class", "import_ray"]

logger = logging.getLogger("codex_anyio.batch")


def import_ray() -> Any:
    try:
        return importlib.import_module("ray")
    except ImportError as exc:
        raise ClusterError(
            "running a batch on Ray needs Ray: pip install 'codex-anyio[ray]'"
        ) from exc


class ActorStatistics(NamedTuple):
    """What one batch actor is doing (``RayBatchRun.statistics()``)."""

    actor: int
    """Its index among the run's actors."""
    pid: int
    """The actor's worker process on its node."""
    node_id: str
    slots: int
    running: dict[str, int]
    """Task id -> attempt, for the tasks it is running now."""


class PoolActor:
    """The body of a batch actor (made a Ray actor class by :func:`actor_class`)."""

    def __init__(
        self, index: int, slots: int, pool_options: Mapping[str, Any], defaults: TaskDefaults
    ) -> None:
        self._index = index
        self._slots = slots
        self._pool_options = dict(pool_options)
        self._defaults = defaults
        self._running: dict[str, int] = {}
        # Plain asyncio, not AnyIO: this side always runs on Ray's asyncio loop, and the owner
        # must outlive the call that starts it (no task group can hold it). Made by the first
        # call: __init__ runs outside the loop.
        self._owner: asyncio.Task[None] | None = None
        self._opened: asyncio.Future[CodexPool] | None = None
        self._stop: asyncio.Event | None = None

    async def _own_pool(self, opened: asyncio.Future[CodexPool], stop: asyncio.Event) -> None:
        """The owner task: enters the pool, hands it out, waits for close(), leaves."""
        try:
            async with CodexPool(**self._pool_options) as pool:
                opened.set_result(pool)
                await stop.wait()
        except BaseException as exc:
            if not opened.done():
                if isinstance(exc, Exception):
                    opened.set_exception(exc)
                else:
                    opened.cancel()
            raise

    async def _pool(self) -> CodexPool:
        if self._owner is None or (self._owner.done() and not self._stopping):
            # First call, or the pool failed to start last time: (re)start it.
            self._opened = asyncio.get_running_loop().create_future()
            self._stop = asyncio.Event()
            self._owner = asyncio.create_task(self._own_pool(self._opened, self._stop))
        assert self._opened is not None
        # Shielded: a caller cancelled while waiting must not cancel the start for the others.
        return await asyncio.shield(self._opened)

    @property
    def _stopping(self) -> bool:
        return self._stop is not None and self._stop.is_set()

    async def start(self) -> int:
        """Start the pool now (rather than on the first task); returns the worker's pid."""
        await self._pool()
        return os.getpid()

    async def run(self, task: BatchTask, attempt: int) -> BatchResult:
        self._running[task.id] = attempt
        try:
            try:
                pool = await self._pool()
            except Exception as exc:
                if ends_batch(exc):  # a runtime that cannot start: every task would hit it
                    raise
                return BatchResult(id=task.id, status="error", attempt=attempt, error=error_of(exc))
            result: BatchResult = await attempt_task(pool, task, attempt, self._defaults)
            return result
        finally:
            del self._running[task.id]

    async def statistics(self) -> ActorStatistics:
        ray = import_ray()
        return ActorStatistics(
            actor=self._index,
            pid=os.getpid(),
            node_id=str(ray.get_runtime_context().get_node_id()),
            slots=self._slots,
            running=dict(self._running),
        )

    async def close(self) -> None:
        """End the owner task: the pool closes every member with its process tree."""
        if self._owner is None or self._stop is None:
            return
        self._stop.set()
        # wait() rather than await: the owner's own error (a pool that failed to start) is
        # not close()'s, while a cancellation of close() itself still propagates.
        await asyncio.wait({self._owner})


_ACTOR_CLASS: Any = None
"""The Ray actor class, made once per process."""


def actor_class() -> Any:
    global _ACTOR_CLASS
    if _ACTOR_CLASS is None:
        _ACTOR_CLASS = import_ray().remote(PoolActor)
    return _ACTOR_CLASS

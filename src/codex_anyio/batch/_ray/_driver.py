"""The batch runner's Ray executor (the driver side): the same tasks and result rows, fanned
out over a cluster.

We schedule nothing ourselves beyond a window per actor. One Ray async actor per node (or per
node advertising a ``codex_slots`` custom resource, or ``actors`` of them) hosts one
:class:`~codex_anyio.CodexPool` and runs each task through :func:`~codex_anyio.batch.
attempt_task`, exactly as the local runner does. The driver keeps as many tasks in flight on
each actor as it has slots and hands the next task to whichever actor frees one first, so a
long-tail turn holds one slot, never an idle cluster. Results stream back to the driver as
they finish; only the driver writes the results file.

Lifetimes and failure, by the side they live on:

- **Actor** (``_batch_ray_actor``): the pool belongs to one long-lived owner task in the
  actor, started by its first call and ended by ``close()``.
- **Deadline.** A task's deadline runs inside the actor, beside the turn, so expiry interrupts
  the turn on the server. The driver's watchdog, at deadline + grace, calls ``ray.cancel``
  (an async actor's coroutine sees the cancellation within milliseconds and the turn is
  interrupted); if even that does not bring the call back, it kills the actor, and Ray
  restarts it.
- **Death.** An actor (or node) that dies is restarted by Ray (``max_restarts``), but its calls
  are never retried by Ray (``max_task_retries=0``): the driver re-queues them itself with the
  next attempt number, so the ``attempt`` in a row counts every try, up to ``attempts``.
  Until the restarted actor answers a probe it gets no task (a re-run sent at once would die
  with it); past ``max_restarts`` deaths in a row it is retired.
- **Usage limit.** An actor's pool pauses an account at its usage limit and moves the work to
  its other accounts, as locally; but it never waits for a reset (its pools run with
  ``max_wait=0``), since the driver's watchdog would take hours of waiting for a hung task.
  A task that finds every account of its actor paused comes back as a ``usage_limit`` row
  with the reset time: the driver puts the task back in the queue (the same attempt) and
  gives that actor no task until the reset. Once every actor has been paused for the
  batch's ``max_wait``, the rows are final, and the tasks left get one each.
- **The batch's end** (``_attempt.ends_batch``: no login, a runtime that cannot start). An
  actor's ``attempt_task`` (or its pool's start) raises it (it crosses Ray pickled); the
  driver raises it in its turn, after the rows that finished alongside it, and the run ends
  as when leaving early: no row for the tasks left, which a re-run takes up.
- **Leaving early** (Ctrl-C, ``break``, cancellation): every call in flight is cancelled (its
  turn interrupted), every actor's pool closed (no app-server left on any node), the actors
  killed, and Ray shut down if this run started it; shielded, each step bounded.

The driver may run on asyncio or Trio: Ray's object refs are awaitable on asyncio only, so the
driver waits for them with ``ray.wait`` in a worker thread, a short timeout at a time (which
is also the watchdog's tick). ``ray`` is imported only when a run starts.
"""

from __future__ import annotations

import importlib
import logging
import math
import time
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Iterable, Mapping
from contextlib import aclosing, asynccontextmanager
from typing import Any, Final

import anyio
import attrs
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ..._exceptions import ClusterError
from ..._groups import Lifespan
from ..._rpc._usage import utc_datetime
from ...pool._accounts import UNKNOWN_RESET_PAUSE
from ...pool._pool import DEFAULT_MAX_TURNS
from .._attempt import (
    TaskDefaults,
    check_count,
    check_unique_ids,
    each_task,
    ends_batch,
    error_of,
    pool_defaults,
    should_retry,
)
from .._files import BatchResult, BatchTask
from .._goal_task import may_hold_goals
from ._actor import ActorStatistics, actor_class, import_ray

__all__ = ["ActorStatistics", "RayBatchRun", "run_batch_on_ray"]

logger = logging.getLogger("codex_anyio.batch")

POLL: Final = 0.2
"""Seconds one ``ray.wait`` in the driver's worker thread blocks at most: how late the
watchdog can be, and how long a cancelled driver waits for that thread to return."""

WATCHDOG_GRACE: Final = 30.0
"""Seconds past a task's deadline before the driver cancels its call: the actor's own deadline
should have ended it by then; the slack covers a pool still starting and a busy node."""

KILL_AFTER: Final = 10.0
"""Seconds a cancelled call gets to come back before its actor is killed (and restarted)."""

CLOSE_TIMEOUT: Final = 30.0
"""Bound on closing every actor's pool when the run ends (members close in parallel, each
shielded and bounded itself)."""

INIT_OPTIONS: Final = {"include_dashboard": False}
"""``ray.init`` keywords when this run starts Ray itself: no dashboard (nobody looks at it, and
it is one more server)."""

_SLOTS_RESOURCE: Final = "codex_slots"


@attrs.define(eq=False)
class _Actor:
    index: int
    handle: Any
    slots: int
    in_flight: int = 0
    deaths: int = 0
    """Deaths in a row (no result in between); past its restart budget it is retired."""
    last_death: float = -math.inf
    """When the latest death was noticed: every call submitted before it died with it."""
    probe: Any = None
    """A ``start()`` call sent after a death: until it answers, the actor (being restarted by
    Ray) gets no task, so a re-run does not die with the corpse."""
    retired: bool = False
    paused_until: float = -math.inf
    """Wall-clock time until which every account of its pool is paused (a ``usage_limit``
    row said so): it gets no task before then."""

    @property
    def paused(self) -> bool:
        return time.time() < self.paused_until

    @property
    def free(self) -> int:
        if self.retired or self.probe is not None or self.paused:
            return 0
        return self.slots - self.in_flight


@attrs.define(eq=False)
class _Flight:
    actor: _Actor
    task: BatchTask
    attempt: int
    submitted: float
    watchdog: float
    """Monotonic time at which the driver cancels the call (inf: no deadline)."""
    cancelled_at: float | None = None


class RayBatchRun(Lifespan[MemoryObjectReceiveStream[BatchResult]]):
    """``async with run_batch_on_ray(...) as results``: like :class:`~codex_anyio.batch.
    BatchRun`, with the pools on Ray actors. The stream is bounded (the total of the actors'
    slots): a consumer that stops reading pauses the batch."""

    def __init__(
        self,
        tasks: Iterable[BatchTask] | AsyncIterable[BatchTask],
        *,
        address: str | None,
        actors: int | None,
        slots: int | None,
        attempts: int,
        defaults: TaskDefaults,
        pool_options: Mapping[str, Any],
        max_restarts: int,
        watchdog_grace: float,
        init_options: Mapping[str, Any],
        actor_options: Mapping[str, Any],
    ) -> None:
        check_count(attempts, "attempts")
        check_count(actors, "actors")
        check_count(slots, "slots")
        check_unique_ids(tasks)
        self._tasks = tasks
        self._address = address
        self._actor_count = actors
        self._slots = slots
        self._attempts = attempts
        self._defaults = defaults
        self._pool_options = dict(pool_options)
        # The driver waits for resets, not the actors (see the module docstring).
        self._max_wait: float | None = self._pool_options.pop("max_wait", None)
        self._pool_options["max_wait"] = 0
        self._all_paused_since: float | None = None
        self._max_restarts = max_restarts
        self._grace = watchdog_grace
        self._init_options = dict(init_options)
        self._actor_options = dict(actor_options)
        self._actors: list[_Actor] = []
        self._flights: dict[Any, _Flight] = {}
        self._probes: dict[Any, _Actor] = {}
        self._placed_slots: int | None = None
        self.running = 0
        """Tasks in flight right now (for progress displays)."""

    @property
    def concurrency(self) -> int:
        """Tasks in flight at once: the actors' slots together (before the actors are placed,
        the slots asked for per actor times the actors asked for)."""
        if self._placed_slots is not None:
            return self._placed_slots
        return (self._slots or DEFAULT_MAX_TURNS) * (self._actor_count or 1)

    async def __aenter__(self) -> MemoryObjectReceiveStream[BatchResult]:
        return await self._enter_lifespan()

    async def statistics(self) -> list[ActorStatistics]:
        """Each actor's pid, node and running task ids (asks every actor)."""
        ray = import_ray()
        refs = [actor.handle.statistics.remote() for actor in self._actors]
        stats: list[ActorStatistics] = await anyio.to_thread.run_sync(ray.get, refs)
        return stats

    # -- lifecycle ------------------------------------------------------------------------

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[MemoryObjectReceiveStream[BatchResult]]:
        ray = import_ray()
        started_ray = False
        try:
            if not ray.is_initialized():
                options = dict(self._init_options)
                if self._address == "local":
                    options = {**INIT_OPTIONS, **options}
                # In a worker thread: it blocks for seconds, and in the main thread Ray would
                # take over SIGTERM, which the batch command handles itself.
                await anyio.to_thread.run_sync(lambda: ray.init(address=self._address, **options))
                started_ray = True
            self._actors = await anyio.to_thread.run_sync(self._place, ray)
            self._placed_slots = sum(actor.slots for actor in self._actors)
            # Start every pool now (start-up is reported apart from the tasks' times), the
            # first alone: actors on one node share its CODEX_HOME, and runtimes that find it
            # uninitialized race to create its state database (all but one fail).
            first, *others = self._actors
            await self._start(ray, [first])
            await self._start(ray, others)
            send, receive = anyio.create_memory_object_stream[BatchResult](self.concurrency)
            with receive:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(self._drive, ray, send)
                    try:
                        yield receive
                    finally:
                        tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.to_thread.run_sync(self._stop_everything, ray, started_ray)

    @staticmethod
    async def _start(ray: Any, actors: list[_Actor]) -> None:
        """Start the pools of ``actors``. A pool that cannot start (a bad config: every task
        would hit it) ends the run with the runtime's own error, as a local pool's does, not
        with Ray's wrapper of it."""
        refs = [actor.handle.start.remote() for actor in actors]
        try:
            await anyio.to_thread.run_sync(ray.get, refs, abandon_on_cancel=True)
        except Exception as exc:
            end = _batch_end(exc)
            if end is None:
                raise
        else:
            return
        raise end from end.__cause__  # outside the except: Ray's wrapper is no context

    def _place(self, ray: Any) -> list[_Actor]:
        """One actor per node (per ``codex_slots`` node if any has that resource), or
        ``actors`` spread over the cluster."""
        scheduling = importlib.import_module("ray.util.scheduling_strategies")
        placements: list[tuple[int, dict[str, Any]]] = []
        if self._actor_count is not None:
            slots = self._slots or DEFAULT_MAX_TURNS
            placements = [(slots, {"scheduling_strategy": "SPREAD"})] * self._actor_count
        else:
            nodes = [node for node in ray.nodes() if node.get("Alive")]
            with_slots = [n for n in nodes if n.get("Resources", {}).get(_SLOTS_RESOURCE)]
            for node in with_slots or nodes:
                resources = node.get("Resources", {})
                options: dict[str, Any] = {
                    # Soft: if the node dies, the restarted actor may go elsewhere.
                    "scheduling_strategy": scheduling.NodeAffinitySchedulingStrategy(
                        node_id=node["NodeID"], soft=True
                    )
                }
                if with_slots:
                    slots = int(resources[_SLOTS_RESOURCE])
                    options["resources"] = {_SLOTS_RESOURCE: slots}
                else:
                    slots = self._slots or 8 * max(1, math.floor(resources.get("CPU", 1)))
                placements.append((self._slots or slots, options))
        if not placements:
            raise ClusterError("the Ray cluster has no alive node to place a batch actor on")
        remote_class = actor_class()
        actors: list[_Actor] = []
        for index, (slots, options) in enumerate(placements):
            handle = remote_class.options(
                num_cpus=0,
                max_restarts=self._max_restarts,
                max_task_retries=0,  # the driver re-queues, counting attempts
                max_concurrency=slots + 4,  # + statistics() and close() while it is full
                **{**options, **self._actor_options},
            ).remote(index, slots, {"max_turns": slots, **self._pool_options}, self._defaults)
            actors.append(_Actor(index, handle, slots))
        return actors

    def _stop_everything(self, ray: Any, started_ray: bool) -> None:
        """Cancel what is in flight, close every pool, kill the actors; shut Ray down if we
        started it. Every wait bounded; runs in a worker thread."""
        for ref in list(self._flights):
            try:
                ray.cancel(ref)
            except Exception:  # it may have finished meanwhile
                pass
        self._flights.clear()
        self._probes.clear()
        if self._actors:
            closing = [actor.handle.close.remote() for actor in self._actors]
            ready, _ = ray.wait(closing, num_returns=len(closing), timeout=CLOSE_TIMEOUT)
            if len(ready) < len(closing):
                logger.warning(
                    "batch: %d actor(s) did not close in time", len(closing) - len(ready)
                )
            for actor in self._actors:
                try:
                    ray.kill(actor.handle, no_restart=True)
                except Exception:  # already gone
                    pass
            self._actors = []
        if started_ray:
            ray.shutdown()

    # -- the driver loop ------------------------------------------------------------------

    def _watchdog(self, task: BatchTask, now: float) -> float:
        timeout = task.timeout if task.timeout is not None else self._defaults.timeout
        if timeout is None:
            return math.inf
        return now + timeout + self._grace

    async def _drive(self, ray: Any, send: MemoryObjectSendStream[BatchResult]) -> None:
        queue: deque[tuple[BatchTask, int]] = deque()
        exhausted = False
        # Closed when the run ends, also half-way (the generator's own cleanup runs here).
        async with send, aclosing(each_task(self._tasks)) as source:
            while True:
                # Refill the queue up to what the free slots can take (the source may be lazy).
                free = sum(actor.free for actor in self._actors)
                while not exhausted and len(queue) < free:
                    task = await anext(source, None)
                    if task is None:
                        exhausted = True
                    else:
                        queue.append((task, 1))
                if self._wait_over():
                    # Every actor paused past max_wait: what is left ends usage_limit now.
                    for result in await self._limited_rows(queue, source):
                        await send.send(result)
                    exhausted = True
                self._submit(queue)
                if not self._flights and not self._probes:
                    if exhausted and not queue:
                        return
                    resume = self._first_resume()
                    if resume is not None:
                        # Every live actor is paused by its accounts' usage limits.
                        await anyio.sleep(max(0.0, min(resume, self._wait_end()) - time.time()))
                        continue
                    # Work left, nothing in flight, no actor coming back: none can take it.
                    raise ClusterError("every batch actor is gone (restarts used up)")
                refs = [*self._flights, *self._probes]
                ready = await anyio.to_thread.run_sync(
                    self._wait, ray, refs, abandon_on_cancel=True
                )
                stop: Exception | None = None
                for ref, value in ready:
                    if ref in self._probes:
                        self._settle_probe(ref, value)
                        continue
                    try:
                        settled = self._settle(ref, value, queue)
                    except Exception as exc:
                        if not ends_batch(exc):
                            raise
                        stop = stop or exc
                        continue
                    for result in settled:  # the others that finished with it still count
                        await send.send(result)
                if stop is not None:
                    raise stop
                self._check_watchdogs(ray)
                self.running = len(self._flights)

    def _submit(self, queue: deque[tuple[BatchTask, int]]) -> None:
        """Hand queued tasks to the actors with free slots, the freest first."""
        while queue:
            actor = max(self._actors, key=lambda a: a.free)
            if actor.free <= 0:
                break
            task, attempt = queue.popleft()
            ref = actor.handle.run.remote(task, attempt)
            actor.in_flight += 1
            now = time.monotonic()
            self._flights[ref] = _Flight(actor, task, attempt, now, self._watchdog(task, now))
        self.running = len(self._flights)

    @staticmethod
    def _wait(ray: Any, refs: list[Any]) -> list[tuple[Any, Any]]:
        """In a worker thread: the calls that finished within :data:`POLL`, with their value
        or the exception ``ray.get`` raised."""
        ready, _ = ray.wait(refs, num_returns=1, timeout=POLL)
        if ready:
            ready, _ = ray.wait(refs, num_returns=len(refs), timeout=0)
        settled: list[tuple[Any, Any]] = []
        for ref in ready:
            try:
                settled.append((ref, ray.get(ref)))
            except Exception as exc:  # sorted out by _settle
                settled.append((ref, exc))
        return settled

    def _settle(
        self, ref: Any, value: Any, queue: deque[tuple[BatchTask, int]]
    ) -> list[BatchResult]:
        """A finished call: its final result, or nothing when it goes round again."""
        flight = self._flights.pop(ref, None)
        if flight is None:
            return []
        actor, task, attempt = flight.actor, flight.task, flight.attempt
        actor.in_flight -= 1
        if isinstance(value, BatchResult):
            actor.deaths = 0
            if value.status == "usage_limit" and self._hold(actor, value):
                queue.appendleft((task, attempt))  # the same attempt, once an actor resumes
                return []
            if should_retry(value, attempt, self._attempts):
                queue.appendleft((task, attempt + 1))
                return []
            return [value]
        exc: BaseException = value
        end = _batch_end(exc)
        if end is not None:
            raise end  # the batch's end, as in the local runner: no row, no retry
        if flight.cancelled_at is not None:
            # The watchdog cancelled it (or killed its actor): past its deadline.
            return [
                BatchResult(
                    id=task.id,
                    status="timeout",
                    attempt=attempt,
                    error={
                        "type": "Timeout",
                        "message": "the task outlived its deadline; the driver cancelled it",
                    },
                )
            ]
        # One death fails every call the actor held: count it once.
        if _actor_died(exc) and flight.submitted > actor.last_death:
            logger.info(
                "batch: actor %d died under task %r (attempt %d)", actor.index, task.id, attempt
            )
            self._died(actor)
        if attempt < self._attempts:
            queue.appendleft((task, attempt + 1))
            return []
        return [BatchResult(id=task.id, status="error", attempt=attempt, error=error_of(exc))]

    def _hold(self, actor: _Actor, row: BatchResult) -> bool:
        """A ``usage_limit`` row from ``actor``: pause it until the reset the row names; True
        if the task goes back in the queue (the wait is not over)."""
        at = row.resets_at
        resets = at.timestamp() if at is not None else time.time() + UNKNOWN_RESET_PAUSE
        actor.paused_until = max(actor.paused_until, resets)
        logger.warning(
            "batch: every account of actor %d is paused by its usage limit until %s",
            actor.index,
            time.strftime("%H:%M", time.localtime(resets)),
        )
        return not self._wait_over()

    def _live(self) -> list[_Actor]:
        return [actor for actor in self._actors if not actor.retired]

    def _first_resume(self) -> float | None:
        """While every live actor is paused: when the first resumes (else None)."""
        live = self._live()
        if not live or not all(actor.paused for actor in live):
            self._all_paused_since = None
            return None
        if self._all_paused_since is None:
            self._all_paused_since = time.time()
        return min(actor.paused_until for actor in live)

    def _wait_end(self) -> float:
        """When the wait of an all-paused cluster is over (``max_wait``; inf: never)."""
        if self._max_wait is None or self._all_paused_since is None:
            return math.inf
        return self._all_paused_since + self._max_wait

    def _wait_over(self) -> bool:
        return self._first_resume() is not None and time.time() >= self._wait_end()

    async def _limited_rows(
        self, queue: deque[tuple[BatchTask, int]], source: AsyncIterator[BatchTask]
    ) -> list[BatchResult]:
        """A ``usage_limit`` row for every task queued or not read yet."""
        resume = self._first_resume()
        at = utc_datetime(resume) if resume is not None else None
        error = {
            "type": "UsageLimitWaitError",
            "message": "every actor's accounts are paused by their usage limit: waited "
            f"max_wait={self._max_wait:g} s",
        }
        if at is not None:
            error["resets_at"] = at.isoformat()
        left = list(queue)
        queue.clear()
        left += [(task, 1) async for task in source]
        return [
            BatchResult(id=task.id, status="usage_limit", attempt=attempt, error=error)
            for task, attempt in left
        ]

    def _died(self, actor: _Actor) -> None:
        """Ray restarts a dead actor; probe it, or retire it once its restarts are used up."""
        actor.deaths += 1
        actor.last_death = time.monotonic()
        if actor.deaths > self._max_restarts:
            actor.retired = True
            actor.probe = None
            logger.warning("batch: actor %d keeps dying; not using it any more", actor.index)
        elif actor.probe is None:
            actor.probe = actor.handle.start.remote()
            self._probes[actor.probe] = actor

    def _settle_probe(self, ref: Any, value: Any) -> None:
        actor = self._probes.pop(ref)
        actor.probe = None
        if isinstance(value, BaseException) and _actor_died(value):
            self._died(actor)  # died again while coming back
        # Anything else: it is alive (a pool that cannot start fails its tasks, as locally).

    def _check_watchdogs(self, ray: Any) -> None:
        now = time.monotonic()
        for ref, flight in list(self._flights.items()):
            if flight.cancelled_at is None and now >= flight.watchdog:
                logger.warning("batch: task %r outlived its deadline; cancelling", flight.task.id)
                flight.cancelled_at = now
                ray.cancel(ref)
            elif flight.cancelled_at is not None and now >= flight.cancelled_at + KILL_AFTER:
                logger.warning(
                    "batch: task %r ignored its cancellation; restarting actor %d",
                    flight.task.id,
                    flight.actor.index,
                )
                flight.cancelled_at = math.inf  # kill once
                ray.kill(flight.actor.handle, no_restart=False)


def _batch_end(exc: BaseException) -> Exception | None:
    """The batch-ending error (``_attempt.ends_batch``: a usage limit, no login, a runtime
    that cannot start) an actor raised, however Ray wrapped it (its ``RayTaskError`` is an
    instance of the cause's class when Ray could make it one, and carries the cause as
    ``cause`` either way)."""
    for candidate in (getattr(exc, "cause", None), exc):
        if isinstance(candidate, Exception) and ends_batch(candidate):
            return candidate
    return None


def _actor_died(exc: BaseException) -> bool:
    exceptions = importlib.import_module("ray.exceptions")
    return isinstance(exc, exceptions.RayActorError)


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
    codex_config: Any = None,
    thread_options: Mapping[str, Any] | None = None,
    pool_options: Mapping[str, Any] | None = None,
    max_restarts: int = 3,
    watchdog_grace: float = WATCHDOG_GRACE,
    init_options: Mapping[str, Any] | None = None,
    actor_options: Mapping[str, Any] | None = None,
) -> RayBatchRun:
    """Implementation of :func:`codex_anyio.batch.run_batch_on_ray` (documented there)."""
    check_count(servers, "servers")
    options: dict[str, Any] = {"servers": servers, **pool_defaults(goals=may_hold_goals(tasks))}
    if codex_config is not None:
        options["config"] = codex_config
    options.update(pool_options or {})
    return RayBatchRun(
        tasks,
        address=address,
        actors=actors,
        slots=slots,
        attempts=attempts,
        defaults=TaskDefaults(
            timeout=timeout,
            model=model,
            thread_options=dict(thread_options or {}),
            check_cwd=codex_config is None or getattr(codex_config, "connect", None) is None,
        ),
        pool_options=options,
        max_restarts=max_restarts,
        watchdog_grace=watchdog_grace,
        init_options=init_options or {},
        actor_options=actor_options or {},
    )

"""``CodexPool``: several app-server processes behind one object, for thousands of turns.

One runtime process rejects requests with ``-32001`` beyond ~128-170 queued, and its
per-thread costs queue behind each other; the pool's turn limit keeps every process far under
that, and one process per CPU keeps every core busy (more processes only add per-process CPU
per turn: see :func:`default_servers`). The pool owns ``servers``
:class:`AsyncCodex` members, each in a supervisor task of the pool's task group:

- **Placement.** ``thread_start`` puts a thread on the ready member holding the fewest open
  threads (then the fewest running turns) and returns a :class:`Thread` bound to it; a thread
  lives in one process, so its turns run there.
- **Limits.** At most ``max_turns`` turns run at once in the pool and ``turns_per_server`` per
  member; a turn waits for a slot before ``turn/start`` (so a burst queues here, not in the
  runtime). Capping turns at ~8 per core keeps throughput and cut median turn latency ~9x
  (2276 -> 242 ms at K=128). Slots are held by ``thread.run(...)`` and ``async with
  thread.turn(...)``; a handle taken with a bare ``await thread.turn(...)`` is not counted.
- **Start-up.** The first member starts alone (members sharing a ``CODEX_HOME`` that none has
  initialized race to create its state database, and all but one fail); if its runtime still
  loses that race to another process, it is started again, a few times, before the error
  counts (:data:`STATE_RACE_ATTEMPTS`).
- **Failure.** A member whose process dies ends its in-flight turns and requests with
  :class:`TransportClosedError` (the connection does that); the supervisor restarts it, at most
  ``max_restarts`` times per ``restart_window`` seconds, and the pool keeps serving on the
  others. One exit more than that within the window and the member is given up: once no
  member is left, every call waiting for one and every new call raises
  :class:`RestartsExhaustedError` (with the last exit status) instead of waiting forever.
  Threads of the dead process are gone: a new turn on one raises
  :class:`TransportClosedError` at once.
- **Watchdog.** A stopped or wedged process keeps its pipes open, so nothing else reveals it.
  A member that sent nothing for ``probe_interval`` seconds gets a liveness probe (a request
  the runtime answers from memory); one that then stays silent for ``probe_timeout`` more
  seconds is declared unresponsive: it stops receiving work, its in-flight requests and turns
  fail at once with :class:`ServerUnresponsiveError` (a thread start, or a ``pool.run`` whose
  turn was not sent yet, is retried on another member), and it is killed (SIGKILL, which ends a
  stopped process too), reaped and restarted like a crashed one.
- **Recycling.** Ephemeral threads cannot be unloaded (~0.9 MB each until the process exits);
  with ``recycle_after=N`` a member that has started N threads takes no new ones and is
  restarted once it holds no open thread and runs no turn.

Leaving ``async with`` closes every member in parallel, each shielded and bounded (see
``_transport``), with its whole process tree.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncIterator, Callable, Collection, Mapping, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any, Final, NamedTuple

import anyio
import attrs

from .._api._codex import AsyncCodex
from .._api._dispatch import Handlers
from .._api._inputs import Input
from .._api._model_calls import ModelCallSource
from .._api._presets import lean_thread_options, merge_options
from .._api._thread import Thread
from .._api._turn import TurnResult
from .._exceptions import (
    JsonRpcError,
    ProtocolError,
    RestartsExhaustedError,
    ServerUnresponsiveError,
    TransportClosedError,
)
from .._groups import Lifespan
from .._protocol._generated import models as m
from .._rpc._connection import CodexClient
from .._rpc._retry import retry_on_overload
from .._rpc._router import Limits
from .._rpc._usage import TokenUsage, UsageLedger
from .._wire._config import CodexConfig
from ._member import Member as _Member
from ._thread import PooledThread

__all__ = ["CodexPool", "MemberStatistics", "PoolStatistics", "default_servers"]

logger = logging.getLogger("codex_anyio.pool")

FINISH_TIMEOUT: Final = 5.0
"""Bound on archiving a finished thread (shielded: it runs while a task is being cancelled)."""

THREAD_START_ATTEMPTS: Final = 5
"""``thread/start`` attempts when the runtime answers "server overloaded" (jittered backoff)."""

STATE_RACE_ATTEMPTS: Final = 6
"""First start-up attempts of a member whose runtime exits because it "failed to initialize
state runtime": what the loser of a race gets when two processes (two batches, two pools)
start at once on a ``CODEX_HOME`` that none has initialized, and both create its state
database (0.163.0). A moment later the winner has made it and a new start succeeds."""

STATE_RACE_DELAY: Final = 0.2
"""Seconds before the first such retry, doubling after each (about 6 s in all at most)."""

_STATE_RACE: Final = "failed to initialize state runtime"

FAILOVER_ATTEMPTS: Final = 3
"""Placements of work whose member dies (or stops answering) before its turn started: a
``thread_start``, or ``pool.run``'s turn not yet sent. Each retry goes to a member that is
ready then; a turn that was sent is never retried (it may have acted), it fails."""

PROBE_INTERVAL: Final = 2.0
"""Seconds of silence from a member before the pool probes it (``probe_interval``). Any line
from the runtime counts as life, so a busy member is never probed."""

PROBE_TIMEOUT: Final = 10.0
"""Seconds a probed member may stay silent before it is declared unresponsive and killed
(``probe_timeout``). The probe is answered from memory in milliseconds; the margin covers a
loaded machine (2 cores, 8 runtimes), where a member still sends something every few ms."""

_PROBE = ("thread/loaded/list", {"limit": 1})
"""The liveness probe: cheap, read-only, touches neither disk nor the model."""

_THREAD_ONLY = frozenset({"dynamic_tools"})
_TURN_ONLY = frozenset({"handlers", "idle_timeout"})


def default_servers() -> int:
    """Processes per pool when not given: 1 per CPU, between 2 and 32.

    Measured on 2 cores (runtime 0.163.0, minimal trust store, the batch's opt-outs, lean
    threads, ``max_turns`` 16; medians of 3 alternating runs): 2 processes ran K = 128 one-turn
    tasks in 1.19 s and K = 256 in 2.41 s, 4 in 1.81 / 3.21 s, 8 (the old default, 4 per CPU)
    in 1.63 / 3.17 s; runtime CPU per turn 15.5-15.7 ms with 2, 17.5-19.1 ms with 4 or 8. Once
    the runtime no longer re-reads its trust store per turn, a process is no longer the
    bottleneck: more of them only cost CPU. Two at least, so a member that dies or is
    recycled leaves one serving. The table is in ``docs/pool-and-batch.md``."""
    return max(2, min(32, os.cpu_count() or 1))


DEFAULT_MAX_TURNS: Final = 8 * (os.cpu_count() or 1)
"""Turns running at once by default: 8 per CPU (more adds latency, not throughput)."""


class MemberStatistics(NamedTuple):
    member: int
    pid: int | None
    """The member's app-server process id (None while it is down)."""
    ready: bool
    starts: int
    """How many times its runtime was started (1 + restarts + recycles)."""
    open_threads: int
    running_turns: int
    threads_started: int
    """Threads started on the current process."""
    given_up: bool
    """It exited more often than ``max_restarts`` allows and is not restarted again."""


class PoolStatistics(NamedTuple):
    servers: int
    ready: int
    restarts: int
    """Restarts after a member died (recycling not counted)."""
    unresponsive: int
    """Members the watchdog killed for not answering (each counted in ``restarts`` too, if
    restarted)."""
    running_turns: int
    members: tuple[MemberStatistics, ...]


def _split_options(options: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keywords of ``pool.run``: those ``thread_start`` knows go to the thread, the rest to
    the turn (``output_schema``, ``effort``, ``idle_timeout``, ...)."""
    thread_fields = {f.name for f in attrs.fields(m.ThreadStartParams)} | _THREAD_ONLY
    thread: dict[str, Any] = {}
    turn: dict[str, Any] = {}
    for key, value in options.items():
        if key in _TURN_ONLY or key not in thread_fields:
            turn[key] = value
        else:
            thread[key] = value
    return thread, turn


def _lost_state_race(exc: TransportClosedError) -> bool:
    """Whether the runtime exited at start-up because another process was creating the state
    database of its ``CODEX_HOME`` (see :data:`STATE_RACE_ATTEMPTS`)."""
    return exc.returncode is not None and _STATE_RACE in exc.stderr_tail


class CodexPool(Lifespan[None]):
    """``servers`` app-server processes; threads placed on the least-loaded one.

    :param servers: how many processes (default :func:`default_servers`: 1 per CPU, 2-32).
    :param config: how to launch each member: one :class:`CodexConfig` for all, a sequence
        (one per member), or a function of the member index (e.g. a ``CODEX_HOME`` each).
    :param handlers: server-request handlers for every member (see :class:`AsyncCodex`).
    :param limits: buffer limits for every member's connection.
    :param max_turns: turns running at once in the whole pool (default 8 per CPU; None: no
        limit).
    :param turns_per_server: turns running at once per member (None: only ``max_turns``).
    :param thread_defaults: keywords applied to every ``thread_start`` (per-call keywords
        win; ``config`` dicts are merged). Default: :func:`lean_thread_options` (ephemeral,
        no shell snapshot, unused features off); pass ``{}`` for the runtime's defaults.
    :param max_restarts: restarts of one member allowed per ``restart_window`` seconds; one
        exit more than that within the window gives the member up (it stays down); once every
        member is given up, calls raise :class:`RestartsExhaustedError`.
    :param recycle_after: restart a member, once idle, after it has started this many threads
        (gives back the memory of ephemeral threads; None: never).
    :param probe_interval: seconds of silence after which a member is probed (default
        :data:`PROBE_INTERVAL`; None: no watchdog).
    :param probe_timeout: seconds a probed member may stay silent before it is declared
        unresponsive, killed and restarted (default :data:`PROBE_TIMEOUT`). A stopped member
        is found within ``2 * probe_interval + probe_timeout`` seconds (14 s by default).
    :param gateway: a :class:`~codex_anyio.gateway.ModelGateway` every member's model calls
        go through (see :class:`AsyncCodex`); started for as long as the pool runs if it is
        not running yet.
    :param opt_out_notification_methods: notifications no member's runtime sends, added to
        each member config's own (``CodexConfig.opt_out_notification_methods``; those the
        client reads itself are never opted out). Default: none, since a pooled thread may be
        streamed or subscribed to; :func:`~codex_anyio.result_only_opt_outs` for a pool whose
        turns are only run to their result (``pool.run``, ``codex-anyio batch``).
    """

    def __init__(
        self,
        servers: int | None = None,
        *,
        config: CodexConfig | Sequence[CodexConfig] | Callable[[int], CodexConfig] | None = None,
        handlers: Handlers | None = None,
        limits: Limits | None = None,
        max_turns: int | None = DEFAULT_MAX_TURNS,
        turns_per_server: int | None = None,
        thread_defaults: Mapping[str, Any] | None = None,
        max_restarts: int = 5,
        restart_window: float = 60.0,
        recycle_after: int | None = None,
        probe_interval: float | None = PROBE_INTERVAL,
        probe_timeout: float = PROBE_TIMEOUT,
        gateway: ModelCallSource | None = None,
        opt_out_notification_methods: Collection[str] = (),
    ) -> None:
        self.servers = servers if servers is not None else default_servers()
        self.gateway = gateway
        if self.servers < 1:
            raise ValueError("servers must be >= 1")
        if isinstance(config, Sequence) and len(config) != self.servers:
            raise ValueError(f"config has {len(config)} entries for {self.servers} servers")
        self._config = config
        self._opt_outs = tuple(opt_out_notification_methods)
        self._handlers = handlers
        self._limits = limits
        if max_turns is not None and max_turns < 1:
            raise ValueError("max_turns must be >= 1 (or None: no limit)")
        self.max_turns = max_turns
        self._turn_slots: anyio.Semaphore | None = None
        self._turns_per_server = turns_per_server
        self.thread_defaults: dict[str, Any] = dict(
            lean_thread_options() if thread_defaults is None else thread_defaults
        )
        self._max_restarts = max_restarts
        self._restart_window = restart_window
        self._recycle_after = recycle_after
        if (probe_interval is not None and probe_interval <= 0) or probe_timeout <= 0:
            raise ValueError("probe_interval and probe_timeout must be > 0")
        self._probe_interval = probe_interval
        self._probe_timeout = probe_timeout
        self._unresponsive = 0
        # Events and semaphores are made in _lifespan, inside the event loop that uses them
        # (the pool may be constructed outside one).
        self._members: list[_Member] = []
        self._changed: anyio.Event | None = None
        self._restarts = 0
        self._startup_error: TransportClosedError | None = None
        self._exhausted: RestartsExhaustedError | None = None
        """Set when the last member is given up: what every call then raises."""
        self._usage_ledger = UsageLedger()

    # -- lifecycle ------------------------------------------------------------------------

    def _config_for(self, index: int) -> CodexConfig:
        config = self._member_config(index)
        if not self._opt_outs:
            return config
        own = config.opt_out_notification_methods
        added = tuple(method for method in self._opt_outs if method not in own)
        return attrs.evolve(config, opt_out_notification_methods=own + added)

    def _member_config(self, index: int) -> CodexConfig:
        config = self._config
        if config is None:
            return CodexConfig()
        if isinstance(config, CodexConfig):
            return config
        if isinstance(config, Sequence):
            return config[index]
        return config(index)

    async def __aenter__(self) -> CodexPool:
        await self._enter_lifespan()
        return self

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            if self.gateway is not None:
                await stack.enter_async_context(self.gateway.ensure_running())
            await stack.enter_async_context(self._run_members())
            yield

    @asynccontextmanager
    async def _run_members(self) -> AsyncIterator[None]:
        self._members = [_Member(i) for i in range(self.servers)]
        self._changed = anyio.Event()
        self._turn_slots = anyio.Semaphore(self.max_turns) if self.max_turns else None
        self._startup_error = None
        self._exhausted = None
        async with anyio.create_task_group() as tg:
            # The first member starts alone: runtimes sharing a CODEX_HOME that none has
            # initialized yet race to create its state database, and all but one fail.
            for batch in (self._members[:1], self._members[1:]):
                for member in batch:
                    name = f"codex pool member {member.index}"
                    tg.start_soon(self._supervise, member, name=name)
                while self._startup_error is None and not all(
                    member.first_ready.is_set() for member in batch
                ):
                    await self._wait_changed()
                if self._startup_error is not None:
                    break
            if self._startup_error is not None:
                # One error, not a group of N identical ones: every member reads the same config.
                tg.cancel_scope.cancel()
                raise self._startup_error
            try:
                yield
            finally:
                tg.cancel_scope.cancel()

    def _notify(self) -> None:
        assert self._changed is not None
        self._changed.set()
        self._changed = anyio.Event()

    async def _wait_changed(self) -> None:
        assert self._changed is not None
        await self._changed.wait()

    async def _supervise(self, member: _Member) -> None:
        state_races = 0
        while True:
            codex = AsyncCodex(
                self._config_for(member.index),
                handlers=self._handlers,
                limits=self._limits,
                gateway=self.gateway,
            )
            # One ledger for every member: the pool's totals outlive a member's restart.
            codex._usage_ledger = self._usage_ledger
            try:
                async with codex:
                    member.codex = codex
                    member.starts += 1
                    member.threads_started = 0
                    member.retiring = False
                    if self._turns_per_server:
                        member.turn_slots = anyio.Semaphore(self._turns_per_server)
                    member.first_ready.set()
                    self._notify()
                    ended = await self._watch(member, codex)
            except TransportClosedError as exc:  # StartupError is one
                if not member.first_ready.is_set():
                    if _lost_state_race(exc) and state_races + 1 < STATE_RACE_ATTEMPTS:
                        logger.info(
                            "pool member %d: another process was initializing CODEX_HOME; "
                            "starting again",
                            member.index,
                        )
                        await anyio.sleep(STATE_RACE_DELAY * 2**state_races)
                        state_races += 1
                        continue
                    if self._startup_error is None:
                        self._startup_error = exc
                    self._notify()
                    return
                logger.warning("pool member %d could not restart: %s", member.index, exc)
                ended = exc
            finally:
                member.codex = None
                self._notify()
            if ended is None:
                logger.debug("pool member %d recycled", member.index)
                continue
            if not self._may_restart(member):
                self._give_up(member, ended)
                return
            logger.warning("pool member %d exited; restarting it", member.index)
            self._restarts += 1

    async def _watch(self, member: _Member, codex: AsyncCodex) -> TransportClosedError | None:
        """Wait until the member's connection ends (its error) or it is retired and idle
        (None)."""
        ended: TransportClosedError | None = None
        async with anyio.create_task_group() as tg:

            async def until_retired() -> None:
                while not (member.retiring and member.idle):
                    await self._wait_changed()
                tg.cancel_scope.cancel()

            if self._recycle_after:
                tg.start_soon(until_retired)
            if self._probe_interval is not None:
                tg.start_soon(self._watchdog, member, codex.client, self._probe_interval)
            ended = await codex.client.wait_closed()
            tg.cancel_scope.cancel()
        return ended

    async def _watchdog(self, member: _Member, client: CodexClient, interval: float) -> None:
        """Kill the member once it has been silent for ``interval`` seconds and then for the
        probe's ``probe_timeout`` too. Silence is judged on the reader: a reader held up by our
        own consumers (backpressure) is not the member's silence."""

        def heard_since(seen: int) -> bool:
            stats = client.statistics()
            return stats.chunks_received != seen or not stats.awaiting_input

        while True:
            seen = client.statistics().chunks_received
            await anyio.sleep(interval)
            if heard_since(seen):
                continue
            try:
                if await self._probe(client) or heard_since(seen):
                    continue
            except TransportClosedError:
                return  # it ended by itself; the supervisor takes over
            break
        self._unresponsive += 1
        silent = interval + self._probe_timeout
        error = ServerUnresponsiveError(
            f"pool member {member.index} (app-server pid {member.pid}) sent nothing for "
            f"{silent:g} s, a liveness probe's {self._probe_timeout:g} s included "
            f"(probe_interval={interval:g}, probe_timeout={self._probe_timeout:g}); it was "
            "killed and is restarted",
            silent_for=silent,
        )
        logger.error("%s", error)
        await client.abandon(error)

    async def _probe(self, client: CodexClient) -> bool:
        """Whether the member answered the probe within ``probe_timeout`` (an error answer
        is an answer)."""
        with anyio.move_on_after(self._probe_timeout):
            try:
                await client.request(*_PROBE)
            except (JsonRpcError, ProtocolError):
                pass
            return True
        return False

    def _may_restart(self, member: _Member) -> bool:
        """At most ``max_restarts`` restarts of one member per ``restart_window``: a runtime
        that keeps exiting (a bad binary, a broken home) is given up rather than retried at a
        slower pace while callers wait on a pool with nothing ready."""
        now = anyio.current_time()
        times = member.restart_times
        while times and now - times[0] > self._restart_window:
            times.popleft()
        if len(times) >= self._max_restarts:
            return False
        times.append(now)
        return True

    def _give_up(self, member: _Member, last: TransportClosedError) -> None:
        """Leave ``member`` down for good; with the last one, fail every waiting call."""
        left = sum(mb.given_up is None for mb in self._members) - 1
        consequence = f"{left} member(s) left" if left else "no member of the pool is left"
        member.given_up = RestartsExhaustedError(
            f"pool member {member.index} exited {self._max_restarts + 1} times within "
            f"{self._restart_window:g} s, more than max_restarts={self._max_restarts} allows; "
            f"it is not restarted again and {consequence} (last exit: {last.reason})",
            returncode=last.returncode,
            stderr_tail=last.stderr_tail,
            member=member.index,
            max_restarts=self._max_restarts,
            restart_window=self._restart_window,
        )
        logger.error("%s", member.given_up)
        if not left:
            self._exhausted = member.given_up
        self._notify()

    # -- placement and slots --------------------------------------------------------------

    def _candidates(self) -> list[_Member]:
        ready = [mb for mb in self._members if mb.ready]
        fresh = [mb for mb in ready if not mb.retiring]
        if fresh:
            return fresh
        # Every member is retiring: wait for one to drain and restart, unless all that keeps
        # it up is threads nobody finished and no turn runs on it; that wait would never end.
        return [mb for mb in ready if mb.running_turns == 0 and mb.open_threads > 0]

    async def _place(self) -> _Member:
        """The least-loaded ready member, its open-thread count already taken."""
        if not self._running:
            raise RuntimeError("CodexPool is not running; use 'async with CodexPool() as pool'")
        while True:
            ready = self._candidates()
            if ready:
                member = min(ready, key=lambda mb: (mb.open_threads, mb.running_turns, mb.index))
                member.open_threads += 1
                return member
            if self._exhausted is not None:
                raise self._exhausted.clone()
            await self._wait_changed()

    def _release_thread(self, member: _Member) -> None:
        member.open_threads -= 1
        if member.retiring:
            self._notify()

    def _check_alive(self, thread: PooledThread) -> None:
        if thread._member.codex is not thread._codex:
            raise TransportClosedError(
                f"the app-server of pool member {thread.member} that held thread {thread.id} "
                "exited; the thread is gone with it"
            )

    async def _take_turn_slot(self, thread: PooledThread) -> Callable[[], None]:
        self._check_alive(thread)
        member = thread._member
        member_slots = member.turn_slots
        if member_slots is not None:
            await member_slots.acquire()
        try:
            if self._turn_slots is not None:
                await self._turn_slots.acquire()
        except BaseException:
            if member_slots is not None:
                member_slots.release()
            raise
        member.running_turns += 1
        released = False

        def release() -> None:
            nonlocal released
            if released:
                return
            released = True
            member.running_turns -= 1
            if member.retiring:
                self._notify()
            if self._turn_slots is not None:
                self._turn_slots.release()
            if member_slots is not None:
                member_slots.release()

        return release

    # -- public ---------------------------------------------------------------------------

    async def thread_start(self, **options: Any) -> PooledThread:
        """Start a thread on the least-loaded member (``AsyncCodex.thread_start`` keywords,
        over ``thread_defaults``). Call :meth:`finish_thread` when done with it.

        If the member dies or stops answering first, the start is retried on another one
        (:data:`FAILOVER_ATTEMPTS` placements in all).

        :raises RestartsExhaustedError: once no member is left to place it on.
        """
        params = merge_options(self.thread_defaults, options)
        for attempt in range(1, FAILOVER_ATTEMPTS + 1):
            member = await self._place()
            try:
                thread = await self._start_on(member, params)
            except TransportClosedError as exc:
                self._release_thread(member)
                if attempt == FAILOVER_ATTEMPTS:
                    raise
                logger.info(
                    "thread/start on pool member %d failed; retrying: %s", member.index, exc
                )
                continue
            except BaseException:
                self._release_thread(member)
                raise
            return self._started(member, thread)
        raise AssertionError("unreachable")  # pragma: no cover

    @staticmethod
    async def _start_on(member: _Member, params: dict[str, Any]) -> Thread:
        codex = member.codex
        assert codex is not None
        return await retry_on_overload(
            lambda: codex.thread_start(**params), max_attempts=THREAD_START_ATTEMPTS
        )

    def _started(self, member: _Member, thread: Thread) -> PooledThread:
        member.threads_started += 1
        if self._recycle_after and member.threads_started >= self._recycle_after:
            member.retiring = True
            self._notify()
        return PooledThread(self, member, thread)

    async def finish_thread(self, thread: PooledThread, *, archive: bool = True) -> None:
        """Stop counting ``thread`` towards its member's load, and archive it (which unloads
        it from the runtime) unless it is ephemeral. Shielded, bounded; never raises for a
        thread whose process is gone."""
        if thread._finished:
            return
        thread._finished = True
        try:
            alive = thread._member.codex is thread._codex
            ephemeral = bool(getattr(thread.info, "ephemeral", False))
            if archive and alive and not ephemeral:
                with anyio.CancelScope(shield=True), anyio.move_on_after(FINISH_TIMEOUT):
                    try:
                        await thread._codex.client.thread_archive(thread_id=thread.id)
                    except (JsonRpcError, TransportClosedError, RuntimeError) as exc:
                        logger.debug("archiving %s: %s", thread.id, exc)
        finally:
            self._release_thread(thread._member)

    async def run(self, input: Input, **options: Any) -> TurnResult:
        """One-shot task: a new thread, one turn, the thread finished.

        Keywords ``thread_start`` accepts (``model``, ``cwd``, ``config``, ``ephemeral``,
        ``dynamic_tools``, ``approval_policy``, ...) configure the thread; the others
        (``output_schema``, ``effort``, ``idle_timeout``, ``handlers``...) the turn.
        Cancelling the caller interrupts the turn, as with :meth:`Thread.run`. Work whose
        member dies or stops answering before the turn was sent is retried on another member
        (see :meth:`thread_start`); a turn that was sent fails with the member's
        :class:`TransportClosedError` (:class:`ServerUnresponsiveError` for a member that
        stopped answering).
        """
        thread_options, turn_options = _split_options(options)
        for attempt in range(1, FAILOVER_ATTEMPTS + 1):
            thread = await self.thread_start(**thread_options)
            try:
                return await thread.run(input, **turn_options)
            except TransportClosedError:
                # Its member died before the turn was sent: nothing ran, place it anew.
                if thread._turn_sent or attempt == FAILOVER_ATTEMPTS:
                    raise
            finally:
                await self.finish_thread(thread)
        raise AssertionError("unreachable")  # pragma: no cover

    def usage(self) -> TokenUsage:
        """Tokens spent by the turns run on the pool's members since it started (restarted
        members included): the sum of their ``TurnResult.usage``."""
        return self._usage_ledger.total

    def member_pids(self) -> list[int | None]:
        """Each member's app-server pid (None while it is down)."""
        return [member.pid for member in self._members]

    async def wait_ready(self, member: int | None = None) -> None:
        """Wait until every member (or one) has a running app-server.

        :raises RestartsExhaustedError: if one of them was given up (it never will).
        """
        targets = self._members if member is None else [self._members[member]]
        while not all(mb.ready for mb in targets):
            for mb in targets:
                if mb.given_up is not None:
                    raise mb.given_up.clone()
            await self._wait_changed()

    async def wait_changed(self) -> None:
        """Wait for the next change of the pool's members: one down, up, retiring or idle.
        Loop on it with a condition on :meth:`statistics`."""
        await self._wait_changed()

    def statistics(self) -> PoolStatistics:
        members = tuple(
            MemberStatistics(
                member=mb.index,
                pid=mb.pid,
                ready=mb.ready,
                starts=mb.starts,
                open_threads=mb.open_threads,
                running_turns=mb.running_turns,
                threads_started=mb.threads_started,
                given_up=mb.given_up is not None,
            )
            for mb in self._members
        )
        return PoolStatistics(
            servers=self.servers,
            ready=sum(s.ready for s in members),
            restarts=self._restarts,
            unresponsive=self._unresponsive,
            running_turns=sum(s.running_turns for s in members),
            members=members,
        )

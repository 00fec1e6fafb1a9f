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
- **Accounts and usage limits** (``_accounts``). Each member runs on an account (by default
  one for all; ``accounts=[home, ...]`` spreads the members over several ``CODEX_HOME`` folders,
  each with its own login). A turn that fails with the usage limit, or a rate-limit snapshot
  with a window used above ``rate_limit_threshold``, pauses its account until the window
  resets: its members take no new thread or turn, the other accounts keep serving, and
  ``pool.run`` places the work that hit the limit again (a new thread, on an account with
  headroom) instead of failing it. With every account paused, work waits for the first reset
  (at most ``max_wait`` seconds, then :class:`UsageLimitWaitError`).
- **Owners.** ``thread_resume`` and ``thread_fork`` go to a member whose ``CODEX_HOME`` holds
  the thread: the one the pool put it on, or the first home whose runtime finds it.
- **Recycling.** Ephemeral threads cannot be unloaded (~0.9 MB each until the process exits);
  with ``recycle_after=N`` a member that has started N threads takes no new ones and is
  restarted once it holds no open thread and runs no turn.

Leaving ``async with`` closes every member in parallel, each shielded and bounded (see
``_transport``), with its whole process tree.
"""

from __future__ import annotations

import functools
import logging
import os
import time
from collections import OrderedDict
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
    UsageLimitError,
    UsageLimitWaitError,
)
from .._groups import Lifespan
from .._protocol._generated import models as m
from .._rpc._connection import CodexClient
from .._rpc._retry import retry_on_overload
from .._rpc._router import Limits
from .._rpc._usage import TokenUsage, UsageLedger, utc_datetime
from .._wire._config import CodexConfig
from ._accounts import (
    DEFAULT_RATE_LIMIT_THRESHOLD,
    Account,
    AccountPaused,
    AccountStatistics,
    account_homes,
    describe_pause,
    limit_pause,
    window_pause,
)
from ._member import Member as _Member
from ._thread import PooledThread

__all__ = [
    "AccountStatistics",
    "CodexPool",
    "MemberStatistics",
    "PoolStatistics",
    "default_servers",
]

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

OWNERS_KEPT: Final = 65536
"""Threads whose home the pool remembers for ``thread_resume``/``thread_fork`` (the oldest
forgotten first; a forgotten one is found by asking each home's runtime)."""

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
    account: int = 0
    """The account it runs on (see :class:`AccountStatistics`)."""


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
    accounts: tuple[AccountStatistics, ...] = ()
    """Each account, and whether (until when, why) it is paused."""

    @property
    def paused(self) -> str:
        """``paused until 14:05 (account 1: usage limit reached)`` for each paused account,
        joined by "; " (empty if none is): what a progress display shows."""
        return "; ".join(
            describe_pause(a.account, a.paused_until.timestamp(), a.reason)
            for a in self.accounts
            if a.paused_until is not None
        )


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
    :param accounts: ``CODEX_HOME`` folders, each with its own login: member ``i`` runs on
        ``accounts[i % len(accounts)]`` (its config's ``codex_home`` is replaced), so a usage
        limit pauses only the members of its account. ``servers`` defaults to at least one
        per account. Default: one account, whatever each member's config says.
    :param rate_limit_threshold: percent of a rate-limit window above which its account takes
        no new turn until the window resets (default 95; None: pause only at the limit).
    :param max_wait: seconds a call waits while every account is paused, before it raises
        :class:`UsageLimitWaitError` (default None: until the first account resumes).
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
        accounts: Sequence[str | os.PathLike[str]] | None = None,
        rate_limit_threshold: float | None = DEFAULT_RATE_LIMIT_THRESHOLD,
        max_wait: float | None = None,
    ) -> None:
        homes = account_homes(accounts)
        self._accounts = [Account(index, home) for index, home in enumerate(homes)]
        self._own_accounts = accounts is not None
        if servers is None:
            servers = max(default_servers(), len(homes))
        self.servers = servers
        self.gateway = gateway
        if self.servers < 1:
            raise ValueError("servers must be >= 1")
        if self.servers < len(homes):
            raise ValueError(f"{self.servers} servers for {len(homes)} accounts: one each at least")
        if rate_limit_threshold is not None and not 0 < rate_limit_threshold <= 100:
            raise ValueError("rate_limit_threshold is a percentage in (0, 100], or None")
        if max_wait is not None and max_wait < 0:
            raise ValueError("max_wait must be >= 0 seconds (or None: no bound)")
        self._threshold = 100.0 if rate_limit_threshold is None else float(rate_limit_threshold)
        self.max_wait = max_wait
        self._all_paused_since: float | None = None
        """When every account became paused (``anyio.current_time()``), for ``max_wait``."""
        self._owners: OrderedDict[str, str | None] = OrderedDict()
        """Thread id -> the ``CODEX_HOME`` holding it, for resume and fork."""
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
        if self._own_accounts:
            config = attrs.evolve(config, codex_home=self._account_of(index).home)
        if not self._opt_outs:
            return config
        own = config.opt_out_notification_methods
        added = tuple(method for method in self._opt_outs if method not in own)
        return attrs.evolve(config, opt_out_notification_methods=own + added)

    def _account_of(self, index: int) -> Account:
        return self._accounts[index % len(self._accounts)]

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
        self._members = [_Member(i, account=self._account_of(i)) for i in range(self.servers)]
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
            config = self._config_for(member.index)
            member.home = config.home()
            codex = AsyncCodex(
                config,
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

    def _candidates(
        self, now: float, fits: Callable[[_Member], bool] | None = None
    ) -> list[_Member]:
        ready = [
            mb
            for mb in self._members
            if mb.ready and not mb.account.paused(now) and (fits is None or fits(mb))
        ]
        fresh = [mb for mb in ready if not mb.retiring]
        if fresh:
            return fresh
        # Every member is retiring: wait for one to drain and restart, unless all that keeps
        # it up is threads nobody finished and no turn runs on it; that wait would never end.
        return [mb for mb in ready if mb.running_turns == 0 and mb.open_threads > 0]

    def _next_resume(self, now: float) -> float | None:
        """When every account with a member left is paused: the moment the first resumes.
        Otherwise None (and the pool is no longer "all paused")."""
        times: list[float] = []
        for account in self._accounts:
            if not any(mb.account is account and mb.given_up is None for mb in self._members):
                continue
            if not account.paused(now) or account.paused_until is None:
                self._all_paused_since = None
                return None
            times.append(account.paused_until)
        if not times:
            return None
        if self._all_paused_since is None:
            self._all_paused_since = anyio.current_time()
        return min(times)

    async def _wait_for_headroom(self, now: float) -> None:
        """Wait for the pool to change, or, while every account is paused, for the first
        reset; raise :class:`UsageLimitWaitError` once every account has been paused for
        ``max_wait`` seconds (at once for every later call, until one resumes)."""
        resume = self._next_resume(now)
        if resume is None:
            await self._wait_changed()
            return
        assert self._all_paused_since is not None
        await self._wait_for_resume(resume, self._all_paused_since)

    async def _wait_for_resume(
        self, resume: float, since: float, account: Account | None = None
    ) -> None:
        """Wait for the pool to change, at most until ``resume`` (wall clock); raise
        :class:`UsageLimitWaitError` once ``max_wait`` seconds have passed ``since`` (for
        every account, or ``account``'s)."""
        wait = resume - time.time()
        if self.max_wait is not None:
            left = since + self.max_wait - anyio.current_time()
            if left <= 0:
                raise self._wait_exceeded(resume, since, self.max_wait, account)
            wait = min(wait, left)
        with anyio.move_on_after(wait):
            await self._wait_changed()

    async def _place(self, fits: Callable[[_Member], bool] | None = None) -> _Member:
        """The least-loaded ready member (among those that ``fits``) on an account that is not
        paused, its open-thread count already taken. While every account is paused, waits for
        the first reset (see :meth:`_wait_for_headroom`)."""
        if not self._running:
            raise RuntimeError("CodexPool is not running; use 'async with CodexPool() as pool'")
        while True:
            now = time.time()
            ready = self._candidates(now, fits)
            if ready:
                member = min(ready, key=lambda mb: (mb.open_threads, mb.running_turns, mb.index))
                member.open_threads += 1
                return member
            if self._exhausted is not None:
                raise self._exhausted.clone()
            await self._wait_for_headroom(now)

    async def wait_for_account(self) -> None:
        """Return once some account may take new turns: at once unless every account is
        paused by its usage limit; then at the first reset.

        A caller with a deadline per task (``codex-anyio batch``) waits here first, so the
        hours until a reset do not count against the task's own time.

        :raises UsageLimitWaitError: once every account has been paused for ``max_wait``.
        """
        while self._next_resume(time.time()) is not None:
            await self._wait_for_headroom(time.time())

    def _wait_exceeded(
        self, resume: float, since: float, max_wait: float, account: Account | None = None
    ) -> UsageLimitWaitError:
        """The error of a wait past ``max_wait``: for every account (``account`` None), or for
        the one that holds a thread."""
        paused = [a for a in self._accounts if a.paused()] if account is None else [account]
        reasons = tuple(a.describe() for a in paused)
        which = "every account of the pool is" if account is None else "the thread's account is"
        return UsageLimitWaitError(
            f"{which} paused by its usage limit ({'; '.join(reasons)}): waited "
            f"max_wait={max_wait:g} s",
            resets_at=utc_datetime(resume),
            waited=anyio.current_time() - since,
            reasons=reasons,
        )

    def _pause(self, account: Account, until: float, reason: str) -> None:
        if account.pause(until, reason):
            logger.warning("pool %s", account.describe())
            self._notify()

    def _observe_limits(self, member: _Member) -> None:
        """After a turn on ``member``: pause its account if the runtime's latest rate-limit
        snapshot shows a window at or above the threshold (see ``_accounts``)."""
        codex = member.codex
        if codex is None:
            return
        try:
            limits = codex.client.rate_limits
        except RuntimeError:
            return
        if not limits.updates:
            return
        pause = window_pause(limits, self._threshold, time.time())
        if pause is not None:
            self._pause(member.account, *pause)

    def _usage_limited(self, thread: PooledThread, exc: UsageLimitError) -> None:
        """A turn on ``thread`` failed with the usage limit: pause its account until the
        reset (what the pooled thread reports; ``pool.run`` then places its work again)."""
        if getattr(exc, "_pool_noted", False):
            return  # the turn's own exit reported it already (a goal's caller reports too)
        exc._pool_noted = True  # type: ignore[attr-defined]
        account = thread._member.account
        account.usage_limits += 1
        self._pause(account, *limit_pause(exc, time.time()))

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

    async def _wait_unpaused(self, thread: PooledThread) -> None:
        """Before a turn on ``thread``: wait while its account is paused (a turn would fail at
        the limit), at most ``max_wait`` seconds; for a ``replaceable`` thread on which no turn
        was sent, raise :class:`AccountPaused` at once instead (its work is placed again)."""
        account = thread._member.account
        waiting_since = anyio.current_time()
        while account.paused():
            if thread._replaceable and not thread._turn_sent:
                raise AccountPaused
            assert account.paused_until is not None
            await self._wait_for_resume(account.paused_until, waiting_since, account)

    async def _take_turn_slot(self, thread: PooledThread) -> Callable[[], None]:
        self._check_alive(thread)
        member = thread._member
        while True:
            await self._wait_unpaused(thread)
            release = await self._acquire_slots(member)
            if not member.account.paused():
                return release
            release()  # paused while this turn waited for its slot

    async def _acquire_slots(self, member: _Member) -> Callable[[], None]:
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
            self._observe_limits(member)
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
        if not getattr(thread.info, "ephemeral", False):
            self._remember_owner(thread.id, member.home)
        return PooledThread(self, member, thread)

    def _remember_owner(self, thread_id: str, home: str | None) -> None:
        self._owners[thread_id] = home
        self._owners.move_to_end(thread_id)
        while len(self._owners) > OWNERS_KEPT:
            self._owners.popitem(last=False)

    def _homes(self, thread_id: str) -> list[str | None]:
        """The homes to look for ``thread_id`` in: the one remembered for it, or every home
        of a member that is not given up, in member order."""
        if thread_id in self._owners:
            return [self._owners[thread_id]]
        homes: list[str | None] = []
        for member in self._members:
            home = member.home
            if member.given_up is None and home not in homes:
                homes.append(home)
        return homes

    async def _reopen(self, method: str, thread_id: str, options: dict[str, Any]) -> PooledThread:
        """``thread_resume`` or ``thread_fork`` of ``thread_id`` on a member of the home that
        holds it: the remembered one, else each home in turn until one's runtime finds it."""
        homes = self._homes(thread_id)
        for index, home in enumerate(homes):

            def in_home(mb: _Member, home: str | None = home) -> bool:
                return mb.home == home

            member = await self._place(in_home)
            codex = member.codex
            assert codex is not None
            try:
                call = functools.partial(getattr(codex, method), thread_id, **options)
                thread = await retry_on_overload(call, max_attempts=THREAD_START_ATTEMPTS)
            except JsonRpcError as exc:
                self._release_thread(member)
                if index + 1 == len(homes):
                    raise
                logger.debug("%s %s on pool member %d: %s", method, thread_id, member.index, exc)
                continue
            except BaseException:
                self._release_thread(member)
                raise
            return self._started(member, thread)
        raise AssertionError("unreachable")  # pragma: no cover

    async def thread_resume(self, thread_id: str, **options: Any) -> PooledThread:
        """Resume a stored thread on a member whose ``CODEX_HOME`` holds it
        (``AsyncCodex.thread_resume`` keywords): the home the pool started it in, or else the
        first home whose runtime finds it (with one home for all, the least-loaded member).
        Call :meth:`finish_thread` when done with it.

        :raises JsonRpcError: the runtime's answer if no home holds it.
        """
        return await self._reopen("thread_resume", thread_id, options)

    async def thread_fork(self, thread_id: str, **options: Any) -> PooledThread:
        """Fork a stored thread into a new one, on a member whose ``CODEX_HOME`` holds it (see
        :meth:`thread_resume`); the fork lives in the same home."""
        return await self._reopen("thread_fork", thread_id, options)

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
        stopped answering). A turn that fails with the usage limit pauses its account and
        the work is placed again, as often as it takes (see the module docstring).

        :raises UsageLimitWaitError: if every account stays paused longer than ``max_wait``.
        """
        thread_options, turn_options = _split_options(options)
        attempt = 1
        while True:
            thread = await self.thread_start(**thread_options)
            thread._replaceable = True
            try:
                return await thread.run(input, **turn_options)
            except UsageLimitWaitError:
                raise
            except (UsageLimitError, AccountPaused):
                # Its account is paused now (the pooled thread reported it, or it was paused
                # before the turn went out): place the work again, on an account with
                # headroom or once this one resets.
                continue
            except TransportClosedError:
                # Its member died before the turn was sent: nothing ran, place it anew.
                if thread._turn_sent or attempt == FAILOVER_ATTEMPTS:
                    raise
                attempt += 1
            finally:
                await self.finish_thread(thread)

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
                account=mb.account.index,
            )
            for mb in self._members
        )
        accounts = tuple(
            account.statistics(tuple(mb.index for mb in self._members if mb.account is account))
            for account in self._accounts
        )
        return PoolStatistics(
            servers=self.servers,
            ready=sum(s.ready for s in members),
            restarts=self._restarts,
            unresponsive=self._unresponsive,
            running_turns=sum(s.running_turns for s in members),
            members=members,
            accounts=accounts,
        )

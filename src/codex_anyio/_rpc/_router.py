"""Routing notifications to the subscriptions that want them, without ever blocking.

Three kinds of subscription:

* a **turn** stream, keyed by turn id: every notification that carries that turn id, in
  order, ending after its ``turn/completed``;
* a **thread** stream, keyed by thread id: the thread's own notifications (no turn id), plus
  its turns' notifications when asked for (``include_turns``), plus, always, notifications of
  that thread's turns that no turn stream owns (a turn started by another client, or by the
  server), so they are never lost while someone listens to the thread;
* a **global** stream: notifications that carry no thread (``configWarning``, rate limits,
  ...) and anything no turn or thread subscriber took; ``everything=True`` makes it a tap
  that sees every notification.

A turn may also have **observers** (``client.subscribe_turn(turn_id)`` on a turn that already
has a stream, or ``TurnHandle.observe()``): independent streams that see every later event of
the turn; the owner's stream is what ``TurnHandle`` consumes.

A turn stream must exist from the moment ``turn/start`` is written, but its id is only known
from the response, and the runtime may send the turn's first notifications before that
response. So while a ``turn/start`` is in flight on a thread, every notification of that
thread is stashed (bounded) in wire order; when the response names the turn, its stream is
created and the stash is routed in order, so the turn stream, and the thread's subscribers,
see wire order. ``everything`` taps receive each notification as it is read, stashed or not,
so they see wire order too. Only the catch-all global subscription may see a stashed
notification of a thread after a later one of another thread.

Notifications that nobody subscribes to are counted (``statistics().unrouted``) and dropped:
holding them for a reader that may never come is how the official SDK's queue grows without
bound. Full buffers: see the backpressure policy in ``_notifications.py``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NamedTuple

import anyio
import attrs

from .._exceptions import fresh
from .._protocol._generated.registry import NOTIFICATIONS
from ._notifications import Notification, NotificationStream, _Subscription, open_subscription

__all__ = ["Limits", "Router", "RouterStatistics"]

logger = logging.getLogger("codex_anyio")


@attrs.frozen(kw_only=True)
class Limits:
    """Every bound the client keeps: buffers, waits and in-flight work. Per client unless noted.

    :param turn_buffer: events buffered per turn stream (a turn with a long command output
        can send thousands of deltas; 10,000 small events is a few MB).
    :param subscription_buffer: likewise for each thread and global subscription.
    :param backlog: events parked behind full buffers, across all subscriptions, before the
        reader stops reading (real backpressure into the pipe; see ``_notifications.py``).
    :param overflow_grace: seconds a consumer may take nothing while events wait for it
        before it is cut off with ``SubscriptionOverflowError``.
    :param turn_start_stash: events held per thread while a ``turn/start`` is in flight and
        the new turn's id is not known yet; beyond it the oldest are routed at once.
    :param server_requests: server requests handled at once; more are answered at once with
        a JSON-RPC "server busy" error instead of queuing without bound.
    :param requests_in_flight: client requests awaiting their response at once; more wait
        their turn in the client. The runtime answers ``-32001 Server overloaded`` beyond
        ~128-170 queued requests per process (measured), so a burst queues here instead.
    :param overload_retries: attempts in all for a request the runtime rejects as overloaded
        (``-32001``, answered before it did anything), with jittered exponential backoff from
        0.05 s to 1 s. 1 disables the retries.
    :param interrupt_timeout: seconds, in all, for the clean-up of a turn whose owner left
        early: ``turn/interrupt`` (retried while the runtime has not set the turn up yet) and
        the wait for its ``turn/completed`` (measured: ~115 ms). After it, the owner's
        exception or cancellation continues anyway.
    :param write_timeout: seconds a message may take to be written; a runtime that reads
        nothing for that long is declared dead. A caller's own deadline wins before that.
    :param initialize_timeout: seconds the app-server gets to answer ``initialize`` at
        start-up (measured: a few ms once the process runs); a runtime that never answers, or
        a server that accepts the connection and then says nothing, is a ``StartupError``
        naming this limit instead of a start-up that never returns. ``None``: no bound.
    :param ping_interval: over WebSocket (``CodexConfig(connect=...)``): after this many
        seconds in which the server sent nothing, send a ping. ``None``: never ping.
    :param ping_timeout: seconds a pinged server has to send anything (its pong, or any
        message) before the connection is declared dead: every waiter then fails with
        ``TransportClosedError`` naming this limit. This is what ends a connection to a server
        that hangs or was stopped (``SIGSTOP``) mid-turn, in at most ``ping_interval +
        ping_timeout`` seconds. On stdio there is no ping: bound a turn with its own
        ``idle_timeout`` (and requests with ``anyio.fail_after``).
    :param max_line_bytes: longest line (or WebSocket message) accepted from the app-server;
        a WebSocket frame whose header announces more is refused before it is read.
    :param stderr_tail_bytes: how much of the app-server's stderr is kept for error messages.
    """

    turn_buffer: int = 10_000
    subscription_buffer: int = 10_000
    backlog: int = 10_000
    overflow_grace: float = 5.0
    turn_start_stash: int = 10_000
    server_requests: int = 256
    requests_in_flight: int = 100
    overload_retries: int = 8
    interrupt_timeout: float = 10.0
    write_timeout: float = 30.0
    initialize_timeout: float | None = 60.0
    ping_interval: float | None = 20.0
    ping_timeout: float = 20.0
    max_line_bytes: int = 256 * 1024 * 1024
    stderr_tail_bytes: int = 64 * 1024


class RouterStatistics(NamedTuple):
    turn_streams: int
    turn_observers: int
    thread_subscriptions: int
    global_subscriptions: int
    turn_starts_in_flight: int
    stashed: int
    parked: int
    routed: int
    unrouted: int
    overflowed: int
    schema_mismatches: int


BACKLOG_POLL: float = 0.01
"""While the backlog is full the reader re-checks its consumers this often (it stops reading
then, so this only runs when ``Limits.backlog`` events wait for stalled or slow consumers)."""


class _ThreadSub:
    __slots__ = ("include_turns", "sub")

    def __init__(self, sub: _Subscription, include_turns: bool) -> None:
        self.sub = sub
        self.include_turns = include_turns


class _GlobalSub:
    __slots__ = ("everything", "sub")

    def __init__(self, sub: _Subscription, everything: bool) -> None:
        self.sub = sub
        self.everything = everything


_FLAT, _NESTED = 1, 2


def _scope_of(method: str) -> tuple[int, int]:
    """How to find (thread id, turn id) in a method's params: 0 absent, 1 flat, 2 nested."""
    spec = NOTIFICATIONS.get(method)
    if spec is None:  # a method newer than our schema: best effort on the usual names
        return _FLAT, _FLAT
    thread = {None: 0, "threadId": _FLAT}.get(spec.thread_id_key, _NESTED)
    turn = {None: 0, "turnId": _FLAT}.get(spec.turn_id_key, _NESTED)
    return thread, turn


_SCOPES: dict[str, tuple[int, int]] = {}

_FLAT_TURN = frozenset(
    method
    for method, spec in NOTIFICATIONS.items()
    if spec.turn_id_key == "turnId" and spec.thread_id_key == "threadId"
)
"""Methods whose params carry ``turnId`` and ``threadId`` at the top (deltas among them): the
fast path of ``Router.route`` handles them without computing a scope."""


def _ids(method: str, params: dict[str, Any]) -> tuple[str | None, str | None]:
    """(thread id, turn id) of a notification; anything but a string counts as absent."""
    scope = _SCOPES.get(method)
    if scope is None:
        scope = _SCOPES[method] = _scope_of(method)
    thread_mode, turn_mode = scope
    thread_id: Any = None
    turn_id: Any = None
    if thread_mode == _FLAT:
        thread_id = params.get("threadId")
    elif thread_mode:
        thread = params.get("thread")
        thread_id = thread.get("id") if type(thread) is dict else None
    if turn_mode == _FLAT:
        turn_id = params.get("turnId")
    elif turn_mode:
        turn = params.get("turn")
        turn_id = turn.get("id") if type(turn) is dict else None
    return (
        thread_id if type(thread_id) is str else None,
        turn_id if type(turn_id) is str else None,
    )


class Router:
    """The routing tables; used only from the reader task and the tasks it serves."""

    def __init__(
        self,
        limits: Limits,
        on_turn_completed: Callable[[str], None] | None = None,
    ) -> None:
        self._limits = limits
        self._on_turn_completed = on_turn_completed
        self._turns: dict[str, _Subscription] = {}
        self._observers: dict[str, list[_Subscription]] = {}
        self._threads: dict[str, list[_ThreadSub]] = {}
        self._globals: list[_GlobalSub] = []
        self._taps = 0
        self._starting: dict[str, int] = {}
        self._stash: dict[str, list[Notification]] = {}
        self._closed_error: BaseException | None = None
        self._routed = 0
        self._unrouted = 0
        self._overflowed = 0
        self._mismatches: dict[str, int] = {}
        self.blocked: list[_Subscription] = []
        """Subscriptions with parked events: the reader services them (``service``)."""

    # -- subscribing -----------------------------------------------------------------------

    def _check_open(self) -> None:
        error = self._closed_error
        if error is not None:
            raise fresh(error)

    def subscribe_turn(self, turn_id: str) -> NotificationStream:
        """A stream of one turn's notifications.

        The first stream of a turn is its owner's (``turn/completed`` ends it and runs the
        turn's clean-up); a turn that already has one gets an observer: an independent
        stream of every later event, which also ends after ``turn/completed``.
        """
        self._check_open()
        if turn_id in self._turns:
            return self._observe_turn(turn_id)
        sub, stream = open_subscription(
            limit=self._limits.turn_buffer,
            what=f"the stream of turn {turn_id}",
            on_detach=lambda s: self._detach_turn(turn_id, s),
        )
        self._turns[turn_id] = sub
        return stream

    def _observe_turn(self, turn_id: str) -> NotificationStream:
        def detach(sub: _Subscription) -> None:
            observers = self._observers.get(turn_id)
            if observers is not None and sub in observers:
                observers.remove(sub)
                if not observers:
                    del self._observers[turn_id]

        sub, stream = open_subscription(
            limit=self._limits.turn_buffer,
            what=f"an observer of turn {turn_id}",
            on_detach=detach,
        )
        self._observers.setdefault(turn_id, []).append(sub)
        return stream

    def _detach_turn(self, turn_id: str, sub: _Subscription) -> None:
        if self._turns.get(turn_id) is sub:
            del self._turns[turn_id]

    def subscribe_thread(
        self, thread_id: str, *, include_turns: bool = False
    ) -> NotificationStream:
        self._check_open()
        entry: _ThreadSub

        def detach(_: _Subscription) -> None:
            entries = self._threads.get(thread_id, [])
            if entry in entries:
                entries.remove(entry)
                if not entries:
                    del self._threads[thread_id]

        sub, stream = open_subscription(
            limit=self._limits.subscription_buffer,
            what=f"the subscription to thread {thread_id}",
            on_detach=detach,
        )
        entry = _ThreadSub(sub, include_turns)
        self._threads.setdefault(thread_id, []).append(entry)
        return stream

    def subscribe_global(self, *, everything: bool = False) -> NotificationStream:
        self._check_open()
        entry: _GlobalSub

        def detach(_: _Subscription) -> None:
            if entry in self._globals:
                self._globals.remove(entry)
                self._taps -= entry.everything

        sub, stream = open_subscription(
            limit=self._limits.subscription_buffer,
            what="the global notification subscription",
            on_detach=detach,
        )
        entry = _GlobalSub(sub, everything)
        self._globals.append(entry)
        self._taps += everything
        return stream

    # -- turn starts ------------------------------------------------------------------------

    def begin_turn_start(self, thread_id: str) -> None:
        """A ``turn/start`` for ``thread_id`` is about to be written: stash its thread's events."""
        self._check_open()
        self._starting[thread_id] = self._starting.get(thread_id, 0) + 1

    def end_turn_start(self, thread_id: str) -> None:
        """The ``turn/start`` finished (or failed): route the stash, in wire order."""
        count = self._starting.get(thread_id, 0) - 1
        if count > 0:
            self._starting[thread_id] = count
            return
        self._starting.pop(thread_id, None)
        for note in self._stash.pop(thread_id, ()):
            self._route_note(note, tapped=True)

    # -- routing (reader task) ---------------------------------------------------------------

    def route(self, method: str, params: dict[str, Any]) -> None:
        if (
            method in _FLAT_TURN
            and not self._starting
            and not self._threads
            and not self._globals
            and not self._observers
        ):
            # Fast path: the event of a turn whose only subscriber is its owner's stream.
            turn_id = params.get("turnId")
            owner = self._turns.get(turn_id) if type(turn_id) is str else None
            if owner is not None and not owner.pending:
                thread_id = params.get("threadId")
                note = Notification(
                    method,
                    params,
                    thread_id if type(thread_id) is str else None,
                    turn_id,
                    self._mismatches,
                )
                # An owner in ``_turns`` is open at both ends (ending or closing detaches it).
                buffer = owner.buffer
                if len(buffer) < owner.limit:
                    buffer.append(note)
                    waiter = owner.waiter
                    if waiter is not None and len(buffer) >= owner.wake_at:
                        owner.waiter = None
                        waiter.set()
                else:
                    owner.pending.append(note)
                    self._mark_blocked(owner)
                self._routed += 1
                return
        thread_id, turn_id = _ids(method, params)
        note = Notification(method, params, thread_id, turn_id, self._mismatches)
        if self._starting and thread_id in self._starting:
            assert thread_id is not None
            if self._taps:
                self._tap(note)
            stash = self._stash.setdefault(thread_id, [])
            stash.append(note)
            # Never more than a turn stream holds: a claimed stash must fit without parking.
            if len(stash) > min(self._limits.turn_start_stash, self._limits.turn_buffer):
                logger.warning("turn-start stash of thread %s is full; releasing", thread_id)
                self._route_note(stash.pop(0), tapped=True)
            return
        self._route_note(note)

    def _tap(self, note: Notification) -> None:
        for gentry in tuple(self._globals):
            if gentry.everything:
                self._deliver(gentry.sub, note)

    def _route_note(self, note: Notification, *, tapped: bool = False) -> None:
        self._routed += 1
        turn_id = note.turn_id
        thread_id = note.thread_id
        owner = self._turns.get(turn_id) if turn_id is not None else None
        if owner is not None:
            taken = True
            self._deliver(owner, note)
            if self._observers:
                observers = self._observers.get(turn_id)  # type: ignore[arg-type]
                if observers:
                    for observer in tuple(observers):
                        self._deliver(observer, note)
        else:
            taken = False
        if thread_id is not None and self._threads:
            entries = self._threads.get(thread_id)
            if entries:
                for entry in tuple(entries):
                    if turn_id is None or owner is None or entry.include_turns:
                        taken = self._deliver(entry.sub, note) or taken
        if self._globals:
            for gentry in tuple(self._globals):
                if gentry.everything:
                    if not tapped:
                        self._deliver(gentry.sub, note)
                    taken = True
                elif thread_id is None or not taken:
                    self._deliver(gentry.sub, note)
                    taken = True
        if not taken:
            self._unrouted += 1
            logger.debug(
                "no subscriber for %s (thread %s, turn %s)", note.method, thread_id, turn_id
            )
        if turn_id is not None and note.method == "turn/completed":
            if owner is not None:
                owner.finish()
            observers = self._observers.pop(turn_id, None) if self._observers else None
            if observers:
                for observer in observers:
                    observer.finish()
            if self._on_turn_completed is not None:
                self._on_turn_completed(turn_id)

    def _deliver(self, sub: _Subscription, note: Notification) -> bool:
        delivered = sub.deliver(note)
        if sub.pending:
            self._mark_blocked(sub)
        return delivered

    def _mark_blocked(self, sub: _Subscription) -> None:
        """``sub`` has parked events: the reader services it (``service``)."""
        if not sub.blocked:
            sub.blocked = True
            self.blocked.append(sub)

    # -- full buffers (reader task) ------------------------------------------------------------

    def parked(self) -> int:
        """Events parked behind full buffers, in all."""
        blocked = self.blocked
        if len(blocked) == 1:
            return len(blocked[0].pending)
        return sum(len(sub.pending) for sub in blocked)

    def service(self, now: float) -> int:
        """Refill buffers from parked events, cut off consumers stalled past the grace period;
        returns how many events are still parked."""
        grace = self._limits.overflow_grace
        still: list[_Subscription] = []
        parked = 0
        for sub in self.blocked:
            moved = sub.refill()
            if not sub.pending:
                sub.blocked = False
                sub.stalled_since = None
                continue
            if moved or sub.progressed or sub.stalled_since is None:
                sub.stalled_since = now
                sub.progressed = False
            elif now - sub.stalled_since >= grace:
                sub.cut_off()
                sub.blocked = False
                self._overflowed += 1
                continue
            still.append(sub)
            parked += len(sub.pending)
        self.blocked = still
        return parked

    async def relieve(self) -> None:
        """Called by the reader when ``Limits.backlog`` events are parked: stop reading until
        consumers make room or are cut off (at most ``overflow_grace`` without progress)."""
        while self.blocked:
            if self.service(anyio.current_time()) < self._limits.backlog:
                return
            await anyio.sleep(BACKLOG_POLL)

    # -- end --------------------------------------------------------------------------------

    def close(self, error: BaseException) -> None:
        """The connection ended: every stream drains (buffered and parked), then raises
        ``error``."""
        if self._closed_error is not None:
            return
        self._closed_error = error
        for thread_id in list(self._stash):
            for note in self._stash.pop(thread_id):
                self._route_note(note, tapped=True)
        subs = [*self._turns.values()]
        subs += [sub for observers in self._observers.values() for sub in observers]
        subs += [entry.sub for entries in self._threads.values() for entry in entries]
        subs += [entry.sub for entry in self._globals]
        for sub in subs:
            sub.finish(error)
        self._turns.clear()
        self._observers.clear()
        self._threads.clear()
        self._globals.clear()
        self._starting.clear()
        self.blocked = []

    def statistics(self) -> RouterStatistics:
        return RouterStatistics(
            turn_streams=len(self._turns),
            turn_observers=sum(len(v) for v in self._observers.values()),
            thread_subscriptions=sum(len(v) for v in self._threads.values()),
            global_subscriptions=len(self._globals),
            turn_starts_in_flight=sum(self._starting.values()),
            stashed=sum(len(v) for v in self._stash.values()),
            parked=self.parked(),
            routed=self._routed,
            unrouted=self._unrouted,
            overflowed=self._overflowed,
            schema_mismatches=sum(self._mismatches.values()),
        )

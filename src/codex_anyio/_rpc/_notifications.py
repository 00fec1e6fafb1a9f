"""Notifications as users see them, and the bounded streams that carry them.

A :class:`Notification` is cheap to make: the reader only decodes JSON and routes, and the
typed ``params`` object is built the first time the consumer asks for it, in the consumer's
task. Events nobody inspects are never structured, and the cost of structuring is paid by the
task that wants the types, not by the reader that every turn shares.

A :class:`NotificationStream` is the receive end of one subscription (a turn, a thread, or the
global stream). Backpressure policy (the contract, tested in ``tests/test_reliability.py``):

* Each subscription has a bounded buffer (``Limits.turn_buffer`` / ``subscription_buffer``)
  that the reader fills with ``send_nowait``.
* When a buffer is full the reader does **not** stop: later events for that consumer are
  *parked* in order behind the buffer, and the reader goes on reading, so a response (the one
  the lagging consumer itself may be waiting for, or a ``turn/interrupt``) never queues behind
  a notification buffer. The consumer takes parked events itself once its buffer is empty.
* The reader stops reading (real backpressure: the pipe fills and the runtime slows down) only
  when ``Limits.backlog`` events are parked across all subscriptions.
* A consumer that takes nothing for ``Limits.overflow_grace`` seconds while events wait for it
  is cut off: it receives what its buffer holds, then :class:`SubscriptionOverflowError`;
  the parked events are dropped and counted. The reader checks this while it reads and while
  it waits on a full backlog, so several stalled consumers cost one grace period, not one each.
* A connection that ends (:class:`TransportClosedError`) loses nothing: every buffered and
  parked event is received first.

Each subscription is a plain deque, not an AnyIO memory object stream: the reader appends and
sets the consumer's wake-up event only when the consumer waits; the consumer pops while
anything is buffered and waits only when the buffer is empty, with a checkpoint every
:data:`CHECKPOINT_EVERY` items so one busy stream cannot starve the other tasks. A turn's
iterator takes buffered events without an ``await`` per event (``take_buffered``). (Measured:
an ``await receive()`` per item caps a pipeline at about 30k events/s, and the memory stream's
send/receive pair cost ~0.5 µs of a ~4 µs event path.)

Who may call what: the reader (and only the reader) calls ``_Subscription.deliver`` and the
router's servicing; a stream's consumer calls ``receive``/``close`` from one task at a time.
Both run on the event loop thread; every operation that touches both sides is synchronous.
"""

from __future__ import annotations

import functools
import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import MemoryObjectStreamStatistics

from .._exceptions import SubscriptionOverflowError, fresh
from .._protocol._generated.converter import converter
from .._protocol._generated.registry import NOTIFICATIONS

__all__ = ["CHECKPOINT_EVERY", "Notification", "NotificationStream"]

logger = logging.getLogger("codex_anyio")

CHECKPOINT_EVERY: Final = 256
"""A stream yields to the scheduler at least once per this many items it hands out (matches
the reader's batch, ``READER_CHECKPOINT_EVERY``)."""

_UNSET: Any = object()
_structurers: dict[str, Callable[[Any], Any] | None] = {}
"""Per method: a function from its raw params to its typed params (None: a method the schema
does not know). One lookup and one call with one argument on the hot path."""


def _structurer_of(method: str) -> Callable[[Any], Any] | None:
    spec = NOTIFICATIONS.get(method)
    structurer: Callable[[Any], Any] | None = None
    if spec is not None:
        kind = spec.params_type
        hook = converter.get_structure_hook(kind)
        # The written-out and compiled hooks know their type: call them with the raw params.
        structurer = hook if _own_hook(hook, kind) else functools.partial(_with_type, hook, kind)
    _structurers[method] = structurer
    return structurer


def _own_hook(hook: Callable[..., Any], kind: type) -> bool:
    """Whether ``hook`` is ``kind``'s written-out ``_from_wire`` or its compiled hook (see
    ``_protocol._convert.compile_structure``): both take ``(o, _=None)``, the type unused."""
    if "_from_wire" in vars(kind) and getattr(kind, "_from_wire") is hook:  # noqa: B009
        return True
    code = getattr(hook, "__code__", None)
    return code is not None and code.co_filename == f"<structure {kind.__qualname__}>"


def _with_type(hook: Callable[[Any, Any], Any], kind: type, raw: Any) -> Any:
    return hook(raw, kind)


def _mismatch(method: str, exc: Exception, mismatches: dict[str, int] | None) -> None:
    # Schema drift (a newer or older runtime): the raw params are delivered rather than fail
    # the consumer's turn or mask its cancellation; counted so it is visible.
    if mismatches is not None:
        mismatches[method] = mismatches.get(method, 0) + 1
    logger.warning(
        "the params of notification %r do not match the schema of this client's pinned "
        "runtime (%r); delivering them untyped",
        method,
        exc,
    )


class Notification:
    """One notification from the app-server.

    ``method`` is the wire method (``"item/agentMessage/delta"``); ``raw`` the params as
    received; ``params`` the typed params (an attrs instance from ``codex_anyio.types``, or
    the raw dict for a method this client's schema does not know). ``thread_id`` and
    ``turn_id`` are what routing used.
    """

    __slots__ = ("_mismatches", "_params", "method", "raw", "thread_id", "turn_id")

    def __init__(
        self,
        method: str,
        raw: dict[str, Any],
        thread_id: str | None = None,
        turn_id: str | None = None,
        mismatches: dict[str, int] | None = None,
    ) -> None:
        self.method = method
        self.raw = raw
        self.thread_id = thread_id
        self.turn_id = turn_id
        self._params = _UNSET
        self._mismatches = mismatches

    @property
    def params(self) -> Any:
        """The typed params, built on first access.

        For a method the pinned schema does not know, or a payload that does not fit it (a
        required field missing or of the wrong type: schema drift after a runtime upgrade),
        this is the raw dict; such mismatches are logged and counted in
        ``client.statistics().router.schema_mismatches``. Unknown fields and unknown union tags
        are not mismatches.
        """
        params = self._params
        if params is _UNSET:
            method = self.method
            structure = _structurers.get(method, _UNSET)
            if structure is _UNSET:
                structure = _structurer_of(method)
            if structure is None:
                params = self.raw
            else:
                try:
                    params = structure(self.raw)
                except Exception as exc:
                    _mismatch(method, exc, self._mismatches)
                    params = self.raw
            self._params = params
        return params

    @property
    def payload(self) -> Any:
        """The official SDK's name for :attr:`params` (the same typed object)."""
        return self.params

    @property
    def known(self) -> bool:
        """Whether the pinned schema knows this method (else ``params`` is the raw dict)."""
        return self.method in NOTIFICATIONS

    @property
    def typed(self) -> bool:
        """Whether ``params`` is a typed object (False: the raw dict, see ``params``)."""
        return self.params is not self.raw

    def __repr__(self) -> str:
        return f"Notification(method={self.method!r}, raw={self.raw!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Notification):
            return NotImplemented
        return self.method == other.method and self.raw == other.raw

    __hash__ = None  # type: ignore[assignment]


class _Subscription:
    """One subscription's channel, router side: ``deliver`` never blocks (see the module doc).

    Not an AnyIO memory object stream: the reader appends to ``buffer`` and wakes the
    consumer only when it waits, and the consumer pops from it directly. (Measured: the
    memory stream's ``send_nowait``/``receive_nowait`` pair cost ~0.5 µs per event, a tenth
    of the whole per-event path.)
    """

    __slots__ = (
        "_on_detach",
        "blocked",
        "buffer",
        "end_waiters",
        "ended",
        "error",
        "finish_pending",
        "limit",
        "pending",
        "progressed",
        "receiver_closed",
        "stalled_since",
        "waiter",
        "wake_at",
        "what",
    )

    def __init__(
        self,
        *,
        limit: int,
        what: str,
        on_detach: Callable[[_Subscription], None] | None = None,
    ) -> None:
        self.buffer: deque[Notification] = deque()
        """Events the consumer may take, at most ``limit``."""
        self.limit = limit
        self.what = what
        self.ended = False
        """No more events will be delivered (the subject ended, or the connection did)."""
        self.receiver_closed = False
        """The consumer closed its stream (or it ended and was released)."""
        self.waiter: anyio.Event | None = None
        """Set by the consumer while it waits for an event; the deliverer sets it."""
        self.wake_at = 1
        """Buffered events that wake a waiting consumer (the end always wakes it)."""
        self.error: BaseException | None = None
        self.pending: deque[Notification] = deque()
        """Events parked behind a full buffer, in order; the consumer takes them itself."""
        self.finish_pending = False
        self.blocked = False
        """Registered in the router's list of subscriptions with parked events."""
        self.progressed = False
        self.stalled_since: float | None = None
        self.end_waiters: list[anyio.Event] | None = None
        """Set once nothing more will be delivered (``NotificationStream.wait_ended``)."""
        self._on_detach = on_detach

    def wake(self) -> None:
        waiter = self.waiter
        if waiter is not None:
            self.waiter = None
            waiter.set()

    def deliver(self, item: Notification) -> bool:
        """Queue ``item`` without waiting; False if the consumer is gone.

        If the buffer is full (or events are already parked) the item is parked, in order;
        the router then services this subscription (see ``Router.service``).
        """
        if self.ended or self.receiver_closed:
            return False
        if self.pending or len(self.buffer) >= self.limit:
            self.pending.append(item)
            return True
        self.buffer.append(item)
        if len(self.buffer) >= self.wake_at:
            self.wake()
        return True

    def refill(self) -> bool:
        """Move parked events into the buffer while it has room; True if any moved."""
        pending = self.pending
        if self.receiver_closed:
            pending.clear()
            return False
        buffer = self.buffer
        moved = False
        while pending and len(buffer) < self.limit:
            buffer.append(pending.popleft())
            moved = True
        if moved:
            self.wake()
        if not pending and self.finish_pending:
            self.finish()
        return moved

    def take_parked(self) -> Notification | None:
        """The consumer's side: the oldest parked event, once the buffer is empty."""
        pending = self.pending
        if not pending:
            return None
        self.progressed = True
        item = pending.popleft()
        if not pending and self.finish_pending:
            self.finish()
        return item

    def cut_off(self) -> int:
        """The consumer stalled: end its stream with an overflow error; returns events dropped."""
        dropped = len(self.pending)
        error = SubscriptionOverflowError(self.what, self.limit)
        logger.warning("%s", error)
        self.pending.clear()
        self.finish(error)
        return dropped

    def finish(self, error: BaseException | None = None) -> None:
        """End the stream: the consumer receives what is buffered and parked, then ``error``
        or the end."""
        if error is None and self.pending:
            self.finish_pending = True
            self._ended()
            return
        if error is not None and self.error is None:
            self.error = error
        self.detach()

    def _ended(self) -> None:
        waiters, self.end_waiters = self.end_waiters, None
        if waiters:
            for waiter in waiters:
                waiter.set()

    def detach(self) -> None:
        """Remove this subscription from the router (the consumer left, or it ended)."""
        self.ended = True
        self.wake()
        self._ended()
        on_detach, self._on_detach = self._on_detach, None
        if on_detach is not None:
            on_detach(self)


def open_subscription(
    *, limit: int, what: str, on_detach: Callable[[_Subscription], None] | None = None
) -> tuple[_Subscription, NotificationStream]:
    """A connected pair: the router's delivering end and the consumer's stream."""
    sub = _Subscription(limit=limit, what=what, on_detach=on_detach)
    return sub, NotificationStream(sub)


class NotificationStream(anyio.abc.ObjectReceiveStream[Notification]):
    """A bounded stream of notifications that the caller owns; closing it unsubscribes.

    Iterate it with ``async for``; it ends when its subject ends (a turn after its
    ``turn/completed``), and raises :class:`TransportClosedError` if the connection died
    first, or :class:`SubscriptionOverflowError` if the consumer fell too far behind; in both
    cases only after every buffered event was received.
    """

    __slots__ = ("_buffer", "_countdown", "_ended", "_subscription")

    def __init__(self, subscription: _Subscription) -> None:
        self._subscription = subscription
        self._buffer = subscription.buffer
        self._countdown = CHECKPOINT_EVERY
        self._ended = False

    def _end(self) -> Notification:
        # The subject has ended and everything buffered was received: release the stream
        # now rather than leave it to the consumer.
        self._ended = True
        self._subscription.receiver_closed = True
        error = self._subscription.error
        if error is not None:
            raise fresh(error)
        raise anyio.EndOfStream

    def batch_wake_ups(self, on: bool) -> None:
        """While on, a waiting consumer is woken when half its buffer is full or the stream
        ends, not for every event: for a consumer that needs only the end (``run()``), a
        wake-up per turn instead of one per chunk the runtime writes (~a quarter of the
        event loop's iterations per turn, measured)."""
        sub = self._subscription
        sub.wake_at = max(1, sub.limit // 2) if on else 1

    def take_buffered(self) -> Notification | None:
        """The next buffered event if one is there and no checkpoint is due, else None (then
        await :meth:`receive`): the synchronous fast path of a consumer loop."""
        buffer = self._buffer
        if buffer and self._countdown > 1:
            self._countdown -= 1
            return buffer.popleft()
        return None

    def receive_nowait(self) -> Notification:
        """Take a buffered notification.

        :raises anyio.WouldBlock: if none is buffered yet.
        :raises anyio.EndOfStream: after the last one.
        """
        item = self._take()
        if item is None:
            raise anyio.WouldBlock
        return item

    def _take(self) -> Notification | None:
        """A buffered or parked event, the end (raised), or None: nothing yet."""
        sub = self._subscription
        if sub.receiver_closed:
            return self._end_or_closed()
        if self._buffer:
            return self._buffer.popleft()
        item = sub.take_parked()
        if item is not None:
            return item
        if sub.ended:
            return self._end()
        return None

    async def receive(self) -> Notification:
        self._countdown -= 1
        if self._countdown <= 0:
            self._countdown = CHECKPOINT_EVERY
            await anyio.lowlevel.checkpoint()
        sub = self._subscription
        while True:
            item = self._take()
            if item is not None:
                return item
            self._countdown = CHECKPOINT_EVERY
            waiter = sub.waiter = anyio.Event()
            try:
                await waiter.wait()
            finally:
                if sub.waiter is waiter:
                    sub.waiter = None

    def _end_or_closed(self) -> Notification:
        if not self._ended:  # closed by the consumer
            raise anyio.ClosedResourceError
        return self._end()

    async def __anext__(self) -> Notification:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unsubscribe now; buffered and parked events are discarded."""
        sub = self._subscription
        sub.receiver_closed = True
        self._buffer.clear()
        sub.pending.clear()
        sub.detach()

    @property
    def closed(self) -> bool:
        """Whether the consumer closed this stream (or it ended and was released)."""
        return self._subscription.receiver_closed

    @property
    def ended(self) -> bool:
        """Whether its subject has ended (or the connection did): nothing more will arrive
        beyond what is buffered."""
        sub = self._subscription
        return sub.ended or sub.finish_pending

    async def wait_ended(self) -> None:
        """Wait until :attr:`ended`, taking nothing: for a task that does not consume the
        stream but must not wait past the subject's end (see ``TurnHandle.interrupt``)."""
        if self.ended:
            await anyio.lowlevel.checkpoint()
            return
        sub = self._subscription
        waiter = anyio.Event()
        if sub.end_waiters is None:
            sub.end_waiters = []
        sub.end_waiters.append(waiter)
        try:
            await waiter.wait()
        finally:
            if sub.end_waiters is not None and waiter in sub.end_waiters:
                sub.end_waiters.remove(waiter)

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    def statistics(self) -> MemoryObjectStreamStatistics:
        """Buffered count and limit of this stream (``current_buffer_used`` ...)."""
        sub = self._subscription
        return MemoryObjectStreamStatistics(
            current_buffer_used=len(self._buffer),
            max_buffer_size=sub.limit,
            open_send_streams=0 if sub.ended else 1,
            open_receive_streams=0 if sub.receiver_closed else 1,
            tasks_waiting_send=0,
            tasks_waiting_receive=0 if sub.waiter is None else 1,
        )

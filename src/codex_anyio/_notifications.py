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

Receiving takes items with ``receive_nowait`` while any are buffered and parks only when the
buffer is empty; a checkpoint every :data:`CHECKPOINT_EVERY` items keeps one busy stream from
starving the other tasks. (Measured: an ``await receive()`` per item caps a pipeline at about
30k events/s; this pattern runs at the speed of the JSON decoder.)

Who may call what: the reader (and only the reader) calls ``_Subscription.deliver`` and the
router's servicing; a stream's consumer calls ``receive``/``close`` from one task at a time.
Both run on the event loop thread; every operation that touches both sides is synchronous.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable
from typing import Any, Final

import anyio
import anyio.abc
import anyio.lowlevel
from anyio.streams.memory import (
    MemoryObjectReceiveStream,
    MemoryObjectSendStream,
    MemoryObjectStreamStatistics,
)

from ._exceptions import SubscriptionOverflowError, fresh
from ._generated.converter import converter
from ._generated.registry import NOTIFICATIONS

__all__ = ["CHECKPOINT_EVERY", "Notification", "NotificationStream"]

logger = logging.getLogger("codex_anyio")

CHECKPOINT_EVERY: Final = 64
"""A stream yields to the scheduler at least once per this many items it hands out."""

_UNSET: Any = object()
_structure_hooks: dict[str, tuple[Callable[[Any, Any], Any], type]] = {}


def _structure_params(method: str, raw: dict[str, Any], mismatches: dict[str, int] | None) -> Any:
    cached = _structure_hooks.get(method)
    if cached is None:
        spec = NOTIFICATIONS.get(method)
        if spec is None:
            return raw
        cached = (converter.get_structure_hook(spec.params_type), spec.params_type)
        _structure_hooks[method] = cached
    hook, params_type = cached
    try:
        return hook(raw, params_type)
    except Exception as exc:
        # Schema drift (a newer or older runtime): deliver the raw params rather than fail
        # the consumer's turn or mask its cancellation; count it so it is visible.
        if mismatches is not None:
            mismatches[method] = mismatches.get(method, 0) + 1
        logger.warning(
            "the params of notification %r do not match the schema of this client's pinned "
            "runtime (%r); delivering them untyped",
            method,
            exc,
        )
        return raw


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
            params = self._params = _structure_params(self.method, self.raw, self._mismatches)
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
    """The router's end of one subscription: ``deliver`` never blocks (see the module doc)."""

    __slots__ = (
        "_on_detach",
        "blocked",
        "error",
        "finish_pending",
        "limit",
        "pending",
        "progressed",
        "send",
        "stalled_since",
        "what",
    )

    def __init__(
        self,
        send: MemoryObjectSendStream[Notification],
        *,
        limit: int,
        what: str,
        on_detach: Callable[[_Subscription], None] | None = None,
    ) -> None:
        self.send = send
        self.limit = limit
        self.what = what
        self.error: BaseException | None = None
        self.pending: deque[Notification] = deque()
        """Events parked behind a full buffer, in order; the consumer takes them itself."""
        self.finish_pending = False
        self.blocked = False
        """Registered in the router's list of subscriptions with parked events."""
        self.progressed = False
        self.stalled_since: float | None = None
        self._on_detach = on_detach

    def deliver(self, item: Notification) -> bool:
        """Queue ``item`` without waiting; False if the consumer is gone.

        If the buffer is full (or events are already parked) the item is parked, in order;
        the router then services this subscription (see ``Router.service``).
        """
        if self.pending:
            self.pending.append(item)
            return True
        try:
            self.send.send_nowait(item)
        except anyio.WouldBlock:
            self.pending.append(item)
            return True
        except (anyio.BrokenResourceError, anyio.ClosedResourceError):
            return False
        return True

    def refill(self) -> bool:
        """Move parked events into the buffer while it has room; True if any moved."""
        pending = self.pending
        moved = False
        while pending:
            try:
                self.send.send_nowait(pending[0])
            except anyio.WouldBlock:
                break
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                pending.clear()
                break
            pending.popleft()
            moved = True
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
            return
        if error is not None and self.error is None:
            self.error = error
        self.send.close()
        self.detach()

    def detach(self) -> None:
        """Remove this subscription from the router (the consumer left, or it ended)."""
        self.send.close()
        on_detach, self._on_detach = self._on_detach, None
        if on_detach is not None:
            on_detach(self)


def open_subscription(
    *, limit: int, what: str, on_detach: Callable[[_Subscription], None] | None = None
) -> tuple[_Subscription, NotificationStream]:
    """A connected pair: the router's delivering end and the consumer's stream."""
    send, receive = anyio.create_memory_object_stream[Notification](limit)
    sub = _Subscription(send, limit=limit, what=what, on_detach=on_detach)
    return sub, NotificationStream(sub, receive)


class NotificationStream(anyio.abc.ObjectReceiveStream[Notification]):
    """A bounded stream of notifications that the caller owns; closing it unsubscribes.

    Iterate it with ``async for``; it ends when its subject ends (a turn after its
    ``turn/completed``), and raises :class:`TransportClosedError` if the connection died
    first, or :class:`SubscriptionOverflowError` if the consumer fell too far behind; in both
    cases only after every buffered event was received.
    """

    def __init__(
        self, subscription: _Subscription, receive: MemoryObjectReceiveStream[Notification]
    ) -> None:
        self._subscription = subscription
        self._receive = receive
        self._countdown = CHECKPOINT_EVERY
        self._ended = False

    def _end(self) -> Notification:
        # The subject has ended and everything buffered was received: release the stream
        # now rather than leave it to the consumer (or to a ResourceWarning).
        self._ended = True
        self._receive.close()
        error = self._subscription.error
        if error is not None:
            raise fresh(error)
        raise anyio.EndOfStream

    def receive_nowait(self) -> Notification:
        """Take a buffered notification.

        :raises anyio.WouldBlock: if none is buffered yet.
        :raises anyio.EndOfStream: after the last one.
        """
        try:
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            item = self._subscription.take_parked()
            if item is None:
                raise
            return item
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return self._end_or_closed()

    async def receive(self) -> Notification:
        self._countdown -= 1
        if self._countdown <= 0:
            self._countdown = CHECKPOINT_EVERY
            await anyio.lowlevel.checkpoint()
        try:
            return self._receive.receive_nowait()
        except anyio.WouldBlock:
            item = self._subscription.take_parked()
            if item is not None:
                return item
            self._countdown = CHECKPOINT_EVERY
            try:
                return await self._receive.receive()
            except (anyio.EndOfStream, anyio.ClosedResourceError):
                return self._end_or_closed()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            return self._end_or_closed()

    def _end_or_closed(self) -> Notification:
        if self._receive._closed and not self._ended:  # closed by the consumer
            raise anyio.ClosedResourceError
        item = self._subscription.take_parked()  # the connection ended with events parked
        if item is not None:
            return item
        return self._end()

    async def __anext__(self) -> Notification:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unsubscribe now; buffered and parked events are discarded."""
        self._receive.close()
        self._subscription.pending.clear()
        self._subscription.detach()

    @property
    def closed(self) -> bool:
        """Whether the consumer closed this stream (or it ended and was released)."""
        return self._receive._closed

    @property
    def ended(self) -> bool:
        """Whether its subject has ended (or the connection did): nothing more will arrive
        beyond what is buffered."""
        sub = self._subscription
        return sub.send._closed or sub.finish_pending

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    def statistics(self) -> MemoryObjectStreamStatistics:
        """Buffered count and limit of this stream (``current_buffer_used`` ...)."""
        return self._receive.statistics()

"""Notifications as users see them, and the bounded streams that carry them.

A :class:`Notification` is cheap to make: the reader only decodes JSON and routes, and the
typed ``params`` object is built the first time the consumer asks for it, in the consumer's
task. Events nobody inspects are never structured, and the cost of structuring is paid by the
task that wants the types, not by the reader that every turn shares.

A :class:`NotificationStream` is the receive end of one subscription (a turn, a thread, or the
global stream). Backpressure policy: each subscription has a bounded buffer, filled by the
reader with ``send_nowait``. When a buffer is full the reader waits for room, which is real
backpressure (it stops reading, the pipe fills, the runtime slows down), but only for a
bounded grace period (``Limits.overflow_grace``): a consumer that is stalled or abandoned must
not hold up for long the responses (``turn/interrupt`` among them) that every other task waits
for. A consumer still full after the grace period is cut off: it receives everything that was
buffered, then :class:`SubscriptionOverflowError`. Nothing is dropped silently.

Receiving takes items with ``receive_nowait`` while any are buffered and parks only when the
buffer is empty; a checkpoint every :data:`CHECKPOINT_EVERY` items keeps one busy stream from
starving the other tasks. (Measured: an ``await receive()`` per item caps a pipeline at about
30k events/s; this pattern runs at the speed of the JSON decoder.)
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

from ._exceptions import ProtocolError, SubscriptionOverflowError, fresh
from ._generated.converter import converter
from ._generated.registry import NOTIFICATIONS

__all__ = ["CHECKPOINT_EVERY", "Notification", "NotificationStream"]

logger = logging.getLogger("codex_anyio")

CHECKPOINT_EVERY: Final = 64
"""A stream yields to the scheduler at least once per this many items it hands out."""

_UNSET: Any = object()
_structure_hooks: dict[str, tuple[Callable[[Any, Any], Any], type]] = {}


def _structure_params(method: str, raw: dict[str, Any]) -> Any:
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
        raise ProtocolError(
            f"the params of notification {method!r} do not match the schema of this "
            f"client's pinned runtime: {exc!r}"
        ) from exc


class Notification:
    """One notification from the app-server.

    ``method`` is the wire method (``"item/agentMessage/delta"``); ``raw`` the params as
    received; ``params`` the typed params (an attrs instance from ``codex_anyio.types``, or
    the raw dict for a method this client's schema does not know). ``thread_id`` and
    ``turn_id`` are what routing used.
    """

    __slots__ = ("_params", "method", "raw", "thread_id", "turn_id")

    def __init__(
        self,
        method: str,
        raw: dict[str, Any],
        thread_id: str | None = None,
        turn_id: str | None = None,
    ) -> None:
        self.method = method
        self.raw = raw
        self.thread_id = thread_id
        self.turn_id = turn_id
        self._params = _UNSET

    @property
    def params(self) -> Any:
        """The typed params, built on first access.

        :raises ProtocolError: if the payload does not fit the schema (a required field
            missing or of the wrong type); unknown fields and unknown union tags do not raise.
        """
        params = self._params
        if params is _UNSET:
            params = self._params = _structure_params(self.method, self.raw)
        return params

    @property
    def payload(self) -> Any:
        """The official SDK's name for :attr:`params` (the same typed object)."""
        return self.params

    @property
    def known(self) -> bool:
        """Whether the pinned schema knows this method (else ``params`` is the raw dict)."""
        return self.method in NOTIFICATIONS

    def __repr__(self) -> str:
        return f"Notification(method={self.method!r}, raw={self.raw!r})"

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Notification):
            return NotImplemented
        return self.method == other.method and self.raw == other.raw

    __hash__ = None  # type: ignore[assignment]


class _Subscription:
    """The router's end of one subscription: ``deliver`` never blocks; ``flush`` waits, bounded."""

    __slots__ = (
        "_on_detach",
        "delivered",
        "error",
        "finish_pending",
        "limit",
        "pending",
        "send",
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
        self.delivered = 0
        self.pending: deque[Notification] = deque()
        self.finish_pending = False
        self._on_detach = on_detach

    def deliver(self, item: Notification) -> bool:
        """Queue ``item`` without waiting; False if the consumer is gone.

        If the buffer is full the item is parked in ``pending`` (still True: it will be
        delivered, in order); the router then gives the consumer a bounded grace period to
        make room (see ``Router.flush_blocked``) before cutting it off.
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
        self.delivered += 1
        return True

    async def flush(self, grace: float) -> bool:
        """Deliver the parked items, waiting at most ``grace`` seconds in all for room.

        Returns False if the consumer was cut off (it then drains its buffer and sees
        :class:`SubscriptionOverflowError`).
        """
        with anyio.move_on_after(grace):
            while self.pending:
                try:
                    await self.send.send(self.pending[0])
                except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                    self.pending.clear()
                    return True
                self.pending.popleft()
                self.delivered += 1
            if self.finish_pending:
                self.finish()
            return True
        error = SubscriptionOverflowError(self.what, self.limit)
        logger.warning("%s", error)
        self.finish(error)
        return False

    def finish(self, error: BaseException | None = None) -> None:
        """End the stream: the consumer drains what is buffered, then sees ``error`` or the end.

        A clean end waits for parked items to be delivered first.
        """
        if error is None and self.pending:
            self.finish_pending = True
            return
        if error is not None and self.error is None:
            self.error = error
        self.pending.clear()
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
        return self._end()

    async def __anext__(self) -> Notification:
        try:
            return await self.receive()
        except anyio.EndOfStream:
            raise StopAsyncIteration from None

    def close(self) -> None:
        """Unsubscribe now; buffered events are discarded."""
        self._receive.close()
        self._subscription.detach()

    async def aclose(self) -> None:
        self.close()
        await anyio.lowlevel.checkpoint()

    def statistics(self) -> MemoryObjectStreamStatistics:
        """Buffered count and limit of this stream (``current_buffer_used`` ...)."""
        return self._receive.statistics()

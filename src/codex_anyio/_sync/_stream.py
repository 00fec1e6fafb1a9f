"""Iterating an async event stream from a plain thread, in batches.

One portal round trip per event costs about 300 us (a task, a future, a thread wake-up),
which capped the sync stream at about 2,400 events/s while the async one ran at the runtime's
8,000. So a pump task in the event loop reads the async iterator into a bounded buffer and
the calling thread takes everything buffered in one round trip. Backpressure: when the buffer
holds :data:`BATCH_LIMIT` events the pump waits until the thread has taken them, so a slow
consumer slows the turn's own stream (and, past its bound, the reader) as in the async client.

Cancellation: the pump is a portal task. Leaving the iteration early (``break``, an
exception, Ctrl-C) cancels it and waits, bounded, for it to finish; the async layer interrupts
a turn whose stream is cancelled mid-read, and the pump's own clean-up (``on_exit``: closing
the turn handle) covers the case where it was parked on backpressure instead.

A generator dropped on the event loop thread itself (a reference cycle collected there, the
last reference released by a handler) is finalized there: it then only cancels the pump,
which cleans up on its own, and never waits for it, since that wait would hold the very loop
the clean-up needs (it froze the loop for :data:`~codex_anyio._sync._portal.CLEANUP_WAIT` seconds).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from concurrent.futures import Future
from typing import Final, Generic, TypeVar

import anyio
from anyio.from_thread import BlockingPortal

__all__ = ["BATCH_LIMIT", "iterate_in_batches"]

T = TypeVar("T")

BATCH_LIMIT: Final = 1024
"""Most events buffered between the pump and the calling thread."""


class _Pump(Generic[T]):
    """Lives in the event loop: every method runs on the loop thread."""

    def __init__(self, events: AsyncIterator[T], on_exit: Callable[[], Awaitable[None]]) -> None:
        self._events = events
        self._on_exit = on_exit
        self.loop_thread = threading.get_ident()
        self._buffer: deque[T] = deque()
        self._ended = False
        self._error: BaseException | None = None
        self._ready = anyio.Event()
        self._room = anyio.Event()
        self.finished = threading.Event()

    async def run(self) -> None:
        try:
            async for event in self._events:
                self._buffer.append(event)
                self._ready.set()
                if len(self._buffer) >= BATCH_LIMIT:
                    self._room = anyio.Event()
                    await self._room.wait()
        except Exception as exc:
            self._error = exc
        finally:
            self._ended = True
            self._ready.set()
            try:
                with anyio.CancelScope(shield=True):
                    await self._on_exit()
            finally:
                self.finished.set()

    async def take(self) -> list[T]:
        """Everything buffered, waiting for at least one event; ``[]`` at the end."""
        while not self._buffer and not self._ended:
            self._ready = anyio.Event()
            await self._ready.wait()
        batch = list(self._buffer)
        self._buffer.clear()
        self._room.set()
        if not batch and self._error is not None:
            raise self._error
        return batch


def _make_pump(events: AsyncIterator[T], on_exit: Callable[[], Awaitable[None]]) -> _Pump[T]:
    return _Pump(events, on_exit)


def iterate_in_batches(
    portal: BlockingPortal,
    events: AsyncIterator[T],
    *,
    call: Callable[[Callable[[], Awaitable[list[T]]]], list[T]],
    cleanup_wait: float,
    on_exit: Callable[[], Awaitable[None]],
) -> Iterator[T]:
    """Yield ``events`` (an async iterator living in ``portal``'s loop) to this thread.

    ``call`` is the bridge's interruptible call; ``cleanup_wait`` bounds the wait for the
    cancelled pump; ``on_exit`` runs in the loop when the pump stops (shielded), however it
    stops.
    """
    pump: _Pump[T] = portal.call(_make_pump, events, on_exit)
    running: Future[None] = portal.start_task_soon(pump.run)
    try:
        while batch := call(pump.take):
            yield from batch
    finally:
        if not running.done():
            # Cancelling only cancels the pump's scope: safe on the loop thread too.
            running.cancel()
            if threading.get_ident() != pump.loop_thread:
                pump.finished.wait(cleanup_wait)

"""The records of messages in flight: one outgoing message, one request's answer slot, and
the hook a request may leave for the reader.

They are the connection's hot path (one of each per request), so they are slotted classes
with no behaviour beyond what a waiter and the reader need to meet.
"""

from __future__ import annotations

from typing import Any, Final, Protocol

import anyio

__all__ = ["DROPPED", "QUEUED", "WRITING", "WRITTEN", "Outgoing", "Reply", "ResponseHook"]

QUEUED: Final = 0
"""In the writer's queue; dropped if its sender leaves before the writer starts it."""
WRITING: Final = 1
"""Being written: it goes out whole, whatever its sender does now."""
WRITTEN: Final = 2
DROPPED: Final = 3
"""Never written (its sender left first, or the connection ended): the writer skips it."""


class Outgoing:
    """One message in the writer's queue."""

    __slots__ = ("data", "done", "failed", "state")

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.done: anyio.Event | None = None
        """Made by whoever waits for the write (a request waits for its response instead)."""
        self.failed = False
        self.state = QUEUED

    def finished(self, *, failed: bool = False) -> None:
        if failed:
            self.failed = True
        else:
            self.state = WRITTEN
        if self.done is not None:
            self.done.set()


class Reply:
    """One request's answer: the reader puts the response (or an error) in it; the end of the
    connection closes it empty. (An event and a slot: a memory object stream per request
    cost a loop iteration more per request, for a checkpoint before it waits.)"""

    __slots__ = ("event", "value")

    def __init__(self) -> None:
        self.event = anyio.Event()
        self.value: dict[str, Any] | BaseException | None = None

    def put(self, value: dict[str, Any] | BaseException | None) -> None:
        if not self.event.is_set():
            self.value = value
            self.event.set()


class ResponseHook(Protocol):
    """Runs in the reader on a request's response, even after its caller has gone."""

    def on_response(self, message: dict[str, Any]) -> None: ...

    def on_unsent(self) -> None:
        """The request was never written: no response will come."""

"""One ``turn/start`` in flight: what the reader found in its response, and who owns it.

The connection leaves a :class:`TurnStart` as the request's response hook. The reader runs it
when the response arrives, whoever is still waiting: it creates the new turn's stream before
any event of the turn is routed, and if the caller has gone by then (cancelled, interrupted),
it hands the turn to a reaper, so a turn never runs on the server without an owner.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import anyio

from ._notifications import NotificationStream
from ._router import Router

__all__ = ["SpawnReaper", "TurnStart"]

SpawnReaper = Callable[[str, str, NotificationStream], anyio.Event]
"""Start interrupting (thread id, turn id) in the background; the event is set when done."""


class TurnStart:
    """The response hook of one ``turn/start``."""

    __slots__ = (
        "answered",
        "error",
        "orphaned",
        "reaped",
        "responded",
        "router",
        "spawn_reaper",
        "stream",
        "thread_id",
        "turn_id",
        "watch",
    )

    def __init__(
        self,
        router: Router,
        spawn_reaper: SpawnReaper,
        thread_id: str,
        watch: Callable[[str, NotificationStream], None] | None = None,
    ) -> None:
        self.router = router
        self.spawn_reaper = spawn_reaper
        self.thread_id = thread_id
        self.watch = watch
        self.answered = False
        self.orphaned = False
        self.stream: NotificationStream | None = None
        self.turn_id: str | None = None
        self.error: BaseException | None = None
        self.reaped: anyio.Event | None = None
        self.responded = anyio.Event()

    def on_response(self, message: dict[str, Any]) -> None:
        router = self.router
        try:
            result = message.get("result")
            turn = result.get("turn") if type(result) is dict else None
            turn_id = turn.get("id") if type(turn) is dict else None
            if type(turn_id) is str:
                # The new turn's stream (an observer's if the turn already has an owner: the
                # runtime joined the input into a running turn); the stash is routed into it
                # by end_turn_start, below.
                self.stream = router.subscribe_turn(turn_id)
                self.turn_id = turn_id
                if self.watch is not None:  # telemetry: an observer, before the stash is routed
                    self.watch(turn_id, router.subscribe_turn(turn_id))
        except Exception as exc:  # never let a bad response break the reader
            self.error = exc
        finally:
            self.answered = True
            router.end_turn_start(self.thread_id)
        if self.orphaned:
            self.orphan()
        self.responded.set()

    def on_unsent(self) -> None:
        self.answered = True
        self.router.end_turn_start(self.thread_id)
        self.responded.set()

    def orphan(self) -> None:
        """The caller is gone: a reaper interrupts the turn (now, or when the response comes)."""
        self.orphaned = True
        if self.stream is not None and self.turn_id is not None and self.reaped is None:
            self.reaped = self.spawn_reaper(self.thread_id, self.turn_id, self.stream)

"""Interrupting a turn and waiting for its end: the one bounded procedure every owner uses.

``TurnHandle`` runs it when its scope is left early, and the connection runs it for a turn
whose owner is gone (a ``turn/start`` whose caller was cancelled before the response, a
dropped handle). The caller gives a deadline and shields the call; this never raises.

Why the retries: the runtime answers ``turn/interrupt`` with ``-32600 "no active turn to
interrupt"`` both for a turn it has not set up yet (right after ``turn/start``, and even after
it has sent ``turn/started``: measured) and for one that has just ended. So that answer is
retried, backing off from :data:`RETRY_FIRST` to :data:`RETRY_MAX`, while the turn's own
stream is consumed in between: its ``turn/completed`` ends the procedure at once, whichever
case it was. ``-32001`` (overloaded) is retried by the client's request layer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Final, Protocol

import anyio

from .._exceptions import (
    InvalidRequestError,
    JsonRpcError,
    SubscriptionOverflowError,
    TransportClosedError,
)
from ._notifications import Notification, NotificationStream

__all__ = ["Requester", "interrupt_and_wait", "is_no_active_turn"]

logger = logging.getLogger("codex_anyio.turn")

RETRY_FIRST: Final = 0.01
"""First pause before re-sending an interrupt the runtime could not place yet (seconds)."""

RETRY_MAX: Final = 0.2
"""Longest pause between two such attempts (seconds)."""


class Requester(Protocol):
    """What the procedure needs of a connection: sending one request (the connection itself
    runs this procedure for turns nobody owns, so it cannot be imported here)."""

    async def request(self, method: str, params: Any = None) -> Any: ...


def is_no_active_turn(exc: BaseException) -> bool:
    """Whether ``exc`` is the runtime's "no active turn to interrupt" answer."""
    return isinstance(exc, InvalidRequestError) and "no active turn" in exc.message.lower()


async def interrupt_and_wait(
    client: Requester,
    thread_id: str,
    turn_id: str,
    stream: NotificationStream,
    observe: Callable[[Notification], None],
    *,
    deadline: float,
) -> bool:
    """Interrupt ``turn_id`` and consume ``stream`` (each event to ``observe``) until its
    ``turn/completed`` or ``deadline``; True if the completion was seen."""
    done = False

    def take(note: Notification) -> None:
        nonlocal done
        observe(note)
        if note.method == "turn/completed":
            done = True

    def drain() -> None:
        """Take every event already buffered (never waits)."""
        try:
            while not done:
                take(stream.receive_nowait())
        except anyio.WouldBlock:
            pass

    params = {"threadId": thread_id, "turnId": turn_id}
    delay = RETRY_FIRST
    try:
        with anyio.CancelScope(deadline=deadline):
            while not done:
                try:
                    await client.request("turn/interrupt", params)
                except JsonRpcError as exc:
                    if not is_no_active_turn(exc):
                        logger.debug("turn/interrupt for %s: %s", turn_id, exc)
                        return done
                    with anyio.move_on_after(delay):
                        take(await stream.receive())
                    drain()
                    delay = min(delay * 2, RETRY_MAX)
                    continue
                break
            while not done:
                take(await stream.receive())
    except (
        anyio.EndOfStream,
        anyio.ClosedResourceError,
        TransportClosedError,
        SubscriptionOverflowError,
    ):
        return done
    if not done:
        logger.warning("turn %s did not confirm its interruption in time", turn_id)
    return done

"""Interrupting a turn and waiting for its end: the one bounded procedure every owner uses.

``TurnHandle`` runs it when its scope is left early, and the connection runs it for a turn
whose owner is gone (a ``turn/start`` whose caller was cancelled before the response, a
dropped handle). The caller gives a deadline and shields the call; this never raises.

Why the retries: the runtime answers ``turn/interrupt`` with ``-32600 "no active turn to
interrupt"`` both for a turn it has not set up yet (right after ``turn/start``, and even after
it has sent ``turn/started``: measured) and for one that has just ended. So that answer is
retried, backing off from :data:`RETRY_FIRST` to :data:`RETRY_MAX`, while the turn's own
stream is consumed all along: its ``turn/completed`` ends the procedure at once, whichever
case it was. And an interrupt that reaches the runtime after the turn's end is never answered
at all, so no step waits for an answer past the turn's end (``request_unless_ended``).
``-32001`` (overloaded) is retried by the client's request layer.
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

__all__ = [
    "Requester",
    "interrupt_and_wait",
    "is_no_active_turn",
    "request_unless_ended",
    "send_interrupt",
]

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


_ENDS: Final = (
    anyio.EndOfStream,
    anyio.ClosedResourceError,
    TransportClosedError,
    SubscriptionOverflowError,
)
"""How a turn's stream ends other than with its ``turn/completed``."""


async def request_unless_ended(client: Requester, params: Any, stream: NotificationStream) -> None:
    """Send ``turn/interrupt`` with ``params``, but stop waiting for the answer once the
    turn's stream has ended: the runtime never answers an interrupt that reaches it after the
    turn's end (measured on 0.163.0: no answer in 10 s), so a turn that ends by itself just
    as it is interrupted would otherwise leave the caller waiting for good.

    :raises JsonRpcError: what the runtime answered, if it answered with an error.
    """
    error: Exception | None = None
    async with anyio.create_task_group() as tg:

        async def send() -> None:
            nonlocal error
            try:
                await client.request("turn/interrupt", params)
            except Exception as exc:  # raised bare below, not as a group of one
                error = exc
            tg.cancel_scope.cancel()

        async def watch() -> None:
            await stream.wait_ended()
            tg.cancel_scope.cancel()

        tg.start_soon(send)
        tg.start_soon(watch)
    if error is not None:
        raise error


async def send_interrupt(
    client: Requester, params: Any, stream: NotificationStream, *, deadline: float
) -> None:
    """Send ``turn/interrupt`` until the runtime accepts it or the turn's stream has ended,
    retrying "no active turn" (a turn not set up yet, or one just ended) with backoff.

    :raises InvalidRequestError: "no active turn" still, at ``deadline``, while the stream
        has not ended.
    :raises JsonRpcError: any other refusal, at once.
    """
    delay = RETRY_FIRST
    while not stream.ended:
        try:
            await request_unless_ended(client, params, stream)
        except JsonRpcError as exc:
            if not is_no_active_turn(exc):
                raise
            if stream.ended:
                return  # it has ended; its turn/completed is on the stream
            if anyio.current_time() + delay > deadline:
                raise
            await anyio.sleep(delay)
            delay = min(delay * 2, RETRY_MAX)
        else:
            return


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
    ``turn/completed`` or ``deadline``; True if the completion was seen.

    The stream is consumed while the interrupt is in flight, not after its answer: a turn
    that has already ended (its ``turn/completed`` buffered, unread) or ends meanwhile gets
    no answer from the runtime at all, and its end is what finishes the procedure.
    """
    done = False

    def take(note: Notification) -> None:
        nonlocal done
        observe(note)
        if note.method == "turn/completed":
            done = True

    try:  # what is buffered first: the end may be there already
        while not done:
            take(stream.receive_nowait())
    except anyio.WouldBlock:
        pass
    except _ENDS:
        return done
    if done:
        return True

    params = {"threadId": thread_id, "turnId": turn_id}

    async def consume(scope: anyio.CancelScope) -> None:
        try:
            while not done:
                take(await stream.receive())
        except _ENDS:
            pass
        scope.cancel()

    async def send(scope: anyio.CancelScope) -> None:
        try:
            await send_interrupt(client, params, stream, deadline=deadline)
        except JsonRpcError as exc:
            if is_no_active_turn(exc):
                return  # retried up to the deadline: the consumer's wait ends there too
            logger.debug("turn/interrupt for %s: %s", turn_id, exc)
            scope.cancel()  # refused: its end will not come of this
        except Exception as exc:  # the connection is gone: the stream says so too
            logger.debug("turn/interrupt for %s: %r", turn_id, exc)

    with anyio.CancelScope(deadline=deadline) as bounded:
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume, tg.cancel_scope)
            tg.start_soon(send, tg.cancel_scope)
    if not done and bounded.cancelled_caught:
        logger.warning("turn %s did not confirm its interruption in time", turn_id)
    return done

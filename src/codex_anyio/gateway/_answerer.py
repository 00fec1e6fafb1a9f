"""Answerers: where a gateway's answers come from (a policy; forward and replay build on it).

An answerer turns a :class:`ModelRequest` into response events, may need to run something for
as long as the gateway runs (the forward's HTTP client), and may have failed a turn on
purpose (a replay mismatch), which the client then raises instead of ``TurnFailedError``.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Iterable
from contextlib import AbstractAsyncContextManager, AsyncExitStack, aclosing
from typing import Any, TypeAlias

from .._exceptions import ReplayMismatchError
from ._events import ResponseEvent
from ._request import ModelRequest

__all__ = ["Policy", "PolicyAnswerer"]

Policy: TypeAlias = Callable[
    [ModelRequest],
    "AsyncIterator[ResponseEvent] | Awaitable[Iterable[ResponseEvent]] | Iterable[ResponseEvent]",
]
"""An answer to a model call: an async generator function of the :class:`ModelRequest` that
yields response events; a coroutine function returning a list of them, or a plain function
returning one, works too."""


async def _events_of(result: Any) -> AsyncGenerator[ResponseEvent, None]:
    """What a policy returned, as one async iterator."""
    if inspect.isawaitable(result):
        result = await result
    if hasattr(result, "__aiter__"):
        if hasattr(result, "aclose"):
            async with aclosing(result):
                async for event in result:
                    yield event
        else:
            async for event in result:
                yield event
    else:
        for event in result:
            yield event


class PolicyAnswerer:
    """Answers from a policy function; also the base of the forward and replay answerers."""

    marks_bursts = False
    """Whether :meth:`answer` yields ``FLUSH`` after each burst of events, so the gateway
    can read it in the connection's own task; otherwise it runs in a task of its own, and
    what it has ready at once is a burst (a policy cannot be asked to say)."""

    def __init__(self, policy: Policy) -> None:
        self._policy = policy

    def answer(self, request: ModelRequest) -> AsyncGenerator[ResponseEvent, None]:
        return _events_of(self._policy(request))

    def running(self) -> AbstractAsyncContextManager[object]:
        return AsyncExitStack()

    def turn_error(self, thread_id: str, turn_id: str) -> ReplayMismatchError | None:
        return None

"""``PooledThread``: a :class:`Thread` that knows its pool member and takes turn slots.

A thread lives in one app-server process; the pool hands out these so that ``thread.run(...)``
and ``async with thread.turn(...)`` wait for a turn slot (the pool's and the member's) and
hold it for the life of the turn, and so that a turn on a thread whose process has died
fails at once with :class:`TransportClosedError` instead of reaching a restarted process
that never heard of the thread.
"""

from __future__ import annotations

from collections.abc import Callable
from types import TracebackType
from typing import Any, Protocol

from .._api._goal import Goal
from .._api._inputs import RunInput
from .._api._thread import Thread, TurnStarter
from .._api._turn import TurnHandle
from .._exceptions import UsageLimitError, UsageLimitWaitError
from ._member import Member

__all__ = ["PooledThread", "TurnSlots"]


class TurnSlots(Protocol):
    """What a pooled thread needs of its pool (``CodexPool`` is one): the pool hands out
    pooled threads, so this module names what it uses instead of importing the pool."""

    def _check_alive(self, thread: PooledThread) -> None:
        """Raise ``TransportClosedError`` if the thread's runtime is gone."""
        ...

    async def _take_turn_slot(self, thread: PooledThread) -> Callable[[], None]:
        """Wait for a turn slot for ``thread``; return its release."""
        ...

    def _usage_limited(self, thread: PooledThread, exc: UsageLimitError) -> None:
        """A turn on ``thread`` failed with the usage limit (its account is to be paused)."""
        ...


class _PooledGoal(Goal):
    """A goal on a pooled thread: it holds one turn slot (the pool's and the member's) from
    its start to the end of its scope. The runtime starts the goal's turns itself, one at a
    time, so no ``thread.turn`` takes a slot for them; without this, goals would run past the
    pool's ``max_turns`` and a member's load would not count them."""

    _release: Callable[[], None] | None = None

    async def start(self) -> Goal:
        thread = self._owner
        assert isinstance(thread, PooledThread)
        self._release = await thread._pool._take_turn_slot(thread)
        thread._turn_sent = True  # a goal set may have started a turn: no retry elsewhere
        try:
            return await super().start()
        except BaseException:
            self._free()
            raise

    async def aclose(self) -> None:
        try:
            await super().aclose()
        finally:
            self._free()

    def _free(self) -> None:
        release, self._release = self._release, None
        if release is not None:
            release()


class PooledThread(Thread):
    """A :class:`Thread` on one pool member; its turns (and goals) take the pool's turn
    slots."""

    _goal_type = _PooledGoal

    def __init__(self, pool: TurnSlots, member: Member, thread: Thread) -> None:
        super().__init__(thread._codex, thread.id, thread.info)
        # The registering Thread holds the thread's handlers and tools (freed when it is
        # garbage-collected): keep it alive as long as this one.
        self._registered = thread
        self._pool = pool
        self._member = member
        self._finished = False
        self._turn_sent = False
        """A ``turn/start`` went out: a failure after that may have left effects, so the
        pool does not retry it elsewhere."""
        self._replaceable = False
        """Set by a caller that places the work again elsewhere if the thread's account is
        paused before its first turn is sent (``pool.run``, the batch): the turn then raises
        the internal ``AccountPaused`` at once instead of waiting for the reset."""

    @property
    def member(self) -> int:
        """Index of the pool member (process) holding this thread."""
        return self._member.index

    def turn(self, /, input: RunInput, **options: Any) -> TurnStarter:
        starter = super().turn(input, **options)
        return _PooledTurnStarter(self, starter)


class _PooledTurnStarter(TurnStarter):
    """``thread.turn(...)`` of a pooled thread: ``async with`` holds a turn slot for the life
    of the turn; a bare ``await`` only checks that the thread's process is still the one."""

    def __init__(self, thread: PooledThread, starter: TurnStarter) -> None:
        super().__init__(thread, starter._params, **starter._options)
        self._pooled = thread
        self._release: Callable[[], None] | None = None

    async def _start(self) -> TurnHandle:
        self._pooled._pool._check_alive(self._pooled)
        self._pooled._turn_sent = True
        return await super()._start()

    async def __aenter__(self) -> TurnHandle:
        release = self._release = await self._pooled._pool._take_turn_slot(self._pooled)
        try:
            return await super().__aenter__()
        except BaseException:
            release()
            raise

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            await super().__aexit__(exc_type, exc, tb)
        finally:
            if isinstance(exc, UsageLimitError) and not isinstance(exc, UsageLimitWaitError):
                self._pooled._pool._usage_limited(self._pooled, exc)
            if self._release is not None:
                self._release()

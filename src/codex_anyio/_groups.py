"""Users never see an exception group of one that we made, and never lose one of their own.

AnyIO task groups always raise exception groups, also for an exception that merely passed
through them from the body of ``async with``. A program that wrote ``except
TransportClosedError`` around ``async with AsyncCodex()`` should still catch it, and one whose
body raised ``ValueError`` (or its own ``ExceptionGroup``) should get exactly that back. So,
for a group raised by our task groups:

* if its leaves are exactly those of the body's own exception (``user``, compared by
  identity: Trio rebuilds a group the body raised when it filters out cancellations, so the
  group object itself may differ), ``user`` itself is re-raised as it is;
* else if it holds exactly one exception (nested groups flattened), that one is raised bare,
  with its own cause;
* genuine multi-error groups propagate unchanged.

The replacement is raised after the ``except`` that caught the group, never inside it: there
the group would become its ``__context__``, and Python would print the error "during handling
of" two internal groups (88 lines for a missing login).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from types import TracebackType
from typing import Any, Generic, NoReturn, TypeVar

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = [
    "Lifespan",
    "call_unwrapped",
    "enter_unwrapped",
    "exit_unwrapped",
    "replacement_for",
    "reraise",
    "single_exception",
]

T = TypeVar("T")


def _leaves(exc: BaseException) -> list[BaseException]:
    leaves: list[BaseException] = []
    stack: list[BaseException] = [exc]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
    return leaves


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one leaf of ``group``, or None if it holds several."""
    leaves = _leaves(group)
    return leaves[0] if len(leaves) == 1 else None


def replacement_for(
    group: BaseExceptionGroup[BaseException], user: BaseException | None
) -> BaseException | None:
    """What to raise instead of ``group`` (see the module docstring); None: the group."""
    if group is user:
        return None
    if user is not None and {id(e) for e in _leaves(group)} == {id(e) for e in _leaves(user)}:
        return user
    return single_exception(group)


def reraise(replacement: BaseException, user: BaseException | None) -> NoReturn:
    """Raise ``replacement``. Called outside the ``except`` that caught the group, so the
    group is not the exception being handled: the body's own exception keeps the context it
    had (Python leaves the context of the exception being handled, ``user``, alone), and an
    error of ours is not printed as raised "during handling of" two internal groups."""
    if replacement is user:
        raise replacement
    raise replacement from replacement.__cause__


def call_unwrapped(function: Callable[[], T]) -> T:
    """``function()`` (an event loop's ``run``, say), with the groups our task groups raise
    unwrapped: what a command line prints and exits on."""
    try:
        return function()
    except BaseExceptionGroup as group:
        replacement = replacement_for(group, None)
        if replacement is None:
            raise
    reraise(replacement, None)


async def enter_unwrapped(cm: AbstractAsyncContextManager[T]) -> T:
    """``await cm.__aenter__()``, with the groups our task groups raise unwrapped."""
    try:
        return await cm.__aenter__()
    except BaseExceptionGroup as group:
        replacement = replacement_for(group, None)
        if replacement is None:
            raise
    reraise(replacement, None)


async def exit_unwrapped(
    cm: AbstractAsyncContextManager[Any],
    exc_type: type[BaseException] | None,
    exc: BaseException | None,
    tb: TracebackType | None,
) -> bool | None:
    """``await cm.__aexit__(...)``, with the groups our task groups raise unwrapped; ``exc``
    is the exception the body of the ``async with`` raised, if any."""
    try:
        return await cm.__aexit__(exc_type, exc, tb)
    except BaseExceptionGroup as group:
        replacement = replacement_for(group, exc)
        if replacement is None:
            raise
    reraise(replacement, exc)


class Lifespan(Generic[T]):
    """Base of the objects whose ``async with`` runs one ``_lifespan()`` context manager that
    owns their task groups (``AsyncCodex``, ``CodexPool``, a batch run): entered once at a
    time, with the groups those raise unwrapped as described above."""

    _lifespan_cm: AbstractAsyncContextManager[T] | None = None

    def _lifespan(self) -> AbstractAsyncContextManager[T]:  # pragma: no cover - abstract
        raise NotImplementedError

    @property
    def _running(self) -> bool:
        return self._lifespan_cm is not None

    async def _enter_lifespan(self) -> T:
        if self._lifespan_cm is not None:
            raise RuntimeError(f"this {type(self).__name__} is already running")
        cm = self._lifespan()
        value = await enter_unwrapped(cm)
        self._lifespan_cm = cm
        return value

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> bool | None:
        cm, self._lifespan_cm = self._lifespan_cm, None
        assert cm is not None
        return await exit_unwrapped(cm, exc_type, exc, tb)

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
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import AbstractAsyncContextManager, contextmanager
from types import TracebackType
from typing import Generic, TypeVar

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["Lifespan", "collapse_groups", "single_exception"]


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


@contextmanager
def collapse_groups(user: BaseException | None = None) -> Iterator[None]:
    """Unwrap the groups our task groups raise (see the module docstring); ``user`` is the
    exception the body of the ``async with`` raised, if any."""
    leaf: BaseException | None = None
    try:
        yield
    except BaseExceptionGroup as group:
        if group is user:
            raise
        if user is not None and {id(e) for e in _leaves(group)} == {id(e) for e in _leaves(user)}:
            leaf = user
        else:
            leaf = single_exception(group)
            if leaf is None:
                raise
            raise leaf from leaf.__cause__
    # The body's own exception, re-raised outside the handler so that it keeps its context.
    if leaf is not None:
        raise leaf


T = TypeVar("T")


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
        with collapse_groups():
            value = await cm.__aenter__()
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
        with collapse_groups(exc):
            return await cm.__aexit__(exc_type, exc, tb)

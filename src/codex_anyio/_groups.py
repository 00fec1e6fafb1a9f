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
from contextlib import contextmanager

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["collapse_groups", "single_exception"]


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

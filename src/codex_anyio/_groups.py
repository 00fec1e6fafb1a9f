"""Users never see an exception group of one that we made, and never lose one of their own.

AnyIO task groups always raise exception groups, also for an exception that merely passed
through them from the body of ``async with``. A program that wrote ``except
TransportClosedError`` around ``async with AsyncCodex()`` should still catch it, and one whose
body raised ``ValueError`` (or its own ``ExceptionGroup``) should get exactly that back. So,
for a group raised by our task groups:

* if its only leaf is the body's own exception (``user``: compared by identity, and not
  looked into, since a group the user raised is theirs), that exception is re-raised as it is;
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


def single_exception(
    group: BaseExceptionGroup[BaseException], user: BaseException | None = None
) -> BaseException | None:
    """The one leaf of ``group`` (``user`` counts as a leaf), or None if it holds several."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup) and exc is not user:
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
        if len(leaves) > 1:
            return None
    return leaves[0] if leaves else None


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
        leaf = single_exception(group, user)
        if leaf is None:
            raise
        if leaf is not user:
            raise leaf from leaf.__cause__
    # The body's own exception, re-raised outside the handler so that it keeps its context.
    if leaf is not None:
        raise leaf

"""Users never see an exception group of one.

AnyIO task groups always raise exception groups; a program that wrote
``except TransportClosedError`` around ``async with AsyncCodex()`` should still catch it. When a
group holds exactly one exception (nested groups flattened), that exception is re-raised bare,
with its own cause. Genuine multi-error groups propagate unchanged.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import BaseExceptionGroup

__all__ = ["collapse_groups", "single_exception"]


def single_exception(group: BaseExceptionGroup[BaseException]) -> BaseException | None:
    """The one leaf exception of ``group``, or None if it holds several."""
    leaves: list[BaseException] = []
    stack: list[BaseException] = [group]
    while stack:
        exc = stack.pop()
        if isinstance(exc, BaseExceptionGroup):
            stack.extend(exc.exceptions)
        else:
            leaves.append(exc)
        if len(leaves) > 1:
            return None
    return leaves[0] if leaves else None


@contextmanager
def collapse_groups() -> Iterator[None]:
    try:
        yield
    except BaseExceptionGroup as group:
        leaf = single_exception(group)
        if leaf is None:
            raise
        raise leaf from leaf.__cause__

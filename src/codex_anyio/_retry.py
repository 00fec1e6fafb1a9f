"""``retry_on_overload``: back off and retry when the runtime says it is busy.

The official SDK's helper is synchronous (``time.sleep``); this one sleeps with
``anyio.sleep``, so it works on asyncio and Trio and stays cancellable between attempts.
"""

from __future__ import annotations

import random
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from ._exceptions import is_retryable_error

__all__ = ["retry_on_overload"]

T = TypeVar("T")


async def retry_on_overload(
    operation: Callable[[], Awaitable[T]],
    *,
    max_attempts: int = 3,
    initial_delay: float = 0.25,
    max_delay: float = 2.0,
    jitter_ratio: float = 0.2,
) -> T:
    """Await ``operation()``; on a retryable error (server busy/overloaded) retry it with
    exponential backoff and jitter, up to ``max_attempts`` attempts in all.

    Non-retryable errors, and the last attempt's error, propagate unchanged.
    """
    if max_attempts < 1:
        raise ValueError("max_attempts must be >= 1")
    delay = initial_delay
    for attempt in range(1, max_attempts + 1):
        try:
            return await operation()
        except Exception as exc:
            if attempt >= max_attempts or not is_retryable_error(exc):
                raise
        jitter = delay * jitter_ratio
        await anyio.sleep(max(0.0, min(max_delay, delay) + random.uniform(-jitter, jitter)))
        delay = min(max_delay, delay * 2)
    raise AssertionError("unreachable")  # pragma: no cover

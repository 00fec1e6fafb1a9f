"""``retry_on_overload``: back off and retry when the runtime says it is busy.

One helper for both worlds, with the official SDK's keywords (``initial_delay_s``,
``max_delay_s``): given a synchronous callable (``lambda: thread.run("...")`` on the sync
:class:`~codex_anyio.Codex`) it retries in place with ``time.sleep`` and returns the result;
given one that returns an awaitable (``lambda: thread.run("...")`` on ``AsyncCodex``) it
returns a coroutine to ``await``, which sleeps with ``anyio.sleep`` so it works on asyncio
and Trio and stays cancellable between attempts.
"""

from __future__ import annotations

import inspect
import random
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar, overload

import anyio

from .._exceptions import is_retryable_error

__all__ = ["retry_on_overload"]

T = TypeVar("T")


class _Backoff:
    def __init__(
        self, max_attempts: int, initial_delay: float, max_delay: float, jitter_ratio: float
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")
        self.attempt = 1
        self.max_attempts = max_attempts
        self.delay = initial_delay
        self.max_delay = max_delay
        self.jitter_ratio = jitter_ratio

    def next_sleep(self, exc: Exception) -> float:
        """Seconds to wait before the next attempt; re-raises ``exc`` when it is final."""
        if self.attempt >= self.max_attempts or not is_retryable_error(exc):
            raise exc
        self.attempt += 1
        jitter = self.delay * self.jitter_ratio
        sleep = max(0.0, min(self.max_delay, self.delay) + random.uniform(-jitter, jitter))
        self.delay = min(self.max_delay, self.delay * 2)
        return sleep


@overload
def retry_on_overload(
    op: Callable[[], Awaitable[T]],
    *,
    max_attempts: int = ...,
    initial_delay_s: float = ...,
    max_delay_s: float = ...,
    jitter_ratio: float = ...,
    initial_delay: float | None = ...,
    max_delay: float | None = ...,
) -> Coroutine[Any, Any, T]: ...


@overload
def retry_on_overload(
    op: Callable[[], T],
    *,
    max_attempts: int = ...,
    initial_delay_s: float = ...,
    max_delay_s: float = ...,
    jitter_ratio: float = ...,
    initial_delay: float | None = ...,
    max_delay: float | None = ...,
) -> T: ...


def retry_on_overload(
    op: Callable[[], Any],
    *,
    max_attempts: int = 3,
    initial_delay_s: float = 0.25,
    max_delay_s: float = 2.0,
    jitter_ratio: float = 0.2,
    initial_delay: float | None = None,
    max_delay: float | None = None,
) -> Any:
    """Call ``op()``; on a retryable error (server busy/overloaded) retry it with exponential
    backoff and jitter, up to ``max_attempts`` attempts in all.

    Non-retryable errors, and the last attempt's error, propagate unchanged.
    ``initial_delay``/``max_delay`` are the earlier names of ``initial_delay_s``/``max_delay_s``.
    """
    backoff = _Backoff(
        max_attempts,
        initial_delay_s if initial_delay is None else initial_delay,
        max_delay_s if max_delay is None else max_delay,
        jitter_ratio,
    )
    while True:
        try:
            result = op()
        except Exception as exc:
            time.sleep(backoff.next_sleep(exc))
            continue
        if inspect.isawaitable(result):
            return _retry_async(op, result, backoff)
        return result


async def _retry_async(op: Callable[[], Any], first: Awaitable[Any], backoff: _Backoff) -> Any:
    pending = first
    while True:
        try:
            return await pending
        except Exception as exc:
            await anyio.sleep(backoff.next_sleep(exc))
        pending = op()

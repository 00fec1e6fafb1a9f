"""The portal machinery behind the sync client: one event loop thread, and sync methods that
forward to async ones through it.

:class:`Bridge` runs a coroutine in the portal and waits for it in the calling thread; if the
wait is interrupted (``KeyboardInterrupt``) it cancels the task and waits, bounded by
:data:`CLEANUP_WAIT`, for the async layer's clean-up before the exception propagates.
:func:`forward` makes a sync method out of an async one: a descriptor typed with the async
method's ``ParamSpec``, so mypy sees the real signature, and an optional wrapper for the
result (an async ``Thread`` becomes a sync one). :func:`close_at_exit` and
:func:`sigint_deferred` cover the two ways a portal thread could otherwise hang the
interpreter.

A client belongs to the process that started it. ``os.fork()`` copies only the calling
thread, so in a child the portal's event loop does not run and a call would wait forever:
the bridge remembers the pid it was made in, and in any other process its portal raises
:class:`ForkedClientError` instead, while the exit hook leaves the parent's resources alone.
"""

from __future__ import annotations

import functools
import os
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from typing import Any, Concatenate, Final, Generic, ParamSpec, TypeVar, overload

import anyio
from anyio.from_thread import BlockingPortal

from .._api._turn import INTERRUPT_TIMEOUT
from .._exceptions import ForkedClientError

__all__ = [
    "CLEANUP_WAIT",
    "Bridge",
    "Wrapper",
    "close_at_exit",
    "forward",
    "sigint_deferred",
    "unblock_sigint",
    "within",
]

P = ParamSpec("P")
R = TypeVar("R")
A = TypeVar("A")

CLEANUP_WAIT: Final = INTERRUPT_TIMEOUT + 5.0
"""How long the calling thread waits, after an interruption, for the cancelled portal task to
finish its clean-up. The async layer bounds its own clean-up by ``INTERRUPT_TIMEOUT``; the
margin covers scheduling, so a wedged event loop cannot hold Ctrl-C hostage forever."""


def close_at_exit(stack: ExitStack) -> None:
    """Close a client that was never closed while the interpreter can still do it.

    An unclosed client's portal context manager is otherwise finalized during interpreter
    teardown, where stopping its event loop fails (half the modules are gone) and joining the
    loop's thread then waits forever: a forgotten ``close()`` hung the program at exit.
    ``threading``'s exit hooks run before teardown. The hook holds the stack, not the client,
    so an unreferenced client can still be collected. A forked child inherits the hook but
    not the loop thread it would join (so it would hang), nor the runtime: there it does
    nothing.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # pragma: no cover - CPython has had it since 3.9
        return
    owner = os.getpid()

    def close() -> None:
        if os.getpid() == owner:
            stack.close()

    try:
        register(close)
    except RuntimeError:  # pragma: no cover - a client created during interpreter shutdown
        pass


@contextmanager
def sigint_deferred() -> Iterator[None]:
    """Hold Ctrl-C back while the portal's thread starts.

    AnyIO's ``start_blocking_portal`` (4.x) cannot be interrupted while it waits for its event
    loop to come up: ``KeyboardInterrupt`` there leaves the loop running and the interpreter
    then waits for it forever. A blocked SIGINT is delivered when unblocked, a moment later,
    where the portal is ours to stop.
    """
    if not hasattr(signal, "pthread_sigmask") or threading.current_thread() is not (
        threading.main_thread()
    ):
        yield  # pragma: no cover - Windows, or not the thread Ctrl-C interrupts
        return
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


def unblock_sigint() -> None:
    # The loop thread inherited the blocked mask, and the runtime it spawns would inherit
    # it from there: give both the usual mask.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class Bridge:
    """The portal a ``Codex`` and every object it hands out call through."""

    def __init__(self, portal: BlockingPortal) -> None:
        self._portal = portal
        self.owner_pid = os.getpid()

    @property
    def forked(self) -> bool:
        """This is a process forked from the one the client was started in."""
        return os.getpid() != self.owner_pid

    @property
    def portal(self) -> BlockingPortal:
        """The portal, in the process that owns it.

        :raises ForkedClientError: in a forked child, where its loop thread does not exist.
        """
        if self.forked:
            raise ForkedClientError(self.owner_pid, os.getpid())
        return self._portal

    def call(self, fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
        """Await ``fn(*args, **kwargs)`` in the portal; see the module docstring for what
        an interruption of the calling thread does."""
        finished = threading.Event()

        async def run() -> R:
            try:
                return await fn(*args, **kwargs)
            finally:
                finished.set()

        future = self.portal.start_task_soon(run)
        try:
            return future.result()
        except BaseException:
            if not future.done():
                # Interrupted while waiting (Ctrl-C): cancel the task, which cleans up in the
                # async layer (interrupting a turn), and wait for that before propagating.
                future.cancel()
                finished.wait(CLEANUP_WAIT)
            raise


class Wrapper(Generic[A]):
    """A sync object over an async one, sharing its :class:`Bridge`."""

    def __init__(self, bridge: Bridge, wrapped: A) -> None:
        self._bridge = bridge
        self._async = wrapped


class _Forward(Generic[P, R]):
    """A sync method forwarding to the async method of the same name through the portal."""

    def __init__(self, wrap: Callable[[Bridge, Any], R] | None) -> None:
        self._wrap = wrap
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _Forward[P, R]: ...

    @overload
    def __get__(self, obj: Wrapper[Any], owner: type) -> Callable[P, R]: ...

    def __get__(self, obj: Wrapper[Any] | None, owner: type) -> Any:
        if obj is None:
            return self
        target = getattr(obj._async, self._name)
        bridge, wrap = obj._bridge, self._wrap

        @functools.wraps(target)
        def method(*args: Any, **kwargs: Any) -> Any:
            result = bridge.call(_awaiting, target, *args, **kwargs)
            return result if wrap is None else wrap(bridge, result)

        return method


async def _awaiting(fn: Callable[..., Awaitable[R]], *args: Any, **kwargs: Any) -> R:
    # ``thread.turn(...)`` returns an awaitable that is not a coroutine: await it here.
    return await fn(*args, **kwargs)


@overload
def forward(
    method: Callable[Concatenate[Any, P], Awaitable[R]],
) -> _Forward[P, R]: ...


@overload
def forward(
    method: Callable[Concatenate[Any, P], Awaitable[A]], wrap: Callable[[Bridge, A], R]
) -> _Forward[P, R]: ...


def forward(method: Any, wrap: Any = None) -> Any:
    """Forward to ``method``'s namesake on the wrapped object; ``method`` (the async class's
    function) is there for its signature, which the sync method takes over."""
    return _Forward(wrap)


async def within(seconds: float | None, fn: Callable[[], Awaitable[R]]) -> R:
    if seconds is None:
        return await fn()
    with anyio.fail_after(seconds):
        return await fn()

"""The synchronous client: ``Codex``, its ``Thread`` and ``TurnHandle``.

There is one implementation, the async one. ``Codex`` runs an :class:`AsyncCodex` in an AnyIO
blocking portal (an event loop in a helper thread, asyncio or Trio) and each sync method is a
:func:`_forward` of the async method of the same name: the signature mypy sees is the async
one's (a ``ParamSpec``), the return value is wrapped into its sync twin where there is one.
Only what differs in kind is written here: construction and ``close()``, iterators, and
``timeout=`` on ``run``.

Cancellation crosses the thread hop. Every call runs as a portal task that the calling thread
waits for; if the wait is interrupted (``KeyboardInterrupt``, i.e. Ctrl-C) the task is
cancelled and the calling thread waits, bounded, until the async layer has finished its
clean-up (for a turn: ``turn/interrupt`` sent and ``turn/completed`` seen) before the
exception propagates. Leaving a sync stream early (``break``, which closes the generator)
interrupts the turn the same way, and ``run(..., timeout=S)`` runs the turn under
``anyio.fail_after(S)``, so an expired timeout interrupts it and raises ``TimeoutError``.
"""

from __future__ import annotations

import functools
import signal
import sys
import threading
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack, contextmanager
from types import TracebackType
from typing import Any, Concatenate, Final, Generic, Literal, ParamSpec, TypeVar, overload

import anyio
from anyio.from_thread import BlockingPortal, start_blocking_portal

from . import _account, _thread, _turn
from ._codex import AsyncCodex
from ._config import CodexConfig
from ._dispatch import Handlers
from ._generated import models as m
from ._inputs import RunInput
from ._metadata import CodexMetadata
from ._notifications import Notification
from ._router import Limits
from ._sync_stream import iterate_in_batches
from ._turn import INTERRUPT_TIMEOUT, TurnResult

__all__ = [
    "ChatgptLoginHandle",
    "Codex",
    "DeviceCodeLoginHandle",
    "SyncThread",
    "SyncTurnHandle",
]

P = ParamSpec("P")
R = TypeVar("R")
A = TypeVar("A")

CLEANUP_WAIT: Final = INTERRUPT_TIMEOUT + 5.0
"""How long the calling thread waits, after an interruption, for the cancelled portal task to
finish its clean-up. The async layer bounds its own clean-up by ``INTERRUPT_TIMEOUT``; the
margin covers scheduling, so a wedged event loop cannot hold Ctrl-C hostage forever."""


def _close_at_exit(stack: ExitStack) -> None:
    """Close a client that was never closed before the interpreter joins its threads.

    The portal's event loop runs in a non-daemon executor thread, which the interpreter joins
    at exit: a forgotten ``close()`` would hang the program there. ``threading``'s own exit
    hooks run before that join, latest registered first, so this one runs before the
    executor's. It holds the stack, not the client, so an unreferenced client can still be
    collected.
    """
    register = getattr(threading, "_register_atexit", None)
    if register is None:  # pragma: no cover - CPython has had it since 3.9
        return

    try:
        register(stack.close)
    except RuntimeError:  # pragma: no cover - a client created during interpreter shutdown
        pass


@contextmanager
def _sigint_deferred() -> Iterator[None]:
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


def _unblock_sigint() -> None:
    # The loop thread inherited the blocked mask, and the runtime it spawns would inherit
    # it from there: give both the usual mask.
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class _Bridge:
    """The portal a ``Codex`` and every object it hands out call through."""

    def __init__(self, portal: BlockingPortal) -> None:
        self.portal = portal

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


class _Wrapper(Generic[A]):
    """A sync object over an async one, sharing its :class:`_Bridge`."""

    def __init__(self, bridge: _Bridge, wrapped: A) -> None:
        self._bridge = bridge
        self._async = wrapped


class _Forward(Generic[P, R]):
    """A sync method forwarding to the async method of the same name through the portal."""

    def __init__(self, wrap: Callable[[_Bridge, Any], R] | None) -> None:
        self._wrap = wrap
        self._name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, obj: None, owner: type) -> _Forward[P, R]: ...

    @overload
    def __get__(self, obj: _Wrapper[Any], owner: type) -> Callable[P, R]: ...

    def __get__(self, obj: _Wrapper[Any] | None, owner: type) -> Any:
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
def _forward(
    method: Callable[Concatenate[Any, P], Awaitable[R]],
) -> _Forward[P, R]: ...


@overload
def _forward(
    method: Callable[Concatenate[Any, P], Awaitable[A]], wrap: Callable[[_Bridge, A], R]
) -> _Forward[P, R]: ...


def _forward(method: Any, wrap: Any = None) -> Any:
    """Forward to ``method``'s namesake on the wrapped object; ``method`` (the async class's
    function) is there for its signature, which the sync method takes over."""
    return _Forward(wrap)


async def _within(seconds: float | None, fn: Callable[[], Awaitable[R]]) -> R:
    if seconds is None:
        return await fn()
    with anyio.fail_after(seconds):
        return await fn()


class SyncTurnHandle(_Wrapper[_turn.TurnHandle]):
    """A running (or finished) turn, from the sync client. Exported as ``TurnHandle`` in
    ``codex_anyio.sync`` semantics: ``stream()`` is a plain iterator, ``run()`` blocks.

    Use it as ``with thread.turn(...) as handle:`` to make its scope explicit: leaving the
    block before the turn completed interrupts it.
    """

    steer = _forward(_turn.TurnHandle.steer)
    interrupt = _forward(_turn.TurnHandle.interrupt)

    @property
    def id(self) -> str:
        return self._async.id

    @property
    def thread_id(self) -> str:
        return self._async.thread_id

    @property
    def status(self) -> str:
        """``inProgress`` until completion, then ``completed``, ``interrupted`` or ``failed``."""
        return self._async.status

    @property
    def done(self) -> bool:
        return self._async.done

    def run(self, *, timeout: float | None = None) -> TurnResult:
        """Wait for the turn and return its result; Ctrl-C or an expired ``timeout``
        (``TimeoutError``) interrupt it first."""
        return self._bridge.call(_within, timeout, self._async.run)

    def result(self) -> TurnResult:
        """The result of a completed turn (see ``AsyncCodex``'s ``TurnHandle.result``)."""
        return self._async.result()

    def stream(self) -> Iterator[Notification]:
        """This turn's notifications, in order, ending after ``turn/completed``.

        Leaving the loop early (``break``, an exception, Ctrl-C) interrupts the turn.
        """
        return self._iterate(self._async.stream())

    def stream_text(self) -> Iterator[str]:
        """Just the agent's message text, delta by delta."""
        return self._iterate(self._async.stream_text())

    def _iterate(self, events: _turn.TurnEvents[A]) -> Iterator[A]:
        bridge = self._bridge
        try:
            yield from iterate_in_batches(
                bridge.portal, events, call=bridge.call, cleanup_wait=CLEANUP_WAIT
            )
        finally:
            if not self._async.done:
                self.close()

    def close(self) -> None:
        """Interrupt the turn if it is still running, and release its stream."""
        self._bridge.call(self._async.aclose)

    def __enter__(self) -> SyncTurnHandle:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<sync {self._async!r}>"


def _turn_handle(bridge: _Bridge, handle: _turn.TurnHandle) -> SyncTurnHandle:
    return SyncTurnHandle(bridge, handle)


class SyncThread(_Wrapper[_thread.Thread]):
    """A conversation thread, from the sync client."""

    turn = _forward(_thread.Thread.turn, _turn_handle)
    read = _forward(_thread.Thread.read)
    set_name = _forward(_thread.Thread.set_name)
    compact = _forward(_thread.Thread.compact)

    @property
    def id(self) -> str:
        return self._async.id

    @property
    def info(self) -> m.Thread | None:
        """The ``Thread`` object from the response that gave us this thread, if any."""
        return self._async.info

    def run(self, input: RunInput, *, timeout: float | None = None, **params: Any) -> TurnResult:
        """Run one turn to completion (``Thread.turn``'s keywords) and return its result.

        Ctrl-C, or ``timeout`` seconds passing (then ``TimeoutError``), interrupt the turn on
        the server before the exception propagates.
        """
        run = functools.partial(self._async.run, input, **params)
        return self._bridge.call(_within, timeout, run)

    def __repr__(self) -> str:
        return f"<sync Thread {self.id}>"


def _thread_of(bridge: _Bridge, thread: _thread.Thread) -> SyncThread:
    return SyncThread(bridge, thread)


class ChatgptLoginHandle(_Wrapper[_account.AsyncChatgptLoginHandle]):
    """A browser login: open :attr:`auth_url`, then ``wait()``."""

    wait = _forward(_account.LoginHandle.wait)
    cancel = _forward(_account.LoginHandle.cancel)
    close = _forward(_account.LoginHandle.aclose)

    @property
    def login_id(self) -> str:
        return self._async.login_id

    @property
    def auth_url(self) -> str:
        return self._async.auth_url


class DeviceCodeLoginHandle(_Wrapper[_account.AsyncDeviceCodeLoginHandle]):
    """A device-code login: show :attr:`verification_url` and :attr:`user_code`, then
    ``wait()``."""

    wait = _forward(_account.LoginHandle.wait)
    cancel = _forward(_account.LoginHandle.cancel)
    close = _forward(_account.LoginHandle.aclose)

    @property
    def login_id(self) -> str:
        return self._async.login_id

    @property
    def verification_url(self) -> str:
        return self._async.verification_url

    @property
    def user_code(self) -> str:
        return self._async.user_code


def _chatgpt_login(bridge: _Bridge, handle: _account.AsyncChatgptLoginHandle) -> ChatgptLoginHandle:
    return ChatgptLoginHandle(bridge, handle)


def _device_login(
    bridge: _Bridge, handle: _account.AsyncDeviceCodeLoginHandle
) -> DeviceCodeLoginHandle:
    return DeviceCodeLoginHandle(bridge, handle)


class Codex(_Wrapper[AsyncCodex]):
    """The synchronous client: ``with Codex() as codex:``, or ``codex = Codex()`` and
    ``codex.close()``.

    The runtime starts in the constructor. Methods block; the protocol runs in an AnyIO
    event loop on a helper thread (``backend="asyncio"``, or ``"trio"``). Handlers and dynamic
    tools are the async ones (``async def``), run on that loop.

    :param config: how to launch the runtime (default: the pinned bundled binary).
    :param backend: the event loop of the helper thread: ``"asyncio"`` or ``"trio"``.
    :param handlers: answers to server requests; approvals are declined without one.
    :param limits: bounds of every buffer.
    :param strict: make a malformed line from the runtime fatal instead of logged.
    :param require_credentials: fail fast with ``CredentialsMissingError`` when the runtime
        has no login its model provider needs (see :class:`AsyncCodex`).
    """

    thread_start = _forward(AsyncCodex.thread_start, _thread_of)
    thread_resume = _forward(AsyncCodex.thread_resume, _thread_of)
    thread_fork = _forward(AsyncCodex.thread_fork, _thread_of)
    thread_unarchive = _forward(AsyncCodex.thread_unarchive, _thread_of)
    thread_list = _forward(AsyncCodex.thread_list)
    thread_archive = _forward(AsyncCodex.thread_archive)
    models = _forward(AsyncCodex.models)
    account = _forward(AsyncCodex.account)
    login_api_key = _forward(AsyncCodex.login_api_key)
    login_chatgpt = _forward(AsyncCodex.login_chatgpt, _chatgpt_login)
    login_chatgpt_device_code = _forward(AsyncCodex.login_chatgpt_device_code, _device_login)
    logout = _forward(AsyncCodex.logout)

    def __init__(
        self,
        config: CodexConfig | None = None,
        *,
        backend: Literal["asyncio", "trio"] = "asyncio",
        handlers: Handlers | None = None,
        limits: Limits | None = None,
        strict: bool = False,
        require_credentials: bool | None = None,
    ) -> None:
        codex = AsyncCodex(
            config,
            handlers=handlers,
            limits=limits,
            strict=strict,
            require_credentials=require_credentials,
        )
        self._stack = stack = ExitStack()
        self._closed = True
        try:
            with _sigint_deferred():
                portal = stack.enter_context(start_blocking_portal(backend))
                portal.call(_unblock_sigint)
            super().__init__(_Bridge(portal), codex)
            stack.enter_context(portal.wrap_async_context_manager(codex))
        except BaseException:
            # With the exception passed on, the portal cancels the start-up task (after
            # Ctrl-C it would still be running) instead of waiting for it.
            if not stack.__exit__(*sys.exc_info()):
                raise
        self._closed = False
        _close_at_exit(stack)

    @property
    def metadata(self) -> CodexMetadata:
        """What the runtime said in ``initialize`` (``serverInfo``, ``user_agent``, ...)."""
        return self._async.metadata

    @property
    def async_codex(self) -> AsyncCodex:
        """The :class:`AsyncCodex` this client drives (use it from :attr:`portal` only)."""
        return self._async

    @property
    def portal(self) -> BlockingPortal:
        """The blocking portal running the event loop, for anything not wrapped here."""
        return self._bridge.portal

    def thread(self, thread_id: str) -> SyncThread:
        """A handle for an existing thread id, without a request."""
        return SyncThread(self._bridge, self._async.thread(thread_id))

    def close(self) -> None:
        """Stop the runtime and the event loop thread; idempotent."""
        self._closed = True
        self._stack.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True):
            # Loud, like an unclosed stream: the runtime and a thread were left running
            # (they are closed at interpreter exit at the latest).
            warnings.warn(f"unclosed {self!r}; use 'with Codex() as codex:'", ResourceWarning, 2)

    def __enter__(self) -> Codex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

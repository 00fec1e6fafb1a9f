"""The synchronous client: ``Codex``, its ``Thread`` and ``TurnHandle``.

There is one implementation, the async one. ``Codex`` runs an :class:`AsyncCodex` in an AnyIO
blocking portal (an event loop in a helper thread, asyncio or Trio) and each sync method is a
``forward`` (see ``_portal``) of the async method of the same name: the signature mypy sees
is the async one's (a ``ParamSpec``), the return value is wrapped into its sync twin where
there is one.
Only what differs in kind is written here: construction and ``close()``, iterators, and
``timeout=`` on ``run``.

A blocking call made from a thread whose own event loop is running (a Jupyter cell, an
``async def`` calling the sync client) stops that loop until the call returns; the first one
per client says so with a ``RuntimeWarning`` (see ``_LoopCheckingBridge``).

Cancellation crosses the thread hop. Every call runs as a portal task that the calling thread
waits for; if the wait is interrupted (``KeyboardInterrupt``, i.e. Ctrl-C) the task is
cancelled and the calling thread waits, bounded, until the async layer has finished its
clean-up (for a turn: ``turn/interrupt`` sent and ``turn/completed`` seen) before the
exception propagates. Leaving a sync stream early (``break``, which closes the generator)
interrupts the turn the same way, and ``run(..., timeout=S)`` runs the turn under
``anyio.fail_after(S)``, so an expired timeout interrupts it and raises ``TimeoutError``.
"""

from __future__ import annotations

import asyncio
import functools
import sys
import warnings
from collections.abc import Awaitable, Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, ParamSpec, TypeVar, overload

from anyio.from_thread import BlockingPortal, start_blocking_portal

from .._api import _account, _goal, _thread, _turn
from .._api._codex import AsyncCodex
from .._api._dispatch import Handlers
from .._api._inputs import RunInput
from .._api._metadata import CodexMetadata
from .._api._model_calls import ModelCallSource
from .._api._turn import TurnResult
from .._protocol._generated import models as m
from .._rpc._notifications import Notification
from .._rpc._router import Limits
from .._rpc._usage import TokenUsage, TurnUsage
from .._wire._config import CodexConfig
from ..telemetry._telemetry import Telemetry
from ._portal import (
    CLEANUP_WAIT,
    Bridge,
    Wrapper,
    close_at_exit,
    forward,
    sigint_deferred,
    unblock_sigint,
    within,
)
from ._stream import iterate_in_batches

__all__ = [
    "ChatgptLoginHandle",
    "Codex",
    "DeviceCodeLoginHandle",
    "SyncGoal",
    "SyncThread",
    "SyncTurnHandle",
]

A = TypeVar("A")
P = ParamSpec("P")
R = TypeVar("R")

_PACKAGE = Path(__file__).resolve().parent


def _loop_running_in_this_thread() -> bool:
    """Whether the calling thread is inside a running asyncio or Trio event loop.

    Trio is only asked if something imported it: a program that never did cannot be in it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        trio = sys.modules.get("trio")
        return trio is not None and bool(trio.lowlevel.in_trio_run())
    return True


def _caller_stacklevel() -> int:
    """The ``stacklevel`` that points a warning at the first frame outside this package."""
    frame, level = sys._getframe(1), 1
    while frame.f_back is not None and Path(frame.f_code.co_filename).is_relative_to(_PACKAGE):
        frame, level = frame.f_back, level + 1
    return level


class _LoopCheckingBridge(Bridge):
    """The sync client's :class:`Bridge`: it warns, once, when it would block a running loop.

    Each sync call blocks its thread until the portal answers. Called from a thread that runs
    an event loop of its own (a Jupyter cell runs in one), every other task of that loop stops
    for the whole turn, silently. The first such call warns (once per client, so a loop of
    calls does not flood), naming what to use there instead.
    """

    def __init__(self, portal: BlockingPortal) -> None:
        super().__init__(portal)
        self.warned = False

    def check_caller(self) -> None:
        if not self.warned and _loop_running_in_this_thread():
            self.warned = True
            warnings.warn(
                "the sync Codex blocks this thread's running event loop until each call "
                "returns; in async code (a Jupyter cell included) use AsyncCodex with "
                "'async with' and 'await' instead",
                RuntimeWarning,
                stacklevel=_caller_stacklevel(),
            )

    def call(self, fn: Callable[P, Awaitable[R]], *args: P.args, **kwargs: P.kwargs) -> R:
        self.check_caller()
        return super().call(fn, *args, **kwargs)


class SyncTurnHandle(Wrapper[_turn.TurnHandle]):
    """A running (or finished) turn, from the sync client (the official SDK's sync
    ``TurnHandle``): ``stream()`` is a plain iterator, ``run()`` blocks.

    Use it as ``with thread.turn(...) as handle:`` to make its scope explicit: leaving the
    block before the turn completed interrupts it.
    """

    steer = forward(_turn.TurnHandle.steer)
    interrupt = forward(_turn.TurnHandle.interrupt)
    cancel = forward(_turn.TurnHandle.cancel)

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

    @property
    def usage(self) -> TurnUsage:
        """What this turn has spent so far (final once it is done)."""
        return self._async.usage

    def run(self, *, timeout: float | None = None) -> TurnResult:
        """Wait for the turn and return its result; Ctrl-C or an expired ``timeout``
        (``TimeoutError``) interrupt it first."""
        return self._bridge.call(within, timeout, self._async.run)

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
        yield from iterate_in_batches(
            bridge.portal,
            events,
            call=bridge.call,
            cleanup_wait=CLEANUP_WAIT,
            on_exit=self._close_unfinished,
        )

    async def _close_unfinished(self) -> None:
        """Run by the stream's pump in the loop as it stops: a turn left running is
        interrupted there, so no thread has to call back into the loop for it (a generator
        finalized on the loop thread could not)."""
        if not self._async.done:
            await self._async.aclose()

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


def _turn_handle(bridge: Bridge, handle: _turn.TurnHandle) -> SyncTurnHandle:
    return SyncTurnHandle(bridge, handle)


class SyncGoal(Wrapper[_goal.Goal]):
    """A goal of a thread, from the sync client: ``with thread.goal("...") as goal:``.

    Iterating it gives the events of every turn of the goal; leaving the block before the
    goal is over (``break``, an exception, Ctrl-C) pauses it and interrupts its live turn,
    in the event loop, before the block is left.
    """

    pause = forward(_goal.Goal.pause)
    resume = forward(_goal.Goal.resume)
    clear = forward(_goal.Goal.clear)

    @property
    def thread_id(self) -> str:
        return self._async.thread_id

    @property
    def status(self) -> m.ThreadGoalStatus | None:
        """The goal's latest known status (None before it is set, or once cleared)."""
        return self._async.status

    @property
    def turns(self) -> list[TurnResult]:
        """The results of the goal's turns completed so far."""
        return self._async.turns

    def result(self) -> _goal.GoalResult:
        """What the goal produced so far."""
        return self._async.result()

    def run(self, *, timeout: float | None = None) -> _goal.GoalResult:
        """Consume the goal's events until it stops and return its result; an expired
        ``timeout`` raises ``TimeoutError`` (the block's exit then pauses the goal)."""
        return self._bridge.call(within, timeout, self._async.run)

    def __iter__(self) -> Iterator[Notification]:
        bridge = self._bridge
        yield from iterate_in_batches(
            bridge.portal, self._async, call=bridge.call, cleanup_wait=CLEANUP_WAIT, on_exit=_noop
        )

    def close(self) -> None:
        """Pause the goal if it is still active, interrupt its live turn, release it."""
        self._bridge.call(self._async.aclose)

    def __enter__(self) -> SyncGoal:
        self._bridge.call(self._async.start)
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


async def _noop() -> None:
    """The goal's stream needs no clean-up of its own: its ``with`` block owns the goal."""


class SyncThread(Wrapper[_thread.Thread]):
    """A conversation thread, from the sync client."""

    turn = forward(_thread.Thread.turn, _turn_handle)
    read = forward(_thread.Thread.read)
    set_name = forward(_thread.Thread.set_name)
    compact = forward(_thread.Thread.compact)

    @property
    def id(self) -> str:
        return self._async.id

    @property
    def info(self) -> m.Thread | None:
        """The ``Thread`` object from the response that gave us this thread, if any."""
        return self._async.info

    @overload
    def run(
        self,
        input: RunInput,
        *,
        goal: Literal[False] = False,
        timeout: float | None = None,
        **params: Any,
    ) -> TurnResult: ...

    @overload
    def run(
        self, input: str, *, goal: Literal[True], timeout: float | None = None
    ) -> _goal.GoalResult: ...

    def run(
        self, input: RunInput, *, goal: bool = False, timeout: float | None = None, **params: Any
    ) -> TurnResult | _goal.GoalResult:
        """Run one turn to completion (``Thread.turn``'s keywords) and return its result;
        ``goal=True`` runs ``input`` as a goal's objective instead (``run_goal``).

        Ctrl-C, or ``timeout`` seconds passing (then ``TimeoutError``), interrupt the turn on
        the server (for a goal: pause it and interrupt its live turn) before the exception
        propagates.
        """
        if goal:
            if not isinstance(input, str) or params:
                raise TypeError("run(..., goal=True) takes the objective as a string, alone")
            return self.run_goal(input, timeout=timeout)
        run = functools.partial(self._async.run, input, **params)
        return self._bridge.call(within, timeout, run)

    def goal(self, objective: str, *, token_budget: int | None = None) -> SyncGoal:
        """Set a goal and own it: ``with thread.goal("...") as goal:`` (see ``Thread.goal``)."""
        return SyncGoal(self._bridge, self._async.goal(objective, token_budget=token_budget))

    def run_goal(
        self, objective: str, *, token_budget: int | None = None, timeout: float | None = None
    ) -> _goal.GoalResult:
        """Run a goal until it stops and return its result (see ``Thread.run_goal``);
        Ctrl-C or an expired ``timeout`` pause it and interrupt its live turn first."""
        run = functools.partial(self._async.run_goal, objective, token_budget=token_budget)
        return self._bridge.call(within, timeout, run)

    def usage(self) -> TokenUsage:
        """Tokens spent by this thread's turns run by this client (see ``Thread.usage``)."""
        return self._async.usage()

    def __repr__(self) -> str:
        return f"<sync Thread {self.id}>"


def _thread_of(bridge: Bridge, thread: _thread.Thread) -> SyncThread:
    return SyncThread(bridge, thread)


class ChatgptLoginHandle(Wrapper[_account.AsyncChatgptLoginHandle]):
    """A browser login: open :attr:`auth_url`, then ``wait()``."""

    wait = forward(_account.LoginHandle.wait)
    cancel = forward(_account.LoginHandle.cancel)
    close = forward(_account.LoginHandle.aclose)

    @property
    def login_id(self) -> str:
        return self._async.login_id

    @property
    def auth_url(self) -> str:
        return self._async.auth_url


class DeviceCodeLoginHandle(Wrapper[_account.AsyncDeviceCodeLoginHandle]):
    """A device-code login: show :attr:`verification_url` and :attr:`user_code`, then
    ``wait()``."""

    wait = forward(_account.LoginHandle.wait)
    cancel = forward(_account.LoginHandle.cancel)
    close = forward(_account.LoginHandle.aclose)

    @property
    def login_id(self) -> str:
        return self._async.login_id

    @property
    def verification_url(self) -> str:
        return self._async.verification_url

    @property
    def user_code(self) -> str:
        return self._async.user_code


def _chatgpt_login(bridge: Bridge, handle: _account.AsyncChatgptLoginHandle) -> ChatgptLoginHandle:
    return ChatgptLoginHandle(bridge, handle)


def _device_login(
    bridge: Bridge, handle: _account.AsyncDeviceCodeLoginHandle
) -> DeviceCodeLoginHandle:
    return DeviceCodeLoginHandle(bridge, handle)


class Codex(Wrapper[AsyncCodex]):
    """The synchronous client: ``with Codex() as codex:``, or ``codex = Codex()`` and
    ``codex.close()``.

    The runtime starts in the constructor. Methods block; the protocol runs in an AnyIO
    event loop on a helper thread (``backend="asyncio"``, or ``"trio"``). Handlers and dynamic
    tools are the async ones (``async def``), run on that loop.

    Not for a thread that runs an event loop itself (a Jupyter cell, an ``async def``): each
    call would stall that loop until it returns, so the first one warns (``RuntimeWarning``).
    Use :class:`AsyncCodex` there, with ``await``, or call this client from a worker thread.

    :param config: how to launch the runtime (default: the pinned bundled binary).
    :param backend: the event loop of the helper thread: ``"asyncio"`` or ``"trio"``.
    :param handlers: answers to server requests; approvals are declined without one.
    :param limits: bounds of every buffer.
    :param strict: make a malformed line from the runtime fatal instead of logged.
    :param require_credentials: fail fast with ``CredentialsMissingError`` when the runtime
        has no login its model provider needs (see :class:`AsyncCodex`).
    :param telemetry: OpenTelemetry spans and metrics (see :class:`AsyncCodex`).
    :param gateway: a :class:`~codex_anyio.gateway.ModelGateway` for the runtime's model
        calls (see :class:`AsyncCodex`). Not running yet, it runs on this client's event
        loop thread for as long as the client is open.
    """

    thread_start = forward(AsyncCodex.thread_start, _thread_of)
    thread_resume = forward(AsyncCodex.thread_resume, _thread_of)
    thread_fork = forward(AsyncCodex.thread_fork, _thread_of)
    thread_unarchive = forward(AsyncCodex.thread_unarchive, _thread_of)
    thread_list = forward(AsyncCodex.thread_list)
    thread_archive = forward(AsyncCodex.thread_archive)
    models = forward(AsyncCodex.models)
    account = forward(AsyncCodex.account)
    login_api_key = forward(AsyncCodex.login_api_key)
    login_chatgpt = forward(AsyncCodex.login_chatgpt, _chatgpt_login)
    login_chatgpt_device_code = forward(AsyncCodex.login_chatgpt_device_code, _device_login)
    logout = forward(AsyncCodex.logout)

    def __init__(
        self,
        config: CodexConfig | None = None,
        *,
        backend: Literal["asyncio", "trio"] = "asyncio",
        handlers: Handlers | None = None,
        limits: Limits | None = None,
        strict: bool = False,
        require_credentials: bool | None = None,
        telemetry: Telemetry | bool | None = None,
        gateway: ModelCallSource | None = None,
    ) -> None:
        codex = AsyncCodex(
            config,
            handlers=handlers,
            limits=limits,
            strict=strict,
            require_credentials=require_credentials,
            telemetry=telemetry,
            gateway=gateway,
        )
        self._stack = stack = ExitStack()
        self._closed = True
        try:
            with sigint_deferred():
                portal = stack.enter_context(start_blocking_portal(backend))
                portal.call(unblock_sigint)
            bridge = _LoopCheckingBridge(portal)
            bridge.check_caller()  # starting the runtime blocks too
            super().__init__(bridge, codex)
            stack.enter_context(portal.wrap_async_context_manager(codex))
        except BaseException:
            # With the exception passed on, the portal cancels the start-up task (after
            # Ctrl-C it would still be running) instead of waiting for it.
            if not stack.__exit__(*sys.exc_info()):
                raise
        self._closed = False
        close_at_exit(stack)

    @property
    def metadata(self) -> CodexMetadata:
        """What the runtime said in ``initialize`` (``serverInfo``, ``user_agent``, ...)."""
        return self._async.metadata

    def usage(self) -> TokenUsage:
        """Tokens spent by the turns this client ran (see ``AsyncCodex.usage``)."""
        return self._async.usage()

    @property
    def rate_limits(self) -> m.RateLimitSnapshot | None:
        """The latest ``account/rateLimits/updated`` snapshot, or None until one arrives."""
        return self._async.rate_limits

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
        """Stop the runtime and the event loop thread; idempotent.

        In a process forked from the one that started the client this does nothing: the
        runtime and the loop are the parent's (every other method raises
        :class:`ForkedClientError` there).
        """
        self._closed = True
        if not self._bridge.forked:
            self._stack.close()

    def __del__(self) -> None:
        if not getattr(self, "_closed", True) and not self._bridge.forked:
            # Loud, like an unclosed stream: the runtime and a thread were left running
            # (they are closed at interpreter exit at the latest).
            try:
                warnings.warn(
                    f"unclosed {self!r}; use 'with Codex() as codex:'", ResourceWarning, 2
                )
            except Exception:  # pragma: no cover - during interpreter teardown
                pass

    def __enter__(self) -> Codex:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

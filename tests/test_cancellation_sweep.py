"""The product's first promise, swept: whatever cancels a turn, at whichever scheduler
checkpoint, the turn has ended on the server before the cancellation leaves its scope.

Each kind of cancellation (a sibling's ``cancel()``, an expired ``move_on_after`` or
``fail_after`` deadline, a ``KeyboardInterrupt`` from a sibling, asyncio's native
``task.cancel()`` and ``asyncio.timeout``) is fired after k checkpoints of the canceller, for
every k from 0 to 30 and then at growing distances up to 3200, so that it lands at every
step of a turn's life: before ``turn/start`` is written, while it is in flight, between its
response and the handle, while the turn streams, while the model stalls. Real deadlines
(``move_on_after(d)`` for d in steps of 3 ms) add the timing of a real clock.

"Ended before the cancellation continues" is checked at the moment the scope is left, not
later: a recorder on the client's router notes every ``turn/started`` and ``turn/completed``
the client has read, and at the scope's exit every turn the runtime started must already be
completed in it. Then ``thread/read`` confirms it from the server's side.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from typing import Any

import anyio
import pytest

from codex_anyio import JsonRpcError, Thread
from codex_anyio.testing import ScriptedCodex, stall

from .conftest import TRANSPORTS

if sys.version_info < (3, 11):
    from exceptiongroup import BaseExceptionGroup

pytestmark = pytest.mark.anyio

CHECKPOINTS = [*range(31), 40, 80, 160, 320, 640, 1280, 2560, 3200]
"""Every checkpoint of a turn's set-up, then the turn running and the model stalled."""

DELAYS_MS = list(range(0, 150, 3))
"""Real deadlines: 0 to 147 ms, in steps of 3 ms (a lean turn's set-up takes ~10-30 ms)."""

STALLED = [stall()] * (len(CHECKPOINTS) + len(DELAYS_MS))
"""A model that starts no answer: every turn runs until it is interrupted."""

LEAN: dict[str, Any] = {"config": {"features": {"shell_snapshot": False}}}
"""Fresh threads without a login shell each (fast); not ephemeral, so ``thread/read`` can
list their turns."""


class TurnRecorder:
    """Every turn the client has learnt was started (a ``turn/start`` response, or a
    ``turn/started``) and every ``turn/completed`` its reader has routed."""

    def __init__(self, s: ScriptedCodex) -> None:
        self.started: set[str] = set()
        self.completed: set[str] = set()
        client = s.codex.client
        router = client._router
        route, response = router.route, client._response

        def recording_route(method: str, params: dict[str, Any]) -> None:
            if method in ("turn/started", "turn/completed"):
                self._note(params, self.started if method == "turn/started" else self.completed)
            route(method, params)

        def recording_response(message: dict[str, Any]) -> None:
            result = message.get("result")
            if isinstance(result, dict):
                self._note(result, self.started)
            response(message)

        router.route = recording_route  # type: ignore[method-assign]
        client._response = recording_response  # type: ignore[method-assign]

    @staticmethod
    def _note(params: dict[str, Any], seen: set[str]) -> None:
        turn = params.get("turn")
        if isinstance(turn, dict) and isinstance(turn.get("id"), str):
            seen.add(turn["id"])


async def last_turn_status(s: ScriptedCodex, thread_id: str) -> str | None:
    """The server's status of the thread's last turn (None: it has no turn; "settingUp": its
    first turn is being set up)."""
    try:
        read = await s.codex.thread(thread_id).read(include_turns=True)
    except JsonRpcError as exc:
        # A thread that never got a turn has no rollout yet: the runtime cannot list turns.
        if "list_turns is not supported" in exc.message:
            return None
        # Its first turn is still being set up (the rollout file exists, nothing in it yet).
        if "is empty" in exc.message:
            return "settingUp"
        raise
    turns = read.thread.turns
    return str(turns[-1].status) if turns else None


Cancel = Callable[[int, Thread], Awaitable[None]]
"""Runs a turn on the thread and cancels it after k checkpoints of the canceller; returns
when the cancelled scope has been left (its expected exception caught)."""


async def sweep(s: ScriptedCodex, cancel: Cancel, points: list[int]) -> list[str]:
    """Fire ``cancel`` at every point; describe every turn left running."""
    recorder = TurnRecorder(s)
    broken: list[str] = []
    for k in points:
        thread = await s.codex.thread_start(**LEAN)
        await cancel(k, thread)
        # The scope has been left: the client must already have seen the end of every turn.
        completed_at_exit = set(recorder.completed)
        status = await last_turn_status(s, thread.id)
        running = recorder.started - completed_at_exit
        if running:
            broken.append(f"k={k}: turn {sorted(running)} not completed when the scope was left")
            recorder.started -= running
        if status is not None and status not in ("interrupted", "completed"):
            broken.append(f"k={k}: the server reports the turn {status}")
    return broken


async def _checkpoints(k: int) -> None:
    for _ in range(k):
        await anyio.lowlevel.checkpoint()


async def sibling_cancel(k: int, thread: Thread) -> None:
    async with anyio.create_task_group() as tg:

        async def canceller() -> None:
            await _checkpoints(k)
            tg.cancel_scope.cancel()

        tg.start_soon(thread.run, "hello")
        tg.start_soon(canceller)


def _expiring(scope_factory: Callable[[], Any], expected: type[BaseException] | None) -> Cancel:
    """A deadline scope whose deadline a sibling moves to now after k checkpoints: the
    deadline machinery of the backend fires it, at a chosen step."""

    async def cancel(k: int, thread: Thread) -> None:
        async def body() -> None:
            with scope_factory() as scope:
                async with anyio.create_task_group() as tg:

                    async def expire() -> None:
                        await _checkpoints(k)
                        scope.deadline = anyio.current_time()
                        await anyio.sleep_forever()

                    tg.start_soon(thread.run, "hello")
                    tg.start_soon(expire)

        if expected is None:
            await body()
        else:
            with pytest.raises(expected):
                await body()

    return cancel


move_on_expired = _expiring(lambda: anyio.move_on_after(3600), None)
fail_after_expired = _expiring(lambda: anyio.fail_after(3600), TimeoutError)


async def keyboard_interrupt(k: int, thread: Thread) -> None:
    """What a Ctrl-C delivered to a sibling task looks like to the turn's task group (Trio; on
    asyncio a KeyboardInterrupt raised in a task stops the event loop itself, and Ctrl-C
    reaches the program as the runner's cancel of the main task: ``task.cancel`` below)."""

    async def ctrl_c() -> None:
        await _checkpoints(k)
        raise KeyboardInterrupt

    with pytest.raises(BaseExceptionGroup) as caught:
        async with anyio.create_task_group() as tg:  # the user's group: it groups the error
            tg.start_soon(thread.run, "hello")
            tg.start_soon(ctrl_c)
    interrupts, others = caught.value.split(KeyboardInterrupt)
    assert interrupts is not None, caught.value
    assert others is None, caught.value


async def asyncio_task_cancel(k: int, thread: Thread) -> None:
    async def turn() -> None:
        await thread.run("hello")

    task = asyncio.ensure_future(turn())
    for _ in range(k):
        await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


async def asyncio_timeout(k: int, thread: Thread) -> None:
    loop = asyncio.get_running_loop()
    with pytest.raises(TimeoutError):
        async with asyncio.timeout(None) as timeout:

            async def expire() -> None:
                for _ in range(k):
                    await asyncio.sleep(0)
                timeout.reschedule(loop.time())

            expiry = asyncio.ensure_future(expire())
            try:
                await thread.run("hello")
            finally:
                await expiry


BOTH_BACKENDS: dict[str, Cancel] = {
    "sibling-cancel": sibling_cancel,
    "move_on_after-expired": move_on_expired,
    "fail_after-expired": fail_after_expired,
}

ASYNCIO_ONLY: dict[str, Cancel] = {
    "task.cancel": asyncio_task_cancel,
    "asyncio.timeout": asyncio_timeout,
}


@pytest.mark.parametrize("kind", list(BOTH_BACKENDS))
async def test_a_turn_cancelled_at_any_checkpoint_has_ended_when_its_scope_is_left(
    scripted_codex: Any, kind: str
) -> None:
    with anyio.fail_after(240):
        async with scripted_codex(STALLED) as s:
            assert await sweep(s, BOTH_BACKENDS[kind], CHECKPOINTS) == []
            assert s.codex.client.statistics().pending_requests == 0


@pytest.mark.parametrize("scripted_codex", [t for t in TRANSPORTS if t != "stdio"], indirect=True)
async def test_a_sibling_cancel_at_any_checkpoint_leaves_no_turn_running_on_any_transport(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(240):
        async with scripted_codex(STALLED) as s:
            assert await sweep(s, sibling_cancel, CHECKPOINTS) == []


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("kind", list(ASYNCIO_ONLY))
async def test_an_asyncio_native_cancel_at_any_checkpoint_leaves_no_turn_running(
    scripted_codex: Any, kind: str
) -> None:
    with anyio.fail_after(240):
        async with scripted_codex(STALLED) as s:
            assert await sweep(s, ASYNCIO_ONLY[kind], CHECKPOINTS) == []


@pytest.mark.parametrize("anyio_backend", ["trio"])
async def test_a_ctrl_c_in_a_sibling_at_any_checkpoint_leaves_no_turn_running(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(240):
        async with scripted_codex(STALLED) as s:
            assert await sweep(s, keyboard_interrupt, CHECKPOINTS) == []


async def test_a_real_deadline_at_any_moment_of_a_turn_leaves_no_turn_running(
    scripted_codex: Any,
) -> None:
    async def deadline(ms: int, thread: Thread) -> None:
        with anyio.move_on_after(ms / 1000):
            await thread.run("hello")

    with anyio.fail_after(240):
        async with scripted_codex(STALLED) as s:
            assert await sweep(s, deadline, DELAYS_MS) == []


async def test_the_sweep_reports_a_turn_left_running(scripted_codex: Any) -> None:
    """The sweep's check can fail: a turn started with no owner to interrupt it is found."""

    async def leave_running(k: int, thread: Thread) -> None:
        del k
        await thread._codex.client.request(
            "turn/start", {"threadId": thread.id, "input": [{"type": "text", "text": "x"}]}
        )

    with anyio.fail_after(60):
        async with scripted_codex(STALLED) as s:
            broken = await sweep(s, leave_running, [0])
            # The server may not list a turn this young yet; the client knows it started.
            assert len(broken) in (1, 2), broken
            assert "not completed when the scope was left" in broken[0]


@pytest.mark.parametrize("k", [0, 1, 3, 10, 30, 100, 1000])
async def test_a_scope_that_encloses_the_client_too_still_interrupts_the_turn_on_the_server(
    scripted_codex: Any, k: int
) -> None:
    """``with fail_after(...): async with AsyncCodex() as codex: await thread.run(...)``: the
    cancellation reaches the client's own reader and writer as well as the turn. The turn's
    shielded interrupt must still be written and its answer read: the reader and writer
    serve until the client itself closes (they were cancelled with the scope, so the
    interrupt went unanswered and the client sat out its shutdown grace periods instead)."""
    with anyio.fail_after(60):
        with anyio.move_on_after(30) as outer:
            async with scripted_codex(STALLED) as s:
                recorder = TurnRecorder(s)
                thread = await s.codex.thread_start(**LEAN)
                async with anyio.create_task_group() as tg:

                    async def cancel_everything() -> None:
                        await s.model.wait_for_requests(1)  # the turn is running
                        await _checkpoints(k)
                        outer.cancel()

                    tg.start_soon(cancel_everything)
                    await thread.run("hello")
        assert outer.cancelled_caught
        assert recorder.started, "the turn never started"
        # Its turn/completed reached the client before the client closed: it was interrupted
        # on the server, not merely killed with the process.
        assert recorder.started <= recorder.completed

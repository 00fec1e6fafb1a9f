"""What an adversarial campaign broke, against the real runtime and the scripted model:
cancellation that escaped the structure, a hung runtime stretching the bounds, turn controls
used from several tasks, dropped handles, long-lived clients. Fault injection wraps a private
method where a real signal or a native cancellation cannot be placed exactly."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio import Handlers, Limits, TurnIdleTimeoutError
from codex_anyio.testing import ScriptedCodex, message, stall
from codex_anyio.types import TurnInterruptResponse

from .test_cancellation_sweep import last_turn_status as server_turn_status
from .test_turns import last_turn_status

pytestmark = pytest.mark.anyio

LEAN: dict[str, Any] = {"config": {"features": {"shell_snapshot": False}}}
"""Thread settings that keep many-thread tests fast (no login shell per thread)."""


def _patch_written(
    s: ScriptedCodex, after_turn_start: Callable[[], Awaitable[None]]
) -> Callable[[], None]:
    """Run ``after_turn_start`` in the caller's task right after ``turn/start`` is written."""
    client = s.codex.client
    original = client._await_reply

    async def await_reply(outgoing: Any, reply: Any) -> None:
        if b'"turn/start"' in outgoing.data:
            client._await_reply = original  # type: ignore[method-assign]
            await client._written(outgoing)
            await after_turn_start()
        await original(outgoing, reply)

    client._await_reply = await_reply  # type: ignore[method-assign]
    return lambda: setattr(client, "_await_reply", original)


# -- cancellation that escaped the structure ------------------------------------------------


async def test_a_ctrl_c_while_turn_start_is_in_flight_still_leaves_the_turn_interrupted(
    scripted_codex: Any,
) -> None:
    async def ctrl_c() -> None:
        raise KeyboardInterrupt

    with anyio.fail_after(60):
        async with scripted_codex([stall()]) as s:
            thread = await s.codex.thread_start()
            _patch_written(s, ctrl_c)
            with pytest.raises(KeyboardInterrupt):
                await thread.run("hello")
            # As in a REPL that caught Ctrl-C: the client lives on, the turn is not running.
            assert await last_turn_status(s.codex, thread.id) == "interrupted"
            assert s.codex.client.statistics().turns_reaped == 1


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("when", ["after-write", "after-response"])
async def test_an_asyncio_native_cancel_of_a_turn_start_still_leaves_the_turn_interrupted(
    scripted_codex: Any, when: str
) -> None:
    import asyncio

    with anyio.fail_after(60):
        async with scripted_codex([stall()]) as s:
            thread = await s.codex.thread_start()
            task: asyncio.Task[Any] | None = None

            async def cancel_natively() -> None:
                assert task is not None
                task.cancel()
                await asyncio.sleep(0)

            client = s.codex.client
            if when == "after-write":
                _patch_written(s, cancel_natively)
            else:
                original = client._response

                def response(message: dict[str, Any]) -> None:
                    original(message)
                    result = message.get("result")
                    if isinstance(result, dict) and "turn" in result and task is not None:
                        task.cancel()  # the response is in; its caller is cancelled natively

                client._response = response  # type: ignore[method-assign]
            task = asyncio.ensure_future(thread.run("hello"))
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await last_turn_status(s.codex, thread.id) == "interrupted"


_CTRL_C_IN_THE_READER = """
import signal, sys
import anyio
from codex_anyio.testing import message, open_scripted_codex, stall

async def main():
    async with open_scripted_codex([stall(message("partial", deltas=1))]) as s:
        thread = await s.codex.thread_start()
        router = s.codex.client._router
        route = router.route

        def route_then_ctrl_c(method, params):
            route(method, params)
            if method == "item/agentMessage/delta":
                router.route = route
                signal.raise_signal(signal.SIGINT)  # arrives while the reader runs

        router.route = route_then_ctrl_c
        turn = None
        try:
            async with thread.turn("hi") as turn:
                async for event in turn.stream():
                    pass
        except KeyboardInterrupt:
            print("CAUGHT", flush=True)
        finally:
            print("STATUS", turn.status if turn else None, flush=True)
        read = await thread.read(include_turns=True)
        print("SERVER", read.thread.turns[-1].status, flush=True)

try:
    anyio.run(main, backend=sys.argv[1])
except KeyboardInterrupt:
    print("KEYBOARDINTERRUPT", flush=True)
"""


def test_a_ctrl_c_that_lands_in_the_reader_reaches_the_user_and_interrupts_the_turn(
    tmp_path: Path, anyio_backend: str
) -> None:
    script = tmp_path / "ctrl_c.py"
    script.write_text(textwrap.dedent(_CTRL_C_IN_THE_READER))
    done = subprocess.run(
        [sys.executable, str(script), anyio_backend],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    lines = done.stdout.split()
    assert "TransportClosedError" not in done.stderr, done.stderr
    assert lines[lines.index("STATUS") : lines.index("STATUS") + 2] == ["STATUS", "interrupted"]
    if anyio_backend == "trio":
        # Delivered to the main task as a bare KeyboardInterrupt; the client lives on.
        assert lines[:1] == ["CAUGHT"], done.stdout + done.stderr
        assert "SERVER interrupted" in done.stdout
    else:
        # asyncio turns Ctrl-C into a cancellation of the main task, then KeyboardInterrupt.
        assert lines[-1] == "KEYBOARDINTERRUPT", done.stdout + done.stderr


@contextmanager
def _stopped(pid: int) -> Iterator[None]:
    """The runtime hangs (SIGSTOP) inside the block."""
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(pid, signal.SIGCONT)


BOUND = 1.0
"""``Limits.interrupt_timeout`` for the hung-runtime tests."""


async def test_with_a_hung_runtime_leaving_a_turn_takes_the_interrupt_bound_once(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        async with scripted_codex([stall()], limits=Limits(interrupt_timeout=BOUND)) as s:
            thread = await s.codex.thread_start()
            with anyio.CancelScope() as scope:
                async with thread.turn("hello") as turn:
                    await s.model.wait_for_requests(1)
                    with _stopped(s.codex.client._transport.pid):  # type: ignore[attr-defined]
                        start = anyio.current_time()
                        scope.cancel()
                        await turn.run()  # cancelled: the clean-up runs here, not again on exit
            elapsed = anyio.current_time() - start
            assert BOUND * 0.9 <= elapsed < BOUND * 1.9


async def test_with_a_hung_runtime_an_idle_timeout_fires_within_its_bounds(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        async with scripted_codex([stall()], limits=Limits(interrupt_timeout=BOUND)) as s:
            thread = await s.codex.thread_start()
            async with thread.turn("hello", idle_timeout=0.5) as turn:
                await s.model.wait_for_requests(1)
                with _stopped(s.codex.client._transport.pid):  # type: ignore[attr-defined]
                    start = anyio.current_time()
                    with pytest.raises(TurnIdleTimeoutError):
                        await turn.run()
                    elapsed = anyio.current_time() - start
            assert elapsed < 0.5 + BOUND * 1.9


async def test_a_cancel_before_the_turn_start_response_honours_the_deadline_and_the_turn_is_reaped(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        async with scripted_codex([stall()], limits=Limits(interrupt_timeout=BOUND)) as s:
            thread = await s.codex.thread_start()
            async with thread.notifications(include_turns=True) as events:
                with _stopped(s.codex.client._transport.pid):  # type: ignore[attr-defined]
                    start = anyio.current_time()
                    with anyio.move_on_after(0.3) as scope:
                        await thread.run("hello")
                    elapsed = anyio.current_time() - start
                assert scope.cancelled_caught  # the caller's own cancellation, no TimeoutError
                assert elapsed < 0.3 + BOUND * 1.9
                # The runtime wakes up and answers: the reader finds the turn an owner that
                # interrupts it.
                async for event in events:
                    if event.method == "turn/completed":
                        assert event.raw["turn"]["status"] == "interrupted"
                        break


async def test_turns_cancelled_while_waiting_for_a_request_slot_end_at_once_and_leave_no_stash(
    scripted_codex: Any,
) -> None:
    """A ``turn/start`` that never left the client has nothing to interrupt: cancelling it
    while it waits for a request slot must not wait for a response that cannot come (it waited
    the whole ``interrupt_timeout``, and the router's turn-start stash stayed open for the life
    of the client, turning its fast path off)."""
    limits = Limits(requests_in_flight=1, interrupt_timeout=20)
    with anyio.fail_after(15):  # below interrupt_timeout: waiting for it fails the test
        async with scripted_codex([stall()] * 3, limits=limits) as s:
            client = s.codex.client
            threads = [await s.codex.thread_start(**LEAN) for _ in range(3)]
            async with anyio.create_task_group() as tg:
                # The runtime stopped: the first turn/start holds the only slot, unanswered.
                with _stopped(client._transport.pid):  # type: ignore[attr-defined]
                    for thread in threads:
                        tg.start_soon(thread.run, "hello")
                    await anyio.wait_all_tasks_blocked()
                    assert client.statistics().pending_requests == 1
                    assert client.statistics().router.turn_starts_in_flight == 3
                    tg.cancel_scope.cancel()
                    with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                        await anyio.wait_all_tasks_blocked()
                    # The two that never sent anything are gone, the runtime still stopped.
                    assert client.statistics().router.turn_starts_in_flight == 1
                # The runtime resumes and answers the first: its turn is interrupted.
            assert client.statistics().router.turn_starts_in_flight == 0
            # The one that held the slot (whichever the scheduler ran first) was interrupted,
            # or so early that the runtime kept no record of it; the others were never sent.
            statuses = [await server_turn_status(s, thread.id) for thread in threads]
            assert set(statuses) <= {"interrupted", None}, statuses
            assert statuses.count(None) >= 2, statuses


async def test_a_storm_of_turns_cancelled_right_after_starting_leaves_each_interrupted_or_unsent(
    scripted_codex: Any,
) -> None:
    """96 turns at once on one client with 16 request slots (the storm of 256 turns on the
    default 100 slots, scaled down; the benchmark runs that one), all cancelled 50 ms after
    they start: the ones that sent their ``turn/start`` are interrupted on the server, the
    ones still waiting for a slot never send it, and none waits for a response that cannot
    come (they waited the whole ``interrupt_timeout`` each, and left the router's stash open)."""
    count = 96
    limits = Limits(interrupt_timeout=60, requests_in_flight=16)
    with anyio.fail_after(120):
        async with scripted_codex([stall()] * count, limits=limits) as s:
            client = s.codex.client
            threads: list[Any] = []
            async with anyio.create_task_group() as tg:
                for _ in range(count):
                    tg.start_soon(lambda: _append(threads, s.codex.thread_start(**LEAN)))
            with anyio.fail_after(40):  # below interrupt_timeout: waiting for it fails the test
                with anyio.move_on_after(0.05):
                    async with anyio.create_task_group() as tg:
                        for thread in threads:
                            tg.start_soon(thread.run, "hello")
            stats = client.statistics()
            assert (stats.pending_requests, stats.router.turn_starts_in_flight) == (0, 0)
            statuses = [await server_turn_status(s, thread.id) for thread in threads]
            assert set(statuses) <= {"interrupted", None}, sorted(set(statuses), key=str)


async def _append(into: list[Any], value: Awaitable[Any]) -> None:
    into.append(await value)


# -- turn controls that compose ---------------------------------------------------------------


async def test_interrupt_from_another_task_while_one_streams_ends_the_stream_cleanly(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        async with scripted_codex([stall(message("partial", deltas=1))]) as s:
            thread = await s.codex.thread_start()
            methods: list[str] = []
            async with thread.turn("hello") as turn:
                async with anyio.create_task_group() as tg:

                    async def consume() -> None:
                        async for event in turn.stream():
                            methods.append(event.method)

                    tg.start_soon(consume)
                    await s.model.wait_for_requests(1)
                    answer = await turn.interrupt()
                    assert isinstance(answer, TurnInterruptResponse)
            assert methods[-1] == "turn/completed"
            assert turn.status == "interrupted"
            assert (await thread.read()).thread.id == thread.id  # the client lives on


async def test_steer_and_interrupt_at_once_while_streaming_never_break_the_client(
    scripted_codex: Any,
) -> None:
    from codex_anyio import JsonRpcError

    with anyio.fail_after(60):
        async with scripted_codex([stall(message("partial", deltas=1)), message("next")]) as s:
            thread = await s.codex.thread_start()
            async with thread.turn("hello") as turn:
                async with anyio.create_task_group() as tg:

                    async def consume() -> None:
                        async for _ in turn.stream():
                            pass

                    async def steer() -> None:
                        try:
                            await turn.steer("and also this")
                        except JsonRpcError:
                            pass  # the turn may have ended first: the caller's error, no more

                    tg.start_soon(consume)
                    await s.model.wait_for_requests(1)
                    tg.start_soon(steer)
                    tg.start_soon(turn.interrupt)
            assert turn.done
            assert (await thread.run("again")).final_response == "next"


async def test_interrupt_right_after_the_start_and_after_the_end_are_both_safe(
    scripted_codex: Any,
) -> None:
    def script(request: Any) -> Any:
        # The first turn may be interrupted before it reaches the model: answer by input.
        return message("done") if "again" in json.dumps(request.body["input"][-1]) else stall()

    with anyio.fail_after(60):
        async with scripted_codex(script) as s:
            thread = await s.codex.thread_start()
            turn = await thread.turn("hello")
            async with turn:
                await turn.interrupt()  # before turn/started: retried until the turn is seen
                assert (await turn.run()).status == "interrupted"
            finished = await thread.turn("again")
            async with finished:
                await finished.run()
                assert isinstance(await finished.interrupt(), TurnInterruptResponse)


async def test_a_second_concurrent_consumer_gets_a_clear_error_and_observers_see_everything(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        async with scripted_codex([stall(message("partial", deltas=1))]) as s:
            thread = await s.codex.thread_start()
            first: list[str] = []
            observed: list[str] = []
            async with thread.turn("hello") as turn:
                streaming = anyio.Event()
                async with anyio.create_task_group() as tg:

                    async def consume() -> None:
                        async for event in turn.stream():
                            first.append(event.method)
                            streaming.set()

                    async def observe() -> None:
                        async with turn.observe() as events:
                            observed.extend([event.method async for event in events])

                    tg.start_soon(observe)
                    tg.start_soon(consume)
                    await streaming.wait()
                    with pytest.raises(RuntimeError, match=r"observe\(\)"):
                        async for _ in turn.stream():
                            pass
                    result = await turn.cancel()  # waits for the streaming task to see the end
            assert result.status == "interrupted"
            assert first[-1] == observed[-1] == "turn/completed"
            assert set(observed) <= set(first)


async def test_subscribe_turn_on_a_turn_this_client_started_gives_an_observer(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        async with scripted_codex([message("hi", deltas=3)]) as s:
            thread = await s.codex.thread_start()
            async with thread.turn("hello") as turn:
                async with s.codex.client.subscribe_turn(turn.id) as observer:
                    result = await turn.run()
                    methods = [event.method async for event in observer]
            assert result.final_response == "hi"
            assert methods[-1] == "turn/completed"


async def test_starting_a_turn_on_a_busy_thread_returns_a_handle_for_the_joined_turn(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        async with scripted_codex([stall(message("partial", deltas=1)), message("x")]) as s:
            thread = await s.codex.thread_start()
            async with thread.turn("first") as running:
                await s.model.wait_for_requests(1)
                async with thread.turn("more input") as joined:
                    assert joined.id == running.id
                    result = await joined.cancel()
                assert result.status == "interrupted"
                assert (await running.run()).status == "interrupted"


async def test_a_dropped_unconsumed_handle_frees_its_buffers_and_its_turn_is_interrupted(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        async with scripted_codex([stall()]) as s:
            thread = await s.codex.thread_start()
            async with thread.notifications(include_turns=True) as events:
                handle = await thread.turn("hello")
                turn_id = handle.id
                await s.model.wait_for_requests(1)
                del handle
                gc.collect()  # no ResourceWarning (an error under filterwarnings=error)
                assert s.codex.client.statistics().router.turn_streams == 0
                await thread.read()  # traffic: the reader hands the turn to a reaper
                async for event in events:
                    if event.method == "turn/completed" and event.turn_id == turn_id:
                        assert event.raw["turn"]["status"] == "interrupted"
                        break


async def test_cancelling_many_turns_during_their_set_up_ends_them_all_quickly(
    scripted_codex: Any,
) -> None:
    count = 16
    with anyio.fail_after(120):
        async with scripted_codex(lambda request: stall()) as s:
            threads = [await s.codex.thread_start(**LEAN) for _ in range(count)]
            cleanup: list[float] = []

            async def start_and_leave(thread: Any) -> None:
                with anyio.CancelScope() as scope:
                    async with thread.turn("hello"):
                        start = anyio.current_time()
                        scope.cancel()  # before the runtime has set the turn up
                        await anyio.sleep_forever()
                cleanup.append(anyio.current_time() - start)

            async with anyio.create_task_group() as tg:
                for thread in threads:
                    tg.start_soon(start_and_leave, thread)
            # Before, a rejected interrupt waited the whole interrupt_timeout (10 s).
            assert max(cleanup) < 5
            for thread in threads:
                assert await last_turn_status(s.codex, thread.id) in {"interrupted", "completed"}


# -- long-lived clients stay flat -----------------------------------------------------------


async def test_three_hundred_turns_on_thirty_threads_leave_nothing_behind(
    scripted_codex: Any,
) -> None:
    async def lookup(key: str) -> str:
        """Look a key up."""
        return key

    with anyio.fail_after(240):
        async with scripted_codex(lambda request: message("ok")) as s:
            codex = s.codex
            threads = [
                await codex.thread_start(dynamic_tools=[lookup], handlers=Handlers(), **LEAN)
                for _ in range(30)
            ]
            assert codex._dispatcher.registered_threads() == 30

            async def ten_turns(thread: Any) -> None:
                for _ in range(10):
                    assert (await thread.run("hi")).final_response == "ok"

            async with anyio.create_task_group() as tg:
                for thread in threads:
                    tg.start_soon(ten_turns, thread)
            for thread in threads[:15]:
                await codex.thread_archive(thread.id)
            assert codex._dispatcher.registered_threads() == 15
            del threads, thread
            gc.collect()  # the other 15 Thread objects are gone: so are their tools
            assert codex._dispatcher.registered_threads() == 0
            stats = codex.client.statistics()
            assert stats.pending_requests == stats.server_requests_in_flight == 0
            router = stats.router
            assert router.turn_streams == router.turn_observers == router.parked == 0
            assert router.thread_subscriptions == router.stashed == 0


async def test_an_exception_from_the_body_of_scripted_codex_arrives_bare(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        with pytest.raises(KeyError, match="mine"):
            async with scripted_codex([]):
                raise KeyError("mine")

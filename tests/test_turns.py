"""Threads and turns against the real runtime with a scripted model: results, streaming,
steering, structured cancellation, idle timeouts, failures, concurrency."""

from __future__ import annotations

import json
from typing import Any

import anyio
import pytest

from codex_anyio import (
    AsyncCodex,
    Limits,
    TurnFailedError,
    TurnIdleTimeoutError,
)
from codex_anyio.testing import (
    RecordedRequest,
    Reply,
    ScriptedCodex,
    failed,
    message,
    stall,
)

from .conftest import over_every_transport

pytestmark = pytest.mark.anyio


def user_text(request: RecordedRequest) -> str:
    """The last user message the runtime sent to the model."""
    texts = [
        part.get("text", "")
        for item in request.body.get("input", [])
        if item.get("type") == "message" and item.get("role") == "user"
        for part in item.get("content", [])
    ]
    return texts[-1] if texts else ""


async def last_turn_status(codex: AsyncCodex, thread_id: str) -> str:
    read = await codex.thread(thread_id).read(include_turns=True)
    return str(read.thread.turns[-1].status)


@over_every_transport
async def test_a_multi_turn_thread_keeps_its_history(scripted_codex: Any) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([message("First answer."), message("Second answer.")]) as s:
            thread = await s.codex.thread_start()
            first = await thread.run("first question")
            second = await thread.run("second question")
            assert (first.status, first.final_response) == ("completed", "First answer.")
            assert (second.status, second.final_response) == ("completed", "Second answer.")
            assert first.id != second.id
            assert second.usage is not None
            history = json.dumps(s.model.requests[1].body["input"])
            assert "first question" in history
            assert "First answer." in history


@over_every_transport
async def test_stream_yields_this_turns_events_in_order_and_stream_text_the_deltas(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([message("alpha beta gamma"), message("x y")]) as s:
            thread = await s.codex.thread_start()
            async with thread.turn("go") as turn:
                methods = [event.method async for event in turn.stream()]
            assert methods[-1] == "turn/completed"
            assert "turn/started" in methods
            assert all(m != "turn/completed" for m in methods[:-1])
            async with thread.turn("again") as turn:
                pieces = [text async for text in turn.stream_text()]
            assert pieces == ["x ", "y"]
            assert turn.result().final_response == "x y"


async def test_run_waiting_beside_a_task_that_streams_does_not_delay_its_events(
    scripted_codex: Any,
) -> None:
    # run() is woken for batches of events when it is the consumer; a task that streams the
    # same turn must still get each event as it comes (the turn never ends by itself here).
    release = anyio.Event()

    async def script(request: Any) -> Any:
        await release.wait()  # the model answers once both tasks wait
        return stall(message("live", deltas=2))

    async with scripted_codex(script) as s:
        thread = await s.codex.thread_start()
        first_delta = anyio.Event()
        with anyio.fail_after(30):
            async with thread.turn("go") as handle, anyio.create_task_group() as tg:

                async def watch() -> None:
                    async for event in handle.stream():
                        if event.method == "item/agentMessage/delta":
                            first_delta.set()

                async def wait_for_the_end() -> None:
                    await handle.run()

                tg.start_soon(watch)
                await anyio.wait_all_tasks_blocked()
                tg.start_soon(wait_for_the_end)
                await anyio.wait_all_tasks_blocked()
                release.set()
                await first_delta.wait()
                await handle.interrupt()
        assert handle.status == "interrupted"


async def test_resume_and_fork_continue_a_thread(scripted_codex: Any) -> None:
    script = [message("one"), message("two"), message("three")]
    with anyio.fail_after(30):
        async with scripted_codex(script) as s:
            thread = await s.codex.thread_start()
            await thread.run("hello")
            resumed = await s.codex.thread_resume(thread.id)
            assert resumed.id == thread.id
            assert (await resumed.run("after resume")).final_response == "two"
            fork = await s.codex.thread_fork(thread.id)
            assert fork.id != thread.id
            assert (await fork.run("in the fork")).final_response == "three"
            assert "after resume" in json.dumps(s.model.requests[2].body["input"])


async def test_steer_adds_input_to_the_running_turn(scripted_codex: Any) -> None:
    script = [message("one two three four five six", delay=0.1), message("steered")]
    with anyio.fail_after(30):
        async with scripted_codex(script) as s:
            thread = await s.codex.thread_start()
            async with thread.turn("start") as turn:
                async for event in turn.stream():
                    if event.method == "item/agentMessage/delta" and event.raw["delta"] == "two ":
                        response = await turn.steer("PLEASE CHANGE COURSE")
                        assert response.turn_id == turn.id
            assert turn.result().final_response == "steered"
            assert "PLEASE CHANGE COURSE" in json.dumps(s.model.requests[-1].body["input"])


@over_every_transport
async def test_interrupt_returns_once_the_turn_has_completed_as_interrupted(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([stall()]) as s:
            thread = await s.codex.thread_start()
            async with thread.turn("wait") as turn:
                await s.model.wait_for_requests(1)
                result = await turn.cancel()
            assert result.status == "interrupted"
            assert turn.done
            with anyio.fail_after(5):
                await s.model.exchanges[0].abandoned.wait()


@over_every_transport
async def test_leaving_a_turn_interrupted_by_hand_does_not_wait_for_an_answer_that_never_comes(
    scripted_codex: Any,
) -> None:
    """``interrupt()``, then the block is left without reading the end: the runtime never
    answers a second ``turn/interrupt`` for a turn that has ended, and leaving used to send one
    and wait the whole ``interrupt_timeout`` for it (10 s by default; 60 here, past the
    test's own deadline)."""
    with anyio.fail_after(30):
        async with scripted_codex([stall()], limits=Limits(interrupt_timeout=60)) as s:
            thread = await s.codex.thread_start()
            async with thread.turn("wait") as turn:
                async with turn.observe() as events:
                    await s.model.wait_for_requests(1)
                    await turn.interrupt()
                    assert [e.method async for e in events][-1] == "turn/completed"
            assert turn.status == "interrupted"
            assert await last_turn_status(s.codex, thread.id) == "interrupted"
            assert s.codex.client.statistics().pending_requests == 0


async def _assert_interrupted(s: ScriptedCodex, thread_id: str) -> None:
    """Interrupted on the server, and, if the turn had reached the model by then (a deadline
    may expire first on a loaded machine), the model's stream was dropped."""
    assert await last_turn_status(s.codex, thread_id) == "interrupted"
    if s.model.exchanges:
        with anyio.fail_after(5):
            await s.model.exchanges[-1].abandoned.wait()


async def _expire_once_the_model_is_asked(s: ScriptedCodex, scope: anyio.CancelScope) -> None:
    """End ``scope`` (as its deadline would) once the turn has reached the model, so the test
    does not depend on how long the runtime takes to get there on a loaded machine."""
    await s.model.wait_for_requests(1)
    scope.deadline = anyio.current_time()


@over_every_transport
async def test_run_inside_move_on_after_leaves_the_turn_interrupted_on_the_server(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([stall(message("thinking", deltas=1))]) as s:
            thread = await s.codex.thread_start()
            with anyio.move_on_after(20) as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_expire_once_the_model_is_asked, s, scope)
                    await thread.run("take your time")
            assert scope.cancelled_caught
            await _assert_interrupted(s, thread.id)


async def test_fail_after_interrupts_the_turn_before_raising(scripted_codex: Any) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([stall()]) as s:
            thread = await s.codex.thread_start()
            with pytest.raises(TimeoutError), anyio.fail_after(20) as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(_expire_once_the_model_is_asked, s, scope)
                    await thread.run("slow")
            await _assert_interrupted(s, thread.id)


@over_every_transport
async def test_breaking_out_of_the_stream_interrupts_the_turn(scripted_codex: Any) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([stall(message("partial answer"))]) as s:
            thread = await s.codex.thread_start()
            async with thread.turn("go") as turn:
                async for event in turn.stream():
                    if event.method == "item/agentMessage/delta":
                        break
            assert turn.status == "interrupted"
            await _assert_interrupted(s, thread.id)


async def test_an_exception_in_the_turn_block_interrupts_the_turn_and_propagates(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([stall()]) as s:
            thread = await s.codex.thread_start()
            with pytest.raises(LookupError, match="user code failed"):
                async with thread.turn("go"):
                    await s.model.wait_for_requests(1)
                    raise LookupError("user code failed")
            await _assert_interrupted(s, thread.id)


async def test_cancelling_the_task_group_interrupts_the_turn(scripted_codex: Any) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([stall()]) as s:
            thread = await s.codex.thread_start()
            async with anyio.create_task_group() as tg:
                tg.start_soon(thread.run, "go")
                await s.model.wait_for_requests(1)
                tg.cancel_scope.cancel()
            await _assert_interrupted(s, thread.id)


async def test_keyboard_interrupt_in_the_turn_block_interrupts_the_turn(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([stall()]) as s:
            thread = await s.codex.thread_start()
            with pytest.raises(KeyboardInterrupt):
                async with thread.turn("go"):
                    await s.model.wait_for_requests(1)
                    raise KeyboardInterrupt
            await _assert_interrupted(s, thread.id)


async def test_a_silent_turn_hits_the_idle_timeout_and_is_interrupted(scripted_codex: Any) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([stall()]) as s:
            thread = await s.codex.thread_start()
            with pytest.raises(TurnIdleTimeoutError) as caught:
                await thread.run("go", idle_timeout=0.5)
            assert caught.value.idle_timeout == 0.5
            await _assert_interrupted(s, thread.id)


async def test_a_failed_turn_raises_turn_failed_error_and_streams_the_error_event(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([failed("model exploded"), failed("again")]) as s:
            thread = await s.codex.thread_start()
            with pytest.raises(TurnFailedError, match="model exploded") as caught:
                await thread.run("go")
            assert caught.value.turn.status == "failed"
            async with thread.turn("go again") as turn:
                methods = [event.method async for event in turn.stream()]
            assert "error" in methods
            assert turn.status == "failed"
            with pytest.raises(TurnFailedError):
                turn.result()


async def test_turns_back_to_back_on_one_thread_are_never_mixed_up(scripted_codex: Any) -> None:
    replies = [message(f"answer {i}", deltas=3) for i in range(4)]
    with anyio.fail_after(30):
        async with scripted_codex(replies) as s:
            thread = await s.codex.thread_start()
            for i in range(4):
                async with thread.turn(f"question {i}") as turn:
                    text = "".join([t async for t in turn.stream_text()])
                assert text == f"answer {i}"
                assert turn.result().final_response == f"answer {i}"
                assert {item.id for item in turn.result().items}.isdisjoint({"not", "shared"})


@over_every_transport
async def test_64_concurrent_turns_each_see_exactly_their_own_events(scripted_codex: Any) -> None:
    def echo(request: RecordedRequest) -> Reply:
        return message("reply to " + user_text(request), deltas=4)

    count = 64
    with anyio.fail_after(120):
        async with scripted_codex(echo) as s:
            limiter = anyio.CapacityLimiter(8)
            threads: list[Any] = [None] * count
            results: dict[int, tuple[str, str, list[str]]] = {}

            async def start(i: int) -> None:
                async with limiter:
                    threads[i] = await s.codex.thread_start()

            async def run(i: int) -> None:
                async with threads[i].turn(f"turn-{i}") as turn:
                    deltas = [d async for d in turn.stream_text()]
                result = turn.result()
                results[i] = (result.status, result.final_response or "", deltas)

            async with anyio.create_task_group() as tg:
                for i in range(count):
                    tg.start_soon(start, i)
            async with anyio.create_task_group() as tg:
                for i in range(count):
                    tg.start_soon(run, i)
            for i in range(count):
                status, final, deltas = results[i]
                assert status == "completed"
                assert final == f"reply to turn-{i}"
                assert "".join(deltas) == final
            stats = s.codex.client.statistics()
            assert stats.router.turn_streams == 0
            assert stats.router.overflowed == 0

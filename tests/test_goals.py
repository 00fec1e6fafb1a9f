"""Goals against the real runtime and the scripted model: the runtime runs the continuation
turns by itself, the scripted model ends the goal with the runtime's ``update_goal`` tool.
Each test checks what the runtime did (``thread/read``, ``thread/goal/get``), not only what
the client says."""

from __future__ import annotations

import faulthandler
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

from codex_anyio import Codex, GoalStatus, TokenUsage, result_only_opt_outs
from codex_anyio.testing import (
    RecordedRequest,
    Reply,
    function_call,
    message,
    model_usage,
    reply,
    scripted_runtime,
    stall,
)

COMPLETE = function_call("update_goal", {"status": "complete"})


def answered_tool(request: RecordedRequest) -> bool:
    """Whether this model request carries a tool's output (the goal tool just ran)."""
    items = request.body.get("input") or []
    return bool(items) and items[-1].get("type") == "function_call_output"


def met_on_turn(turn: int, *, stall_turn: int | None = None) -> Callable[[RecordedRequest], Reply]:
    """A script: turns before ``turn`` answer with a message (each request costing a
    different number of tokens), turn ``turn`` marks the goal complete and then answers
    "done"; ``stall_turn`` hangs instead, until the runtime drops the stream."""
    count = 0

    def script(request: RecordedRequest) -> Reply:
        nonlocal count
        if answered_tool(request):
            return message("done", usage=model_usage(7, 3))
        count += 1
        if count == stall_turn:
            return stall(message("partial"))
        if count == turn:
            return reply(message("nearly"), COMPLETE, usage=model_usage(20, 4))
        return message(f"step {count}", usage=model_usage(10 * count, count))

    return script


async def run_goal_until_its_second_request(s: Any, thread: Any) -> anyio.CancelScope:
    """Run a goal on ``thread`` under a scope whose deadline comes once the model has its
    second request (the goal's second turn is live); the scope, to check it was left."""
    async with anyio.create_task_group() as tg:
        with anyio.CancelScope() as scope:

            async def expire_in_second_turn() -> None:
                await s.model.wait_for_requests(2)
                scope.deadline = anyio.current_time()

            tg.start_soon(expire_in_second_turn)
            await thread.run_goal("make it so")
    return scope


async def goal_status(codex: Any, thread_id: str) -> str | None:
    result = await codex.client.request("thread/goal/get", {"threadId": thread_id})
    goal = result.get("goal")
    return None if goal is None else str(goal["status"])


async def turn_statuses(thread: Any) -> list[str]:
    turns = (await thread.read(include_turns=True)).thread.turns or []
    return [str(turn.status) for turn in turns]


@pytest.mark.anyio
async def test_a_goal_met_after_three_continuation_turns_returns_every_turn_and_their_usage(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        async with scripted_codex(met_on_turn(3)) as s:
            thread = await s.codex.thread_start()
            result = await thread.run_goal("make it so")
            assert result.status == GoalStatus.complete
            assert [str(t.status) for t in result.turns] == ["completed"] * 3
            assert result.final_response == "done"
            assert result.usage == sum((t.usage for t in result.turns), TokenUsage())
            # What the model reported: 10+1, 20+2, then 20+4 and 7+3 in the third turn.
            assert (result.usage.input_tokens, result.usage.output_tokens) == (57, 10)
            assert result.usage == thread.usage()
            assert await turn_statuses(thread) == ["completed"] * 3
            assert await goal_status(s.codex, thread.id) == "complete"


@pytest.mark.anyio
async def test_a_deadline_in_the_second_turn_pauses_the_goal_and_interrupts_that_turn(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        async with scripted_codex(met_on_turn(3, stall_turn=2)) as s:
            thread = await s.codex.thread_start()
            scope = await run_goal_until_its_second_request(s, thread)
            assert scope.cancelled_caught
            assert await goal_status(s.codex, thread.id) == "paused"
            assert await turn_statuses(thread) == ["completed", "interrupted"]
            read = await thread.read()
            assert read.thread.status.type == "idle"
            assert s.model.exchanges[1].abandoned.is_set()
            assert len(s.model.requests) == 2


@pytest.mark.anyio
async def test_a_goal_pauses_resumes_and_clears_within_its_scope(scripted_codex: Any) -> None:
    finish = False

    def script(request: RecordedRequest) -> Reply:
        if answered_tool(request):
            return message("done")
        return COMPLETE if finish else message("step")

    with anyio.fail_after(60):
        async with scripted_codex(script) as s:
            thread = await s.codex.thread_start()
            async with thread.goal("make it so") as goal:
                async for event in goal:
                    if event.method == "turn/completed" and goal.status == GoalStatus.active:
                        await goal.pause()
                # Paused: the stream ended, and no turn is running or will start.
                assert goal.status == GoalStatus.paused
                assert await goal_status(s.codex, thread.id) == "paused"
                assert (await thread.read()).thread.status.type == "idle"
                paused_turns = len(goal.turns)
                assert goal.over

                finish = True
                await goal.resume()
                assert goal.status == GoalStatus.active
                async for _ in goal:
                    pass
                assert goal.status == GoalStatus.complete
                assert len(goal.turns) == paused_turns + 1
                assert goal.turns[-1].final_response == "done"

                await goal.clear()
                assert goal.status is None
                assert await goal_status(s.codex, thread.id) is None
            assert goal.result().goal is None
            assert await turn_statuses(thread) == [str(t.status) for t in goal.turns]


@pytest.mark.anyio
async def test_breaking_out_of_a_goal_stream_pauses_it_and_interrupts_its_live_turn(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        async with scripted_codex(met_on_turn(3, stall_turn=2)) as s:
            thread = await s.codex.thread_start()
            started = 0
            async with thread.goal("make it so") as goal:
                async for event in goal:
                    started += event.method == "turn/started"
                    if started == 2 and event.method == "item/completed":
                        break
            assert goal.status == GoalStatus.paused
            assert await goal_status(s.codex, thread.id) == "paused"
            assert await turn_statuses(thread) == ["completed", "interrupted"]
            assert [str(t.status) for t in goal.turns] == ["completed", "interrupted"]


@pytest.mark.anyio
async def test_an_ephemeral_thread_refuses_a_goal_with_one_clear_error(
    scripted_codex: Any,
) -> None:
    from codex_anyio import InvalidRequestError

    with anyio.fail_after(60):
        async with scripted_codex([]) as s:
            thread = await s.codex.thread_start(ephemeral=True)
            with pytest.raises(InvalidRequestError, match="ephemeral thread does not support"):
                await thread.run_goal("make it so")


@pytest.mark.anyio
async def test_a_goal_on_a_client_that_opts_out_of_turn_starts_is_refused_before_it_is_set(
    scripted_codex: Any,
) -> None:
    with anyio.fail_after(60):
        opt_outs = result_only_opt_outs()
        async with scripted_codex([], opt_out_notification_methods=opt_outs) as s:
            thread = await s.codex.thread_start()
            with pytest.raises(ValueError, match="turn/started"):
                await thread.run_goal("make it so")
            assert await goal_status(s.codex, thread.id) is None


@pytest.fixture(params=["asyncio", "trio"])
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def test_the_sync_twin_runs_a_goal_and_pauses_one_left_early(backend: str, tmp_path: Path) -> None:
    first = met_on_turn(3)
    held: list[str] = []

    def script(request: RecordedRequest) -> Reply:
        """The first thread's goal is met on its third turn; the other's turn hangs."""
        if held and request.thread_id == held[0]:
            return stall(message("partial"))
        return first(request)

    faulthandler.dump_traceback_later(90, exit=True)
    try:
        with scripted_runtime(script, backend=backend, directory=tmp_path) as rt:
            with Codex(rt.config, backend=backend) as codex:
                thread = codex.thread_start()
                result = thread.run_goal("make it so", timeout=60)
                assert result.status == GoalStatus.complete
                assert len(result.turns) == 3
                assert result.usage == sum((t.usage for t in result.turns), TokenUsage())

                other = codex.thread_start()
                held.append(other.id)
                with other.goal("again") as goal:
                    for event in goal:
                        if event.method == "turn/started":
                            break
                assert goal.status == GoalStatus.paused
                turns = other.read(include_turns=True).thread.turns or []
                assert [str(t.status) for t in turns] == ["interrupted"]
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.mark.anyio
@pytest.mark.parametrize("checkpoints", [0, 1, 2, 3, 4, 6, 8, 12, 16, 24])
async def test_a_scope_cancelled_while_the_goal_is_being_set_leaves_it_paused_and_no_turn_running(
    scripted_codex: Any, checkpoints: int
) -> None:
    # The cancellation lands anywhere around `thread/goal/set`: before it is sent, while its
    # answer is on the way, or once the runtime's first turn has started.
    with anyio.fail_after(60):
        async with scripted_codex(lambda request: stall(message("partial"))) as s:
            thread = await s.codex.thread_start()
            async with anyio.create_task_group() as tg:

                async def cancel_soon() -> None:
                    for _ in range(checkpoints):
                        await anyio.lowlevel.checkpoint()
                    tg.cancel_scope.cancel()

                tg.start_soon(cancel_soon)
                await thread.run_goal("make it so")
            assert await goal_status(s.codex, thread.id) in (None, "paused")
            assert "inProgress" not in await turn_statuses(thread)
            read = await thread.read()
            assert read.thread.status.type != "active"


@pytest.mark.anyio
@pytest.mark.parametrize("checkpoints", [0, 2, 5, 10, 20, 40, 80, 160])
async def test_a_scope_cancelled_between_continuation_turns_leaves_no_turn_running(
    scripted_codex: Any, checkpoints: int
) -> None:
    # The model answers at once, so the runtime goes from turn to turn: the cancellation
    # lands in a turn, at its end, or as the runtime starts the next one.
    with anyio.fail_after(60):
        async with scripted_codex(lambda request: message("step")) as s:
            thread = await s.codex.thread_start()
            async with anyio.create_task_group() as tg:

                async def cancel_soon() -> None:
                    await s.model.wait_for_requests(1)
                    for _ in range(checkpoints):
                        await anyio.lowlevel.checkpoint()
                    tg.cancel_scope.cancel()

                tg.start_soon(cancel_soon)
                await thread.run_goal("make it so")
            asked = len(s.model.requests)
            assert await goal_status(s.codex, thread.id) == "paused"
            assert "inProgress" not in await turn_statuses(thread)
            assert (await thread.read()).thread.status.type != "active"
            assert len(s.model.requests) == asked


@pytest.mark.anyio
async def test_a_goal_on_a_pooled_thread_holds_a_turn_slot_until_its_scope_ends(
    tmp_path: Path,
) -> None:
    from codex_anyio.testing import open_scripted_pool

    def running(pool: Any) -> int:
        return sum(member.running_turns for member in pool.statistics().members)

    def script(request: RecordedRequest) -> Reply:
        return message("plain") if request.thread_id in plain else stall(message("partial"))

    plain: set[str] = set()
    goal_options = {"ephemeral": False, "config": {"features": {"goals": True}}}
    with anyio.fail_after(60):
        async with open_scripted_pool(script, servers=1, max_turns=1, directory=tmp_path) as s:
            thread = await s.pool.thread_start(**goal_options)
            other = await s.pool.thread_start()
            plain.add(other.id)
            order: list[str] = []
            async with anyio.create_task_group() as tg:
                async with thread.goal("make it so") as goal:
                    async for event in goal:
                        if event.method == "turn/started":
                            break
                    assert running(s.pool) == 1

                    async def ordinary_turn() -> None:
                        await other.run("hi")  # waits for the goal's slot
                        order.append("turn")

                    tg.start_soon(ordinary_turn)
                    await anyio.wait_all_tasks_blocked()
                    order.append("goal left")
            assert order == ["goal left", "turn"]
            assert running(s.pool) == 0
            await s.pool.finish_thread(thread)
            await s.pool.finish_thread(other)

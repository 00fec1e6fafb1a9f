"""Goal tasks in a batch (a task's ``goal``): the runtime runs the goal's continuation turns,
the scripted model meets it with the runtime's ``update_goal`` tool; ordinary tasks beside
them keep their lean threads. Against the real runtime, the Python API and the CLI."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio import CodexConfig, result_only_opt_outs
from codex_anyio.batch import BatchResult, BatchTask, run_batch
from codex_anyio.testing import (
    RecordedRequest,
    Reply,
    ScriptedModel,
    function_call,
    message,
    model_usage,
    open_scripted_pool,
    reply,
    scripted_env,
    stall,
    usage_limit_reached,
    write_codex_home,
)

from .test_batch import _rows, _run_cli, _scripted_env, batch_cli, prompt_of

pytestmark = pytest.mark.anyio

COMPLETE = function_call("update_goal", {"status": "complete"})
PLAIN = "an ordinary task"


def answered_tool(request: RecordedRequest) -> bool:
    items = request.body.get("input") or []
    return bool(items) and items[-1].get("type") == "function_call_output"


def goals_met_on_turn(
    turn: int, *, stall_turn: int | None = None
) -> Callable[[RecordedRequest], Reply]:
    """A script: the ordinary task's turn answers at once; on each goal thread, turns before
    ``turn`` answer with a message (10n input and n output tokens), turn ``turn`` marks the
    goal complete, then answers "done"; ``stall_turn`` hangs instead."""
    counts: dict[str | None, int] = {}

    def script(request: RecordedRequest) -> Reply:
        if prompt_of(request) == PLAIN:
            return message("plain answer")
        if answered_tool(request):
            return message("done", usage=model_usage(7, 3))
        count = counts[request.thread_id] = counts.get(request.thread_id, 0) + 1
        if count == stall_turn:
            return stall(message("partial"))
        if count == turn:
            return reply(message("nearly"), COMPLETE, usage=model_usage(20, 4))
        return message(f"step {count}", usage=model_usage(10 * count, count))

    return script


async def _run(
    tasks: list[BatchTask], model: ScriptedModel, tmp_path: Path, **options: Any
) -> dict[str, BatchResult]:
    """``run_batch`` on a pool of its own (the batch's own opt-outs and thread presets)."""
    home = write_codex_home(tmp_path / "home", base_url=model.base_url)
    config = CodexConfig(env=scripted_env(home), cwd=tmp_path)
    async with run_batch(tasks, servers=1, codex_config=config, **options) as results:
        return {r.id: r async for r in results}


async def test_a_goal_task_runs_its_continuation_turns_to_the_goal_beside_an_ordinary_task(
    tmp_path: Path,
) -> None:
    tasks = [
        BatchTask(id="goal", prompt="make it so", goal={"token_budget": 100_000}),
        BatchTask(id="plain", prompt=PLAIN),
    ]
    with anyio.fail_after(90):
        async with ScriptedModel(goals_met_on_turn(3)) as model:
            got = await _run(tasks, model, tmp_path)
    goal, plain = got["goal"], got["plain"]
    assert (goal.status, goal.turns, goal.final_response) == ("completed", 3, "done")
    assert goal.error is None
    # What the model reported: 10+1, 20+2, then 20+4 and 7+3 in the third turn.
    assert goal.usage is not None
    assert goal.usage["total"]["inputTokens"] == 57
    assert goal.usage["total"]["outputTokens"] == 10
    assert goal.total_tokens == 67
    assert goal.usage["last"]["inputTokens"] == 7  # the last model response's
    assert goal.turn_id
    assert goal.thread_id
    assert goal.to_json()["turns"] == 3
    assert BatchResult.from_json(goal.to_json()) == goal
    assert (plain.status, plain.final_response, plain.turns) == ("completed", "plain answer", None)
    assert "turns" not in plain.to_json()


async def test_a_goal_task_whose_budget_is_spent_is_interrupted_not_completed(
    tmp_path: Path,
) -> None:
    tasks = [BatchTask(id="goal", prompt="make it so", goal={"token_budget": 40})]
    with anyio.fail_after(90):
        async with ScriptedModel(goals_met_on_turn(100)) as model:
            got = await _run(tasks, model, tmp_path, attempts=3)
    goal = got["goal"]
    assert goal.status == "interrupted"
    assert goal.attempt == 1  # not retried: another attempt would spend the budget again
    assert goal.error is not None
    assert goal.error["type"] == "GoalBudgetLimited"
    assert "token budget of 40" in goal.error["message"]
    assert goal.turns is not None
    assert goal.turns >= 1
    assert goal.total_tokens >= 40


async def test_a_goal_tasks_deadline_pauses_the_goal_and_interrupts_its_live_turn(
    tmp_path: Path,
) -> None:
    tasks = [
        BatchTask(id="goal", prompt="make it so", goal=True, timeout=5),
        BatchTask(id="plain", prompt=PLAIN),
    ]
    with anyio.fail_after(90):
        async with ScriptedModel(goals_met_on_turn(3, stall_turn=2)) as model:
            got = await _run(tasks, model, tmp_path)
            goal_calls = [e for e in model.exchanges if prompt_of(e.request) != PLAIN]
            # The runtime dropped the stalled model call: the live turn was interrupted.
            await goal_calls[-1].abandoned.wait()
            assert len(goal_calls) == 2  # and no continuation followed the pause
    goal = got["goal"]
    assert goal.status == "timeout"
    assert goal.error is not None
    assert goal.error["type"] == "Timeout"
    assert goal.turns == 2  # the first, completed, and the interrupted one
    assert goal.usage is not None
    assert goal.usage["total"]["inputTokens"] == 10
    assert got["plain"].status == "completed"


async def test_a_goal_task_that_cannot_run_gets_one_error_row_that_is_not_retried(
    tmp_path: Path,
) -> None:
    tasks = [
        BatchTask(id="objective twice", prompt="p", goal={"objective": "other"}),
        BatchTask(id="bad budget", prompt="p", goal={"token_budget": 0}),
        BatchTask(id="items", prompt=[{"type": "text", "text": "p"}], goal=True),
        BatchTask(id="no goal reads", prompt="make it so", goal=True),
        BatchTask(id="plain", prompt=PLAIN),
    ]
    with anyio.fail_after(90):
        # A pool of the caller's that opts out of what a goal reads: it cannot follow one.
        opt_outs = result_only_opt_outs()
        async with open_scripted_pool(
            goals_met_on_turn(1), servers=1, opt_out_notification_methods=opt_outs
        ) as s:
            async with run_batch(tasks, pool=s.pool, attempts=3) as results:
                got = {r.id: r async for r in results}
            requests = len(s.model.requests)
    assert {i: (r.status, r.attempt, r.retryable) for i, r in got.items()} == {
        "objective twice": ("error", 1, False),
        "bad budget": ("error", 1, False),
        "items": ("error", 1, False),
        "no goal reads": ("error", 1, False),
        "plain": ("completed", 1, True),
    }
    messages = {i: (r.error or {}).get("message", "") for i, r in got.items()}
    assert "objective is the task's 'prompt'" in messages["objective twice"]
    assert "'goal.token_budget' must be a whole number >= 1" in messages["bad budget"]
    assert "a non-empty string" in messages["items"]
    assert "turn/started" in messages["no goal reads"]
    assert requests == 1  # only the ordinary task reached the model


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_the_cli_runs_a_goal_line_and_writes_its_turns_and_summed_usage(
    tmp_path: Path, anyio_backend: str
) -> None:
    tasks, output = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    lines = [
        {"id": "goal", "prompt": "make it so", "goal": {"token_budget": 100000}},
        {"id": "plain", "prompt": PLAIN},
        {"id": "goal-too", "prompt": "and this", "goal": True},
    ]
    tasks.write_text("".join(json.dumps(line) + "\n" for line in lines))
    with anyio.fail_after(120):
        async with ScriptedModel(goals_met_on_turn(2)) as model:
            env = await _scripted_env(tmp_path, model)
            code, said, _ = await _run_cli(tasks, output, env)
    assert code == 0, "\n".join(said)
    rows = {row["id"]: row for row in _rows(output)}
    assert {i: (row["status"], row.get("turns")) for i, row in rows.items()} == {
        "goal": ("completed", 2),
        "plain": ("completed", None),
        "goal-too": ("completed", 2),
    }
    # 10+1 in the first turn, 20+4 and 7+3 in the second.
    assert rows["goal"]["usage"]["total"]["totalTokens"] == 45
    assert rows["goal"]["final_response"] == "done"


def test_the_cli_refuses_a_goal_line_that_is_not_valid_in_one_line_naming_it(
    tmp_path: Path,
) -> None:
    tasks, output = tmp_path / "tasks.jsonl", tmp_path / "results.jsonl"
    lines = [{"id": "ok", "prompt": "p"}, {"id": "g", "prompt": "p", "goal": {"budget": 5}}]
    tasks.write_text("".join(json.dumps(line) + "\n" for line in lines))
    done = batch_cli(str(tasks), "-o", str(output))
    assert done.returncode == 2, done.stderr
    assert done.stderr.strip() == (
        f"codex-anyio batch: {tasks}:2: task 'g': 'goal' has unknown field(s) ['budget'] "
        "(it takes ['token_budget'])"
    )
    assert not output.exists()


def test_a_batch_pool_keeps_what_a_goal_reads_only_when_the_batch_may_hold_a_goal_task() -> None:
    from codex_anyio.batch._attempt import pool_defaults
    from codex_anyio.batch._goal_task import may_hold_goals

    def opt_outs(tasks: Any) -> set[str]:
        return set(pool_defaults(goals=may_hold_goals(tasks))["opt_out_notification_methods"])

    plain = [BatchTask(id="a", prompt="p"), BatchTask(id="b", prompt="p", goal=False)]
    reads = {"turn/started", "thread/goal/updated", "thread/goal/cleared"}
    # Ordinary tasks in a list (a tasks file): every notification a result does not need.
    assert opt_outs(plain) == set(result_only_opt_outs())
    assert reads <= opt_outs(tuple(plain))
    # A goal task among them, or a source that cannot be looked into: what a goal reads kept.
    assert (
        opt_outs([*plain, BatchTask(id="g", prompt="p", goal=True)])
        == set(result_only_opt_outs()) - reads
    )
    assert not reads & opt_outs(iter(plain))


async def test_a_goal_task_whose_turn_hits_the_usage_limit_starts_again_after_the_reset(
    tmp_path: Path,
) -> None:
    resets = datetime.fromtimestamp(int(time.time()) + 2, timezone.utc)
    met_on_second = goals_met_on_turn(2)
    refused: list[str | None] = []

    def script(request: RecordedRequest) -> Reply:
        if not refused and not answered_tool(request):
            refused.append(request.thread_id)  # the goal's first turn, on its first thread
            return usage_limit_reached(resets)
        return met_on_second(request)

    tasks = [BatchTask(id="goal", prompt="make it so", goal={"token_budget": 100_000})]
    with anyio.fail_after(90):
        async with ScriptedModel(script) as model:
            got = await _run(tasks, model, tmp_path, attempts=1)
            after = [r for r in model.requests if r.thread_id != refused[0]]
    goal = got["goal"]
    assert (goal.status, goal.attempt, goal.turns) == ("completed", 1, 2)
    assert goal.thread_id != refused[0]  # its goal from the start, on a new thread
    assert after  # and the new thread's requests came once the account resumed

"""``CodexConfig.opt_out_notification_methods``: the runtime stops sending what is opted out,
the client keeps what it reads itself, and a pooled turn's result does not change."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio import TurnResult, result_only_opt_outs
from codex_anyio._protocol._generated.converter import converter
from codex_anyio._protocol._generated.registry import NOTIFICATIONS
from codex_anyio.testing import (
    exec_command,
    message,
    model_usage,
    open_scripted_codex,
    open_scripted_pool,
)

pytestmark = pytest.mark.anyio

VOLATILE = frozenset(
    {"id", "threadId", "turnId", "startedAt", "completedAt", "durationMs", "processId"}
)
"""Fields that differ between any two runs of the same turn (ids, clocks)."""


def steady(value: Any) -> Any:
    """``value`` as wire JSON without the fields that differ between runs."""
    if isinstance(value, dict):
        return {k: steady(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [steady(v) for v in value]
    return value


def comparable(result: TurnResult) -> dict[str, Any]:
    return {
        "status": result.status,
        "error": result.error,
        "final_response": result.final_response,
        "items": steady(converter.unstructure(result.items)),
        "usage": steady(converter.unstructure(result.usage.reported)),
        "errors": result.errors,
        "usage_limit": result.usage_limit,
    }


def script() -> list[Any]:
    return [
        exec_command("echo hello", usage=model_usage(11, 3)),
        message("It said hello.", usage=model_usage(17, 5)),
    ]


async def test_opted_out_notifications_never_reach_the_client() -> None:
    opted = ("item/agentMessage/delta", "turn/started", "thread/status/changed", "item/started")
    with anyio.fail_after(60):
        async with open_scripted_codex([message("hi")], opt_out_notification_methods=opted) as s:
            tap = s.codex.notifications(everything=True)
            thread = await s.codex.thread_start()
            result = await thread.run("hello")
            seen = []
            while True:
                try:
                    seen.append(tap.receive_nowait().method)
                except anyio.WouldBlock:
                    break
    assert result.final_response == "hi"
    assert "turn/completed" in seen
    assert "item/completed" in seen
    assert not set(opted) & set(seen)


async def test_what_the_client_reads_itself_is_never_opted_out() -> None:
    """Opting out of every method the schema has: without the client keeping its own, the turn
    would never be seen to end and its result would be empty."""
    with anyio.fail_after(30):
        async with open_scripted_codex(
            script(), opt_out_notification_methods=list(NOTIFICATIONS)
        ) as s:
            thread = await s.codex.thread_start()
            result = await thread.run("say hello")
    assert result.status == "completed"
    assert result.final_response == "It said hello."
    assert [item.type for item in result.items] == [
        "userMessage",
        "commandExecution",
        "agentMessage",
    ]
    assert (result.usage.input_tokens, result.usage.output_tokens) == (28, 8)


async def test_a_pooled_turns_result_is_identical_with_and_without_the_result_only_opt_outs(
    tmp_path: Path,
) -> None:
    results, routed = [], []
    for opt_outs in ((), result_only_opt_outs()):
        with anyio.fail_after(60):
            async with open_scripted_pool(
                script(), servers=1, directory=tmp_path, opt_out_notification_methods=opt_outs
            ) as s:
                results.append(await s.pool.run("say hello"))
                member = s.pool._members[0].codex
                assert member is not None
                routed.append(member.client.statistics().router.routed)
    plain, lean = results
    assert plain.final_response == "It said hello."
    assert comparable(lean) == comparable(plain)
    assert routed[1] < routed[0]  # the opt-outs were in effect


def test_the_result_only_opt_outs_keep_what_a_result_and_the_client_read() -> None:
    kept = set(NOTIFICATIONS) - set(result_only_opt_outs())
    assert kept == {
        "turn/completed",
        "item/completed",
        "thread/tokenUsage/updated",
        "error",
        "serverRequest/resolved",
        "account/rateLimits/updated",
        "account/login/completed",
    }

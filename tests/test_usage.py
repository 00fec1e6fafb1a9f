"""Token usage and usage limits against the real runtime and the scripted model: per-turn
usage that adds up to the thread's and the client's totals (a turn with a tool call, an
interrupted one, one interrupted before any model response), the ``UsageLimitError`` of a 429
``usage_limit_reached`` reply with its reset time, the latest rate-limit snapshot, and
``retry_on_overload`` leaving usage limits alone."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio import (
    AsyncCodex,
    Codex,
    TokenUsage,
    TurnFailedError,
    UsageLimitError,
    is_retryable_error,
    retry_on_overload,
)
from codex_anyio._rpc._usage import TurnTally, UsageLedger
from codex_anyio.testing import (
    Reply,
    exec_command,
    message,
    model_usage,
    open_scripted_pool,
    reply,
    scripted_runtime,
    stall,
    usage_limit_reached,
)

from .conftest import fake_config

pytestmark = pytest.mark.anyio


def test_token_usage_adds_up_from_a_zero_and_compares_by_its_figures() -> None:
    a = TokenUsage(input_tokens=10, cached_input_tokens=4, output_tokens=5, total_tokens=15)
    b = TokenUsage(input_tokens=1, output_tokens=2, reasoning_output_tokens=1, total_tokens=3)
    assert a + b == TokenUsage(11, 4, 7, 1, 18)
    assert sum([a, b], TokenUsage.ZERO) == sum([a, b]) == a + b
    assert TokenUsage() == TokenUsage.ZERO
    assert (a + b) - a == b
    assert a - (a + b) == TokenUsage.ZERO  # floored: figures only grow
    assert TokenUsage.from_breakdown({"inputTokens": 3, "totalTokens": 3}) == TokenUsage(
        input_tokens=3, total_tokens=3
    )
    assert TokenUsage.from_breakdown("drift") == TokenUsage.ZERO


def _report(total: int, last: int) -> dict[str, Any]:
    """A wire ``tokenUsage`` whose figures are all input tokens."""
    return {
        "total": {"inputTokens": total, "totalTokens": total},
        "last": {"inputTokens": last, "totalTokens": last},
    }


def test_a_repeated_report_counts_nothing_and_an_unknown_thread_counts_from_its_first() -> None:
    ledger = UsageLedger()
    ledger.started("th")
    first = TurnTally(ledger, "th", "t1")
    first.update(_report(110, 110))
    first.update(_report(330, 220))
    assert first.usage.total_tokens == 330
    # What the runtime sends when it interrupts a turn before any model response completed.
    repeat = TurnTally(ledger, "th", "t2")
    repeat.update(_report(330, 220))
    assert repeat.usage == TokenUsage.ZERO
    # A second handle of the same turn (the runtime joined an input into it) counts once.
    joined = TurnTally(ledger, "th", "t1")
    joined.update(_report(330, 220))
    assert ledger.thread_usage("th").total_tokens == ledger.total.total_tokens == 330
    # A resumed thread: its history's total was never seen here.
    resumed = TurnTally(ledger, "old", "t3")
    resumed.update(_report(5000, 50))
    resumed.update(_report(5070, 70))
    assert resumed.usage.total_tokens == 120
    assert ledger.total.total_tokens == 450


async def test_turn_usage_adds_up_to_thread_and_client_totals_including_interrupted_turns(
    scripted_codex: Any,
) -> None:
    script = [
        # turn 1: a tool call, then the answer: two model requests, two usage reports
        exec_command("true", usage=model_usage(100, 10, cached_input_tokens=40)),
        message("done", usage=model_usage(200, 20, reasoning_output_tokens=7)),
        # turn 2: interrupted before any model response completed
        stall(),
        # turn 3: a tool call whose usage is reported, then interrupted while streaming
        exec_command("true", usage=model_usage(30, 3)),
        stall(message("partial answer")),
        # turn 4
        message("last", usage=model_usage(7, 3)),
    ]
    with anyio.fail_after(60):
        async with scripted_codex(script) as s:
            codex = s.codex
            thread = await codex.thread_start()

            first = await thread.run("first")
            assert first.usage == TokenUsage(300, 40, 30, 7, 330)

            async with thread.turn("second") as handle:
                await s.model.wait_for_requests(3)
                second = await handle.cancel()
            assert second.status == "interrupted"
            # The runtime may repeat the thread's figures when it interrupts a turn (it did
            # here on 0.163.0): nothing was spent, and nothing is counted.
            assert second.usage == TokenUsage.ZERO

            async with thread.turn("third") as handle:
                await s.model.wait_for_requests(5)  # the tool's model response is reported
                third = await handle.cancel()
            assert third.status == "interrupted"
            assert third.usage == TokenUsage(30, 0, 3, 0, 33)

            fourth = await thread.run("fourth")
            assert fourth.usage == TokenUsage(7, 0, 3, 0, 10)

            turns = [first, second, third, fourth]
            assert sum(turn.usage for turn in turns) == TokenUsage(337, 40, 36, 7, 373)
            assert thread.usage() == sum(turn.usage for turn in turns)
            assert codex.thread(thread.id).usage() == thread.usage()
            assert codex.usage() == thread.usage()
            # The official shape still reads: the runtime's own running total of the thread.
            assert fourth.usage.total is not None
            assert fourth.usage.total.total_tokens == thread.usage().total_tokens
            assert fourth.usage.last is not None
            assert fourth.usage.last.total_tokens == 10


async def test_the_client_total_sums_its_threads_and_a_turn_without_reports_is_zero(
    scripted_codex: Any,
) -> None:
    script = [message("a", usage=model_usage(5, 1)), message("b", usage=model_usage(8, 2))]
    with anyio.fail_after(60):
        async with scripted_codex(script) as s:
            one = await s.codex.thread_start()
            two = await s.codex.thread_start()
            await one.run("a")
            await two.run("b")
            assert one.usage() == TokenUsage(5, 0, 1, 0, 6)
            assert two.usage() == TokenUsage(8, 0, 2, 0, 10)
            assert s.codex.usage() == one.usage() + two.usage()
            assert (await s.codex.thread_start()).usage() == TokenUsage.ZERO


async def test_a_429_usage_limit_reply_raises_usage_limit_error_with_the_reset_time(
    scripted_codex: Any,
) -> None:
    resets = (datetime.now(timezone.utc) + timedelta(hours=3)).replace(microsecond=0)
    with anyio.fail_after(60):
        async with scripted_codex([usage_limit_reached(resets)]) as s:
            thread = await s.codex.thread_start()
            with pytest.raises(UsageLimitError) as caught:
                await thread.run("hello")
            error = caught.value
            assert isinstance(error, TurnFailedError)
            assert isinstance(error, RuntimeError)
            assert error.resets_at == resets
            assert error.resets_at is not None
            assert error.resets_at.tzinfo is not None
            assert error.error.codex_error_info == "usageLimitExceeded"
            assert "usage limit" in str(error)
            assert str(error.turn.status) == "failed"
            assert error.rate_limits is not None
            assert error.rate_limits.primary.used_percent == 100
            assert not is_retryable_error(error)
            # The runtime does not retry a usage limit: one model request.
            assert len(s.model.requests) == 1


async def test_retry_on_overload_does_not_retry_a_usage_limit_on_the_real_runtime(
    scripted_codex: Any,
) -> None:
    resets = datetime.now(timezone.utc) + timedelta(minutes=30)
    with anyio.fail_after(60):
        async with scripted_codex([usage_limit_reached(resets)] * 3) as s:
            thread = await s.codex.thread_start()
            with pytest.raises(UsageLimitError):
                await retry_on_overload(lambda: thread.run("hello"), initial_delay_s=0.0)
            assert len(s.model.requests) == 1


def test_retry_on_overload_never_retries_a_usage_limit_error() -> None:
    calls = 0

    def op() -> None:
        nonlocal calls
        calls += 1
        raise UsageLimitError(None, None)

    with pytest.raises(UsageLimitError):
        retry_on_overload(op, max_attempts=5, initial_delay_s=0.0)
    assert calls == 1


async def test_retry_on_overload_never_retries_a_usage_limit_error_of_an_async_call() -> None:
    calls = 0

    async def op() -> None:
        nonlocal calls
        calls += 1
        raise UsageLimitError(None, None)

    with anyio.fail_after(5), pytest.raises(UsageLimitError):
        await retry_on_overload(op, max_attempts=5, initial_delay_s=0.0)
    assert calls == 1


async def test_the_latest_rate_limit_snapshot_is_kept_with_nobody_listening(
    scripted_codex: Any,
) -> None:
    resets = int((datetime.now(timezone.utc) + timedelta(hours=5)).timestamp())
    headers = {
        "x-codex-primary-used-percent": "42",
        "x-codex-primary-window-minutes": "300",
        "x-codex-primary-reset-at": str(resets),
    }
    # The second answer has no rate-limit headers: the runtime sends a sparse update.
    script = [reply(message("one"), headers=headers), message("two")]
    with anyio.fail_after(60):
        async with scripted_codex(script) as s:
            assert s.codex.rate_limits is None or s.codex.rate_limits.primary is None
            thread = await s.codex.thread_start()
            await thread.run("one")
            snapshot = s.codex.rate_limits
            assert snapshot is not None
            assert snapshot.primary is not None
            assert (snapshot.primary.used_percent, snapshot.primary.resets_at) == (42, resets)
            assert snapshot.limit_id == "codex"
            await thread.run("two")
            # A rolling update without the window keeps the value seen before.
            snapshot = s.codex.rate_limits
            assert snapshot is not None
            assert snapshot.primary is not None
            assert snapshot.primary.used_percent == 42
            assert s.codex.client.rate_limits.updates >= 2


@pytest.mark.parametrize("backend", ["asyncio", "trio"])
def test_the_sync_client_reports_usage_limits_and_rate_limits(backend: str, tmp_path: Path) -> None:
    resets = (datetime.now(timezone.utc) + timedelta(hours=1)).replace(microsecond=0)
    script = [message("hi", usage=model_usage(12, 3)), usage_limit_reached(resets)]
    with scripted_runtime(script, backend=backend, directory=tmp_path) as rt:
        with Codex(rt.config, backend=backend) as codex:
            thread = codex.thread_start()
            handle = thread.turn("hi")
            result = handle.run()
            assert result.usage == handle.usage == TokenUsage(12, 0, 3, 0, 15)
            with pytest.raises(UsageLimitError) as caught:
                thread.run("again")
            assert caught.value.resets_at == resets
            assert thread.usage() == codex.usage() == TokenUsage(12, 0, 3, 0, 15)
            assert codex.rate_limits is not None


_LIMITED = {"message": "You've hit your usage limit.", "codexErrorInfo": "usageLimitExceeded"}

_BEFORE_ANY_THREAD = """
request = expect("initialize")
notify("account/rateLimits/updated", {"rateLimits": {"limitId": "codex", "planType": "plus",
    "primary": {"usedPercent": 100, "windowDurationMins": 300, "resetsAt": RESET}}})
reply(request, INITIALIZE_RESULT)
expect("initialized")
notify("account/rateLimits/updated", {"rateLimits": {"limitId": "codex", "primary": None}})
r = expect("turn/start")
reply(r, {"turn": turn("t1")})
notify("error", {"threadId": "th1", "turnId": "t1", "willRetry": False, "error": LIMITED})
completed("th1", "t1", "interrupted")
hold()
"""


async def test_rate_limits_sent_before_any_thread_are_kept_and_a_result_names_its_limit() -> None:
    resets = datetime(2030, 1, 2, 3, 4, 5, tzinfo=timezone.utc)
    script = f"RESET = {int(resets.timestamp())}\nLIMITED = {_LIMITED!r}\n" + _BEFORE_ANY_THREAD
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            snapshot = codex.rate_limits  # stored by the reader before the handshake answer
            assert snapshot is not None
            assert snapshot.primary is not None
            assert (snapshot.primary.used_percent, snapshot.primary.resets_at) == (
                100,
                int(resets.timestamp()),
            )
            result = await codex.thread("th1").run("hello")
            assert result.status == "interrupted"
            assert isinstance(result.usage_limit, UsageLimitError)
            assert result.usage_limit.resets_at == resets
            # The sparse update with no window kept the earlier one.
            assert codex.rate_limits is not None
            assert codex.rate_limits.plan_type == "plus"
            assert result.usage == TokenUsage.ZERO


def _costs_25(request: Any) -> Reply:
    return message("ok", usage=model_usage(20, 5))


async def test_a_pool_adds_up_the_usage_of_all_its_members(tmp_path: Path) -> None:
    with anyio.fail_after(60):
        async with open_scripted_pool(_costs_25, servers=2, directory=tmp_path) as s:
            one = await s.pool.thread_start()
            two = await s.pool.thread_start()
            assert one.member != two.member
            first = await one.run("a")
            second = await two.run("b")
            assert first.usage == second.usage == TokenUsage(20, 0, 5, 0, 25)
            assert one.usage() == first.usage
            assert s.pool.usage() == first.usage + second.usage

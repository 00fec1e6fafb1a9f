"""A pool's accounts against the real runtime: a usage limit pauses its account until the
reset and the work moves to an account with headroom (none fails, none runs twice, the
exhausted account gets no model request after its limit), a rate-limit window above the
threshold pauses before the limit, ``max_wait`` bounds the wait, and a resumed thread lands
on the home that holds it, history and all."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import anyio
import attrs
import pytest

from codex_anyio import CodexConfig, CodexPool, UsageLimitError, UsageLimitWaitError
from codex_anyio._rpc._usage import RateLimits
from codex_anyio.pool._accounts import (
    STALE_RESET_PAUSE,
    UNKNOWN_RESET_PAUSE,
    account_homes,
    limit_pause,
    window_pause,
)
from codex_anyio.testing import (
    RecordedRequest,
    Reply,
    ScriptedModel,
    message,
    scripted_env,
    usage_limit_reached,
    write_codex_home,
)

pytestmark = pytest.mark.anyio

Script = Callable[[RecordedRequest], Reply]


@attrs.define
class Accounts:
    pool: CodexPool
    models: list[ScriptedModel]
    homes: list[Path]


@asynccontextmanager
async def accounts_pool(
    root: Path, scripts: list[Script], **pool_options: Any
) -> AsyncIterator[Accounts]:
    """A pool over one ``CODEX_HOME`` per script, each home's model provider a scripted model
    of its own: the model a request reaches says which account made it."""
    workspace = root / "workspace"
    workspace.mkdir(parents=True, exist_ok=True)
    shell_home = root / "home"
    shell_home.mkdir(exist_ok=True)
    async with AsyncExitStack() as stack:
        models = [await stack.enter_async_context(ScriptedModel(script)) for script in scripts]
        homes = [
            write_codex_home(root / f"account-{i}", base_url=model.base_url)
            for i, model in enumerate(models)
        ]
        config = CodexConfig(
            cwd=workspace, env=scripted_env(homes[0], home=shell_home), trust_store="minimal"
        )
        async with CodexPool(config=config, accounts=homes, **pool_options) as pool:
            yield Accounts(pool, models, homes)


def limited_after(answers: int, resets: datetime, text: str = "from a") -> Script:
    """A model that answers ``answers`` requests, then says the usage limit is reached."""
    answered = 0

    def script(request: RecordedRequest) -> Reply:
        nonlocal answered
        answered += 1
        return message(text) if answered <= answers else usage_limit_reached(resets)

    return script


def always(text: str) -> Script:
    return lambda request: message(text)


def in_two_hours() -> datetime:
    return (datetime.now(timezone.utc) + timedelta(hours=2)).replace(microsecond=0)


async def test_a_usage_limit_moves_every_task_to_the_other_account_and_none_fails(
    tmp_path: Path,
) -> None:
    resets = in_two_hours()
    scripts = [limited_after(2, resets), always("from b")]
    results: list[Any] = []
    with anyio.fail_after(90):
        async with accounts_pool(tmp_path, scripts, servers=2, turns_per_server=1) as s:

            async def one(i: int) -> None:
                results.append(await s.pool.run(f"task {i}"))

            async with anyio.create_task_group() as tg:
                for i in range(8):
                    tg.start_soon(one, i)
            stats = s.pool.statistics()
            served = [len(model.requests) for model in s.models]
    assert [r.status for r in results] == ["completed"] * 8  # none failed
    assert len({r.thread_id for r in results}) == 8  # each ran once, on a thread of its own
    answers = sorted(r.final_response for r in results)
    assert answers == ["from a"] * 2 + ["from b"] * 6
    # Account 0 answered two, refused the third, and got no request after that.
    assert served == [3, 6]
    first, second = stats.accounts
    assert (first.paused_until, first.usage_limits) == (resets, 1)
    assert first.reason == "usage limit reached"
    assert (second.paused_until, second.usage_limits) == (None, 0)
    assert [m.account for m in stats.members] == [0, 1]
    assert stats.paused.startswith("paused until ")
    assert "(account 0: usage limit" in stats.paused


async def test_a_window_above_the_threshold_pauses_its_account_before_the_limit(
    tmp_path: Path,
) -> None:
    resets = int(time.time()) + 3600
    headers = (
        ("x-codex-primary-used-percent", "96"),
        ("x-codex-primary-window-minutes", "300"),
        ("x-codex-primary-reset-at", str(resets)),
    )
    nearly_spent = attrs.evolve(message("from a"), headers=headers)
    with anyio.fail_after(90):
        async with accounts_pool(
            tmp_path, [lambda r: nearly_spent, always("from b")], servers=2
        ) as s:
            first = await s.pool.run("one")
            later = [await s.pool.run(f"task {i}") for i in range(3)]
            account = s.pool.statistics().accounts[0]
            served = [len(model.requests) for model in s.models]
    assert first.final_response == "from a"
    assert [r.final_response for r in later] == ["from b"] * 3
    assert served == [1, 3]
    assert account.paused_until == datetime.fromtimestamp(resets, timezone.utc)
    assert account.reason == "96 % of its 300-minute window used"
    assert account.usage_limits == 0  # paused before any turn failed


async def test_an_account_resumes_when_its_reset_time_has_passed(tmp_path: Path) -> None:
    resets = datetime.fromtimestamp(int(time.time()) + 2, timezone.utc)
    answered = 0

    def refused_once(request: RecordedRequest) -> Reply:
        nonlocal answered
        answered += 1
        return usage_limit_reached(resets) if answered == 1 else message("after reset")

    with anyio.fail_after(60):
        async with accounts_pool(tmp_path, [refused_once], servers=1) as s:
            result = await s.pool.run("wait for it")
            done_at = time.time()
            stats = s.pool.statistics()
    assert result.final_response == "after reset"
    assert done_at >= resets.timestamp()  # it waited for the reset, and it is over
    assert stats.accounts[0].paused_until is None
    assert stats.accounts[0].usage_limits == 1


async def test_max_wait_ends_the_wait_with_usage_limit_wait_error_and_later_calls_at_once(
    tmp_path: Path,
) -> None:
    resets = in_two_hours()
    with anyio.fail_after(60):
        async with accounts_pool(
            tmp_path, [limited_after(0, resets)], servers=1, max_wait=0.2
        ) as s:
            with pytest.raises(UsageLimitWaitError) as caught:
                await s.pool.run("one")
            with pytest.raises(UsageLimitWaitError):
                await s.pool.run("two")
            served = len(s.models[0].requests)
    assert served == 1  # the second call sent nothing
    error = caught.value
    assert isinstance(error, UsageLimitError)  # what usage-limit handlers already catch
    assert error.resets_at == resets
    assert "every account of the pool is paused by its usage limit" in str(error)
    assert "waited max_wait=0.2 s" in str(error)


async def test_a_resumed_thread_lands_on_the_home_that_holds_it_and_keeps_its_history(
    tmp_path: Path,
) -> None:
    scripts = [always("from a"), always("from b")]
    stored = {"ephemeral": False}
    with anyio.fail_after(90):
        async with accounts_pool(tmp_path, scripts, servers=2) as s:
            await s.pool.thread_start(**stored)  # member 0 (account 0) takes the first
            thread = await s.pool.thread_start(**stored)
            assert thread.member == 1
            await thread.run("remember the word heron")
            await s.pool.finish_thread(thread, archive=False)
            again = await s.pool.thread_resume(thread.id)
            assert again.member == 1  # the pool remembers where it put it
            await s.pool.finish_thread(again, archive=False)
        # A new pool knows nothing of it: it asks each home's runtime in turn.
        async with accounts_pool(tmp_path, scripts, servers=2) as s:
            resumed = await s.pool.thread_resume(thread.id)
            result = await resumed.run("which word?")
            member = resumed.member
            request = s.models[1].requests[-1]
            await s.pool.finish_thread(resumed, archive=False)
            forked = await s.pool.thread_fork(thread.id)
            fork_member = forked.member
            await s.pool.finish_thread(forked, archive=False)
    assert (member, fork_member) == (1, 1)
    assert result.final_response == "from b"
    assert "remember the word heron" in str(request.body["input"])


def test_a_usage_limit_pauses_until_its_reset_or_for_a_while_if_unknown() -> None:
    now = 1_000_000.0
    ahead = UsageLimitError(None, None, resets_at=datetime.fromtimestamp(now + 60, timezone.utc))
    assert limit_pause(ahead, now) == (now + 60, "usage limit reached")
    unknown = UsageLimitError(None, None)
    assert limit_pause(unknown, now)[0] == now + UNKNOWN_RESET_PAUSE
    passed = UsageLimitError(None, None, resets_at=datetime.fromtimestamp(now - 5, timezone.utc))
    assert limit_pause(passed, now)[0] == now + STALE_RESET_PAUSE


def test_only_windows_at_or_above_the_threshold_with_a_reset_ahead_pause() -> None:
    now = 1_000_000
    limits = RateLimits()
    window = {"usedPercent": 95, "windowDurationMins": 60, "resetsAt": now + 100}
    weekly = {"usedPercent": 40, "windowDurationMins": 10080, "resetsAt": now + 9000}
    limits.update({"rateLimits": {"limitId": "codex", "primary": window, "secondary": weekly}})
    assert window_pause(limits, 95.0, now) == (now + 100, "95 % of its 60-minute window used")
    assert window_pause(limits, 96.0, now) is None
    assert window_pause(limits, 95.0, now + 100) is None  # that window has reset
    no_reset = RateLimits()
    no_reset.update({"rateLimits": {"primary": {"usedPercent": 100}}})
    assert window_pause(no_reset, 95.0, now) is None  # no moment to resume at


def test_accounts_are_a_list_of_distinct_homes_with_a_member_each(tmp_path: Path) -> None:
    assert account_homes(None) == [None]
    with pytest.raises(TypeError, match="a list of CODEX_HOME folders"):
        account_homes(str(tmp_path))
    with pytest.raises(ValueError, match="at least one"):
        CodexPool(accounts=[])
    with pytest.raises(ValueError, match="the same CODEX_HOME twice"):
        CodexPool(accounts=[tmp_path, tmp_path])
    with pytest.raises(ValueError, match="1 servers for 2 accounts"):
        CodexPool(1, accounts=[tmp_path / "a", tmp_path / "b"])
    assert CodexPool(accounts=[tmp_path / str(i) for i in range(40)]).servers == 40
    with pytest.raises(ValueError, match="rate_limit_threshold"):
        CodexPool(rate_limit_threshold=0)
    with pytest.raises(ValueError, match="max_wait"):
        CodexPool(max_wait=-1)

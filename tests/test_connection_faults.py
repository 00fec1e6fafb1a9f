"""The connection core against a scripted fake app-server: exact orderings and faults the
real runtime cannot be made to produce on demand."""

from __future__ import annotations

import logging
import os
import textwrap
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from codex_anyio import (
    AsyncCodex,
    Handlers,
    InvalidParamsError,
    Limits,
    MethodNotFoundError,
    ServerBusyError,
    ServerRequest,
    StartupError,
    SubscriptionOverflowError,
    TransportClosedError,
    is_retryable_error,
    retry_on_overload,
)

from .conftest import fake_config

pytestmark = pytest.mark.anyio


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_non_json_lines_and_non_objects_are_counted_and_the_connection_continues() -> None:
    script = """
    handshake()
    r = expect("test/echo")
    raw(b"this is not json\\n")
    raw(b"[1, 2, 3]\\n")
    raw(b"\\n")
    reply(r, {"ok": True})
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            assert await codex.client.request("test/echo") == {"ok": True}
            assert codex.client.statistics().bad_lines == 2


async def test_the_ignored_line_warning_shows_a_redacted_and_truncated_head_only(
    caplog: pytest.LogCaptureFixture,
) -> None:
    script = """
    handshake()
    r = expect("test/echo")
    raw(b"login failed for alice password=hunter2 token: tok-0123456789\\n")
    raw(b"GITHUB_TOKEN=ghp_" + b"a" * 36 + b" " + b"x" * 5000 + b"\\n")
    raw(b'{"method": 5, "params": {"apiKey": "sk-live-0123456789abcdef"}}\\n')
    reply(r, {"ok": True})
    hold()
    """
    caplog.set_level(logging.WARNING, logger="codex_anyio")
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            assert await codex.client.request("test/echo") == {"ok": True}
            assert codex.client.statistics().bad_lines == 3
    warnings = [r.getMessage() for r in caplog.records if "ignored a line" in r.getMessage()]
    assert len(warnings) == 3
    for secret in ("hunter2", "tok-0123456789", "ghp_aaaa", "sk-live"):
        assert secret not in caplog.text
    assert "password=[REDACTED]" in warnings[0]
    assert all(len(w) < 400 for w in warnings)


async def test_strict_mode_makes_a_bad_line_fatal_with_the_reason() -> None:
    script = """
    handshake()
    expect("test/echo")
    raw(b"garbage\\n")
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script), strict=True) as codex:
            with pytest.raises(TransportClosedError, match=r"protocol error.*garbage"):
                await codex.client.request("test/echo")


async def test_a_16_mib_line_arrives_whole() -> None:
    script = """
    handshake()
    r = expect("test/big")
    reply(r, {"blob": "x" * (16 * 1024 * 1024), "tail": "end"})
    hold()
    """
    with anyio.fail_after(30):
        async with AsyncCodex(fake_config(script)) as codex:
            result = await codex.client.request("test/big")
            assert len(result["blob"]) == 16 * 1024 * 1024
            assert result["tail"] == "end"


async def test_line_separators_inside_strings_and_split_chunks_do_not_split_a_message() -> None:
    script = """
    handshake()
    r = expect("test/text")
    line = json.dumps({"id": r["id"], "result": {"text": "a\\u2028b\\u2029c\\rd"}},
                      ensure_ascii=False).encode() + b"\\n"
    for i in range(0, len(line), 3):
        raw(line[i:i + 3])
        time.sleep(0.001)
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            result = await codex.client.request("test/text")
            assert result == {"text": "a\u2028b\u2029c\rd"}


async def test_a_runtime_that_exits_at_start_raises_startup_error_with_status_and_stderr() -> None:
    script = """
    stderr('Error: approval_policy = "untrusted" is no longer supported; remove this setting\\n')
    sys.exit(3)
    """
    with anyio.fail_after(10):
        with pytest.raises(StartupError) as caught:
            async with AsyncCodex(fake_config(script)):
                pytest.fail("entered a client whose runtime exited")
    assert caught.value.returncode == 3
    assert "no longer supported" in caught.value.stderr_tail
    assert "exit status 3" in str(caught.value)


async def test_a_missing_executable_raises_startup_error_naming_it(tmp_path: Path) -> None:
    from codex_anyio import CodexConfig

    missing = tmp_path / "no-such-codex"
    with anyio.fail_after(10), pytest.raises(StartupError, match="no-such-codex"):
        async with AsyncCodex(CodexConfig(codex_bin=missing)):
            pytest.fail("entered a client with no runtime")


async def test_a_crash_mid_turn_ends_streams_requests_and_subscriptions_with_the_exit_info() -> (
    None
):
    script = """
    handshake()
    r = expect("turn/start")
    reply(r, {"turn": turn("t1")})
    delta("th1", "t1", "Hel")
    expect("test/never-answered")
    stderr("panic: the runtime fell over\\n")
    os._exit(7)
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            client = codex.client
            subscription = client.subscribe(everything=True)
            thread_sub = client.subscribe_thread("th1", include_turns=True)
            _, turn_stream = await client.start_turn("th1", {"threadId": "th1", "input": []})
            async with subscription, thread_sub, turn_stream:
                first = await turn_stream.receive()
                assert first.method == "item/agentMessage/delta"
                assert first.params.delta == "Hel"
                with pytest.raises(TransportClosedError) as caught:
                    await client.request("test/never-answered")
                assert caught.value.returncode == 7
                assert "the runtime fell over" in caught.value.stderr_tail
                with pytest.raises(TransportClosedError):
                    await turn_stream.receive()
                # Subscriptions drain what they had, then end with the same error.
                assert (await thread_sub.receive()).method == "item/agentMessage/delta"
                with pytest.raises(TransportClosedError):
                    await thread_sub.receive()
                assert (await subscription.receive()).method == "item/agentMessage/delta"
                with pytest.raises(TransportClosedError):
                    await subscription.receive()
                with pytest.raises(TransportClosedError):
                    await client.request("test/after-the-end")


async def test_notifications_sent_before_the_turn_start_response_reach_the_turn_stream() -> None:
    script = """
    handshake()
    r = expect("turn/start")
    notify("turn/started", {"threadId": "th1", "turn": turn("t1")})
    delta("th1", "t1", "one")
    delta("th1", "t1", "two")
    reply(r, {"turn": turn("t1")})
    delta("th1", "t1", "three")
    completed("th1", "t1")
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            _, stream = await codex.client.start_turn("th1", {"threadId": "th1", "input": []})
            methods = [note.method async for note in stream]
            deltas = [n for n in methods if n == "item/agentMessage/delta"]
            assert methods[0] == "turn/started"
            assert len(deltas) == 3
            assert methods[-1] == "turn/completed"


async def test_interleaved_turns_on_two_threads_each_see_only_their_own_events() -> None:
    script = """
    handshake()
    a = expect("turn/start")
    reply(a, {"turn": turn("ta")})
    b = expect("turn/start")
    reply(b, {"turn": turn("tb")})
    for i in range(50):
        delta("A", "ta", f"a{i}")
        delta("B", "tb", f"b{i}")
    completed("B", "tb")
    completed("A", "ta")
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            _, stream_a = await codex.client.start_turn("A", {"threadId": "A", "input": []})
            _, stream_b = await codex.client.start_turn("B", {"threadId": "B", "input": []})
            got: dict[str, list[str]] = {}

            async def collect(name: str, stream: object) -> None:
                got[name] = [n.raw.get("delta", "") async for n in stream]  # type: ignore[attr-defined]

            async with anyio.create_task_group() as tg:
                tg.start_soon(collect, "a", stream_a)
                tg.start_soon(collect, "b", stream_b)
            assert got["a"][:-1] == [f"a{i}" for i in range(50)]
            assert got["b"][:-1] == [f"b{i}" for i in range(50)]


async def test_a_turn_that_completes_before_its_start_response_still_ends_its_stream() -> None:
    script = """
    handshake()
    r = expect("turn/start")
    delta("th1", "t1", "quick")
    completed("th1", "t1")
    reply(r, {"turn": turn("t1")})
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            _, stream = await codex.client.start_turn("th1", {"threadId": "th1", "input": []})
            methods = [note.method async for note in stream]
            assert methods == ["item/agentMessage/delta", "turn/completed"]


_ECHO_REPLY = """
handshake()
send({"id": 0, "method": METHOD, "params": PARAMS})
answer = read()
notify("test/answer", {"answer": answer})
hold()
"""


async def _answer_to(method: str, params: dict[str, object], **codex_kwargs: object) -> dict:
    script = f"METHOD = {method!r}\nPARAMS = {params!r}\n" + _ECHO_REPLY
    async with AsyncCodex(fake_config(script), **codex_kwargs) as codex:  # type: ignore[arg-type]
        async with codex.notifications() as notes:
            async for note in notes:
                if note.method == "test/answer":
                    answer: dict = note.raw["answer"]
                    return answer
    raise AssertionError("no answer")


_APPROVAL_PARAMS = {
    "threadId": "th1",
    "turnId": "t1",
    "itemId": "i1",
    "command": "rm -rf /",
    "cwd": "/tmp",
    "reason": "test",
    "startedAtMs": 0,
}


async def test_with_no_handler_an_approval_is_declined() -> None:
    with anyio.fail_after(10):
        answer = await _answer_to("item/commandExecution/requestApproval", _APPROVAL_PARAMS)
    assert answer == {"id": 0, "result": {"decision": "decline"}}


async def test_with_no_handler_other_requests_get_an_error_naming_the_missing_handler() -> None:
    with anyio.fail_after(10):
        answer = await _answer_to("currentTime/read", {"threadId": "th1"})
    assert answer["error"]["code"] == -32601
    assert "currentTime/read" in answer["error"]["message"]
    assert "no handler" in answer["error"]["message"]


async def test_a_handler_that_raises_becomes_an_error_reply_and_the_connection_lives_on() -> None:
    async def broken(params: object) -> object:
        raise ValueError("the approval UI crashed")

    script = """
    handshake()
    send({"id": 0, "method": "item/commandExecution/requestApproval", "params": PARAMS})
    echo = answer = None
    while echo is None or answer is None:
        message = read()
        if message.get("method") == "test/echo":
            echo = message
        elif message.get("id") == 0:
            answer = message
    reply(echo, {"first_answer": answer})
    hold()
    """
    script = f"PARAMS = {_APPROVAL_PARAMS!r}\n" + textwrap.dedent(script)
    with anyio.fail_after(10):
        async with AsyncCodex(
            fake_config(script), handlers=Handlers(command_approval=broken)
        ) as codex:
            result = await codex.client.request("test/echo")
    error = result["first_answer"]["error"]
    assert error["code"] == -32603
    assert "the approval UI crashed" in error["message"]


async def test_a_handler_can_await_a_request_on_the_same_client() -> None:
    script = """
    handshake()
    send({"id": 0, "method": "currentTime/read", "params": {"threadId": "th1"}})
    inner = expect("test/inner")
    reply(inner, {"now": 1234})
    answer = read()
    notify("test/answer", {"answer": answer})
    hold()
    """
    holder: dict[str, AsyncCodex] = {}

    async def now(request: ServerRequest) -> dict[str, int]:
        result = await holder["codex"].client.request("test/inner")
        return {"currentTimeAt": result["now"]}

    with anyio.fail_after(10):
        async with AsyncCodex(
            fake_config(script), handlers=Handlers(by_method={"currentTime/read": now})
        ) as codex:
            holder["codex"] = codex
            async with codex.notifications() as notes:
                async for note in notes:
                    if note.method == "test/answer":
                        assert note.raw["answer"] == {"id": 0, "result": {"currentTimeAt": 1234}}
                        break


async def test_json_rpc_errors_map_to_typed_exceptions_with_code_message_and_data() -> None:
    script = """
    handshake()
    reply_error(expect("a"), -32601, "no such method")
    reply_error(expect("b"), -32602, "bad params", {"field": "x"})
    reply_error(expect("c"), -32001, "busy", {"codex_error_info": "server_overloaded"})
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script), limits=Limits(overload_retries=1)) as codex:
            with pytest.raises(MethodNotFoundError) as a:
                await codex.client.request("a")
            assert (a.value.code, a.value.message) == (-32601, "no such method")
            with pytest.raises(InvalidParamsError) as b:
                await codex.client.request("b")
            assert b.value.data == {"field": "x"}
            with pytest.raises(ServerBusyError) as c:
                await codex.client.request("c")
            assert is_retryable_error(c.value)
            assert not is_retryable_error(b.value)


async def test_retry_on_overload_retries_busy_errors_and_then_succeeds() -> None:
    script = """
    handshake()
    reply_error(expect("work"), -32001, "busy", {"codex_error_info": "server_overloaded"})
    reply(expect("work"), {"done": True})
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script), limits=Limits(overload_retries=1)) as codex:
            attempts = 0

            async def work() -> object:
                nonlocal attempts
                attempts += 1
                return await codex.client.request("work")

            assert await retry_on_overload(work, initial_delay=0.01) == {"done": True}
            assert attempts == 2


async def test_a_cancelled_request_leaves_no_residue_and_its_late_response_is_counted() -> None:
    script = """
    handshake()
    slow = expect("slow")
    fast = expect("fast")
    reply(slow, {"late": True})
    reply(fast, {"fast": True})
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            client = codex.client
            with anyio.CancelScope() as scope:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(client.request, "slow")
                    await anyio.wait_all_tasks_blocked()
                    scope.cancel()
            assert client.statistics().pending_requests == 0
            assert await client.request("fast") == {"fast": True}
            assert client.statistics().unknown_responses == 1


async def test_a_consumer_that_falls_behind_is_cut_off_and_never_blocks_other_responses() -> None:
    script = """
    handshake()
    r = expect("turn/start")
    reply(r, {"turn": turn("t1")})
    for i in range(20):
        delta("th1", "t1", str(i))
    reply(expect("test/echo"), {"still": "alive"})
    r = expect("test/more")
    for i in range(20, 40):
        delta("th1", "t1", str(i))
    reply(r, {"more": True})
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(
            fake_config(script), limits=Limits(turn_buffer=5, overflow_grace=0.2)
        ) as codex:
            _, stream = await codex.client.start_turn("th1", {"threadId": "th1", "input": []})
            # Nobody reads the turn: its events park behind the full buffer, and responses
            # still get through at once.
            assert await codex.client.request("test/echo") == {"still": "alive"}
            # The consumer takes nothing for longer than the grace period; the reader cuts it
            # off as soon as it reads on.
            await anyio.sleep(0.5)
            assert await codex.client.request("test/more") == {"more": True}
            received = []
            with pytest.raises(SubscriptionOverflowError) as caught:
                async for note in stream:
                    received.append(note.raw["delta"])
            assert received == ["0", "1", "2", "3", "4"]
            assert caught.value.limit == 5
            assert codex.client.statistics().router.overflowed == 1


async def test_cancelling_start_up_while_initialize_is_in_flight_leaves_no_process(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "pid"
    script = f"""
    open({str(pid_file)!r}, "w").write(str(os.getpid()))
    expect("initialize")
    hold()
    """
    with anyio.fail_after(20):
        with anyio.move_on_after(1) as scope:
            async with AsyncCodex(fake_config(script)):
                pytest.fail("initialize was never answered")
        assert scope.cancelled_caught
    pid = int(pid_file.read_text())
    assert not _pid_alive(pid)


async def test_a_runtime_that_never_answers_initialize_fails_start_up_naming_the_limit(
    tmp_path: Path,
) -> None:
    pid_file = tmp_path / "pid"
    script = f"""
    open({str(pid_file)!r}, "w").write(str(os.getpid()))
    expect("initialize")
    stderr("stuck loading plugins\\n")
    hold()
    """
    limits = Limits(initialize_timeout=0.3)
    with anyio.fail_after(20):
        with pytest.raises(StartupError, match=r"initialize within 0\.3 s") as caught:
            async with AsyncCodex(fake_config(script), limits=limits):
                pytest.fail("initialize was never answered")
    assert "Limits.initialize_timeout" in str(caught.value)
    assert "stuck loading plugins" in caught.value.stderr_tail
    assert not _pid_alive(int(pid_file.read_text()))


async def test_leaving_the_block_stops_the_process_and_reaps_it(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"""
    open({str(pid_file)!r}, "w").write(str(os.getpid()))
    handshake()
    hold()
    """
    with anyio.fail_after(20):
        async with AsyncCodex(fake_config(script)) as codex:
            assert codex.metadata.user_agent.startswith("fake_app_server")
        pid = int(pid_file.read_text())
        assert not _pid_alive(pid)


async def test_a_runtime_that_ignores_stdin_eof_is_terminated(tmp_path: Path) -> None:
    pid_file = tmp_path / "pid"
    script = f"""
    import signal
    open({str(pid_file)!r}, "w").write(str(os.getpid()))
    handshake()
    while True:
        time.sleep(1)
    """
    with anyio.fail_after(20):
        async with AsyncCodex(fake_config(script)):
            pass
        assert not _pid_alive(int(pid_file.read_text()))


async def test_a_server_request_handler_is_cancelled_when_its_turn_completes() -> None:
    script = f"""
    handshake()
    r = expect("turn/start")
    reply(r, {{"turn": turn("t1")}})
    approval = "item/commandExecution/requestApproval"
    send({{"id": 0, "method": approval, "params": {_APPROVAL_PARAMS!r}}})
    expect("test/handler-started")
    completed("th1", "t1")
    hold()
    """
    started = anyio.Event()
    cancelled = anyio.Event()
    holder: dict[str, AsyncCodex] = {}

    async def never_answers(params: object) -> object:
        started.set()
        try:  # the turn may complete while the notification is still being sent
            await holder["codex"].client.notify("test/handler-started")
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    with anyio.fail_after(10):
        async with AsyncCodex(
            fake_config(script), handlers=Handlers(command_approval=never_answers)
        ) as codex:
            holder["codex"] = codex
            _, stream = await codex.client.start_turn("th1", {"threadId": "th1", "input": []})
            async with stream:
                await started.wait()
                await cancelled.wait()
            assert codex.client.statistics().server_requests_in_flight == 0


async def test_a_typed_auth_refresh_handler_answers_with_its_typed_response() -> None:
    from codex_anyio.types import ChatgptAuthTokensRefreshResponse

    async def refresh(params: object) -> ChatgptAuthTokensRefreshResponse:
        return ChatgptAuthTokensRefreshResponse(access_token="tok", chatgpt_account_id="acct")

    params = {"reason": "unauthorized"}
    with anyio.fail_after(10):
        answer = await _answer_to(
            "account/chatgptAuthTokens/refresh", params, handlers=Handlers(auth_refresh=refresh)
        )
    assert answer == {"id": 0, "result": {"accessToken": "tok", "chatgptAccountId": "acct"}}


async def test_a_slow_but_live_consumer_gets_every_event_through_backpressure() -> None:
    script = """
    handshake()
    r = expect("turn/start")
    reply(r, {"turn": turn("t1")})
    for i in range(300):
        delta("th1", "t1", str(i))
    completed("th1", "t1")
    hold()
    """
    limits = Limits(turn_buffer=5, overflow_grace=10)
    with anyio.fail_after(20):
        async with AsyncCodex(fake_config(script), limits=limits) as codex:
            _, stream = await codex.client.start_turn("th1", {"threadId": "th1", "input": []})
            received = []
            async for note in stream:
                for _ in range(5):  # a consumer slower than the reader
                    await anyio.lowlevel.checkpoint()
                received.append(note.raw.get("delta"))
            assert received[:-1] == [str(i) for i in range(300)]
            assert codex.client.statistics().router.overflowed == 0

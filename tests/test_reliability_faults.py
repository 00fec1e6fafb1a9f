"""What an adversarial campaign broke, against a scripted fake app-server: malformed input,
server-request races, buffers, write stalls, exception groups. Each test names the contract
it holds (the module docstrings of ``_connection.py``, ``_notifications.py`` and ``_turn.py``
state them). The cases the real runtime can produce are in ``test_reliability_runtime.py``."""

from __future__ import annotations

import sys
import textwrap
import traceback
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from anyio import wait_all_tasks_blocked

from codex_anyio import (
    AsyncCodex,
    Handlers,
    InvalidRequestError,
    JsonRpcError,
    Limits,
    ProtocolError,
    ServerBusyError,
    ServerRequest,
    SubscriptionOverflowError,
    TokenUsage,
    TransportClosedError,
    is_retryable_error,
)

from .conftest import fake_config

if sys.version_info < (3, 11):  # pragma: no cover
    from exceptiongroup import ExceptionGroup

pytestmark = pytest.mark.anyio


def script_of(body: str, **constants: Any) -> str:
    head = "".join(f"{name} = {value!r}\n" for name, value in constants.items())
    return head + textwrap.dedent(body)


async def _notification(codex: AsyncCodex, method: str) -> dict[str, Any]:
    async with codex.notifications() as notes:
        async for note in notes:
            if note.method == method:
                return note.raw
    raise AssertionError(f"no {method}")


# -- bad input -------------------------------------------------------------------------------


async def test_a_notification_whose_method_is_not_a_string_is_counted_and_skipped() -> None:
    script = """
    handshake()
    r = expect("test/echo")
    raw(b'{"method": ["a", "b"], "params": {}}\\n')
    raw(b'{"method": {"x": 1}, "params": {}}\\n')
    raw(b'{"method": 7, "id": 3}\\n')
    reply(r, {"ok": True})
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            assert await codex.client.request("test/echo") == {"ok": True}
            assert codex.client.statistics().bad_lines == 3


DEEP = 1100
"""Levels of nesting beyond both decoders: orjson refuses more than 1,024, and the stdlib
decoder raises RecursionError (not ValueError) near the interpreter's recursion limit."""


async def test_a_notification_nested_too_deeply_to_decode_is_a_bad_line_and_the_reader_lives() -> (
    None
):
    script = script_of(
        """
        handshake()
        r = expect("test/echo")
        raw(b'{"method": "test/deep", "params": ' + b'{"a": ' * DEEP + b'1' + b'}' * DEEP + b'}\\n')
        reply(r, {"ok": True})
        hold()
        """,
        DEEP=DEEP,
    )
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            assert await codex.client.request("test/echo") == {"ok": True}
            assert codex.client.statistics().bad_lines == 1


async def test_a_response_or_server_request_nested_too_deeply_is_failed_and_the_reader_lives() -> (
    None
):
    script = script_of(
        """
        handshake()
        r = expect("test/deep")
        raw(b'{"id": ' + str(r["id"]).encode() + b', "result": ' + b'[' * DEEP + b']' * DEEP
            + b'}\\n')
        raw(b'{"id": 7, "method": "item/tool/call", "params": {"x": ' + b'[' * DEEP + b']' * DEEP
            + b'}}\\n')
        notify("test/answer", {"answer": read()})
        r = expect("test/big-int")
        raw(b'{"id": ' + str(r["id"]).encode() + b', "result": {"n": 123456789012345678901, '
            b'"deep": ' + b'[' * 990 + b']' * 990 + b'}}\\n')
        reply(expect("test/echo"), {"alive": True})
        hold()
        """,
        DEEP=DEEP,
    )
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            with pytest.raises(ProtocolError, match="could not be decoded"):
                await codex.client.request("test/deep")
            answer = (await _notification(codex, "test/answer"))["answer"]
            assert (answer["id"], answer["error"]["code"]) == (7, -32700)
            try:
                # 990 levels: orjson decodes it; the exact decoder (for the big integer) may
                # not, and then the request fails instead of the reader.
                result = await codex.client.request("test/big-int")
            except ProtocolError:
                pass
            else:
                assert result["n"] == 123456789012345678901
            assert await codex.client.request("test/echo") == {"alive": True}
            assert codex.client.statistics().pending_requests == 0


@pytest.mark.parametrize(
    "body",
    [
        b'"result": {"text": "\xff\xfe"}',  # invalid UTF-8
        b'"result": {"text": "\\ud800"}',  # a lone surrogate orjson rejects
        b'"result": {"n": 1e400}',  # out of range for a double
    ],
    ids=["invalid-utf8", "lone-surrogate", "1e400"],
)
async def test_an_undecodable_response_fails_its_request_with_protocol_error(body: bytes) -> None:
    script = script_of(
        """
        handshake()
        r = expect("test/bad")
        raw(b'{"id": ' + str(r["id"]).encode() + b', ' + BODY + b'}\\n')
        reply(expect("test/echo"), {"alive": True})
        hold()
        """,
        BODY=body,
    )
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            with pytest.raises(ProtocolError, match="not valid JSON"):
                await codex.client.request("test/bad")
            assert await codex.client.request("test/echo") == {"alive": True}
            stats = codex.client.statistics()
            assert (stats.bad_lines, stats.pending_requests) == (1, 0)


async def test_an_undecodable_server_request_is_answered_with_a_parse_error() -> None:
    script = """
    handshake()
    raw(b'{"id": 9, "method": "currentTime/read", "params": {"threadId": "\\xff"}}\\n')
    notify("test/answer", {"answer": read()})
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            answer = (await _notification(codex, "test/answer"))["answer"]
    assert answer["id"] == 9
    assert answer["error"]["code"] == -32700


@pytest.mark.parametrize("code", ["oops", None, 1.5, True])
async def test_an_error_whose_code_is_not_an_integer_is_a_json_rpc_error_with_the_raw_error(
    code: object,
) -> None:
    script = script_of(
        """
        handshake()
        r = expect("test/x")
        send({"id": r["id"], "error": {"code": CODE, "message": "broken"}})
        reply(expect("test/echo"), {"alive": True})
        hold()
        """,
        CODE=code,
    )
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            with pytest.raises(JsonRpcError) as caught:
                await codex.client.request("test/x")
            assert caught.value.code == -32603
            assert caught.value.raw == {"code": code, "message": "broken"}
            assert await codex.client.request("test/echo") == {"alive": True}


async def test_integers_beyond_64_bits_stay_exact_in_responses_and_server_request_ids() -> None:
    big = 2**64
    script = script_of(
        """
        handshake()
        r = expect("test/big")
        raw(b'{"id": ' + str(r["id"]).encode() + b', "result": {"n": 123456789012345678901234567890}}\\n')
        raw(b'{"id": ' + str(BIG).encode() + b', "method": "currentTime/read", "params": {"threadId": "th1"}}\\n')
        notify("test/answer", {"answer": read()})
        hold()
        """,  # noqa: E501
        BIG=big,
    )

    async def now(request: ServerRequest) -> dict[str, int]:
        assert request.id == big
        return {"currentTimeAt": 1}

    with anyio.fail_after(10):
        async with AsyncCodex(
            fake_config(script), handlers=Handlers(by_method={"currentTime/read": now})
        ) as codex:
            async with codex.notifications() as notes:
                result = await codex.client.request("test/big")
                assert result == {"n": 123456789012345678901234567890}
                async for note in notes:
                    if note.method == "test/answer":
                        assert note.raw["answer"] == {"id": big, "result": {"currentTimeAt": 1}}
                        break


# -- schema drift ----------------------------------------------------------------------------

_TURN_SCRIPT = """
handshake()
r = expect("turn/start")
reply(r, {"turn": turn("t1")})
notify("thread/tokenUsage/updated", {"threadId": "th1", "turnId": "t1", "tokenUsage": "drift"})
delta("th1", "t1", "hi")
completed("th1", "t1")
hold()
"""


async def test_untypeable_notifications_are_delivered_raw_and_counted_and_never_fail_a_turn() -> (
    None
):
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(_TURN_SCRIPT)) as codex:
            result = await codex.thread("th1").run("hello")
            assert result.status == "completed"
            assert result.usage == TokenUsage.ZERO  # an untypeable report counts nothing
            assert result.usage.reported is None
            assert codex.client.statistics().router.schema_mismatches == 1


async def test_a_drifted_notification_during_clean_up_does_not_mask_the_cancellation() -> None:
    script = """
    handshake()
    r = expect("turn/start")
    reply(r, {"turn": turn("t1")})
    notify("turn/started", {"threadId": "th1", "turn": turn("t1")})
    i = expect("turn/interrupt")
    notify("thread/tokenUsage/updated", {"threadId": "th1", "turnId": "t1", "tokenUsage": 5})
    reply(i, {})
    completed("th1", "t1", "interrupted")
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            with anyio.move_on_after(5) as scope:
                async with codex.thread("th1").turn("hello") as turn:
                    async for event in turn.stream():
                        if event.method == "turn/started":
                            scope.cancel()
            assert scope.cancelled_caught
            assert turn.status == "interrupted"


async def test_a_malformed_turn_start_response_raises_protocol_error_and_leaves_no_residue() -> (
    None
):
    script = """
    handshake()
    r = expect("turn/start")
    reply(r, {"turn": {"id": "t1"}})
    i = expect("turn/interrupt")
    reply(i, {})
    completed("th1", "t1", "interrupted")
    notify("test/interrupted", i["params"])
    hold()
    """
    handlers = Handlers()
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            async with codex.notifications() as notes:
                with pytest.raises(ProtocolError, match="turn/start"):
                    await codex.thread("th1").turn("hello", handlers=handlers)
                async for note in notes:
                    if note.method == "test/interrupted":
                        assert note.raw == {"threadId": "th1", "turnId": "t1"}
                        break
            assert codex._dispatcher._turn_handlers == {}
            assert codex.client.statistics().router.turn_streams == 0


async def test_a_typed_response_missing_a_required_field_raises_protocol_error() -> None:
    script = """
    handshake()
    reply(expect("thread/start"), {"thread": {"id": "th1"}})
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            with pytest.raises(ProtocolError, match="thread/start") as caught:
                await codex.thread_start()
            assert isinstance(caught.value.__cause__, Exception)


# -- server requests -------------------------------------------------------------------------


async def test_server_request_resolved_cancels_its_handler_and_sends_no_reply() -> None:
    script = """
    handshake()
    send({"id": 0, "method": "item/commandExecution/requestApproval", "params": PARAMS})
    expect("test/handler-started")
    notify("serverRequest/resolved", {"threadId": "th1", "requestId": 0})
    seen = []
    while True:
        message = read()
        if message.get("method") == "test/done":
            break
        seen.append(message)
    notify("test/seen", {"seen": seen})
    hold()
    """
    script = script_of(script, PARAMS=_APPROVAL_PARAMS)
    cancelled = anyio.Event()
    holder: dict[str, AsyncCodex] = {}

    async def never_answers(params: object) -> object:
        try:  # the withdrawal may arrive while the notification is still being sent
            await holder["codex"].client.notify("test/handler-started")
            await anyio.sleep_forever()
        finally:
            cancelled.set()

    with anyio.fail_after(10):
        # In the holder before it starts: the request may reach the handler before
        # ``async with`` returns.
        holder["codex"] = AsyncCodex(
            fake_config(script), handlers=Handlers(command_approval=never_answers)
        )
        async with holder["codex"] as codex:
            async with codex.notifications() as notes:
                await cancelled.wait()
                assert codex.client.statistics().server_requests_in_flight == 0
                await codex.client.notify("test/done")
                async for note in notes:
                    if note.method == "test/seen":
                        assert note.raw["seen"] == []
                        break


_APPROVAL_PARAMS = {
    "threadId": "th1",
    "turnId": "t1",
    "itemId": "i1",
    "command": "ls",
    "cwd": "/tmp",
    "reason": "test",
    "startedAtMs": 0,
}


async def test_a_duplicate_server_request_id_gets_an_error_and_the_gauge_stays_true() -> None:
    script = """
    handshake()
    r = expect("turn/start")
    reply(r, {"turn": turn("t1")})
    request = {"id": 5, "method": "item/commandExecution/requestApproval", "params": PARAMS}
    send(request)
    expect("test/handler-started")
    send(request)
    answer = read()
    notify("test/answer", {"answer": answer})
    expect("test/checked")
    completed("th1", "t1")
    hold()
    """
    script = script_of(script, PARAMS=_APPROVAL_PARAMS)
    started = anyio.Event()
    calls = 0
    holder: dict[str, AsyncCodex] = {}

    async def never_answers(params: object) -> object:
        nonlocal calls
        calls += 1
        started.set()
        await holder["codex"].client.notify("test/handler-started")
        await anyio.sleep_forever()

    with anyio.fail_after(10):
        async with AsyncCodex(
            fake_config(script), handlers=Handlers(command_approval=never_answers)
        ) as codex:
            holder["codex"] = codex
            async with codex.notifications() as notes:
                _, stream = await codex.client.start_turn("th1", {"threadId": "th1", "input": []})
                async for note in notes:
                    if note.method == "test/answer":
                        answer = note.raw["answer"]
                        break
                assert answer["id"] == 5
                assert answer["error"]["code"] == -32600
                assert (calls, codex.client.statistics().server_requests_in_flight) == (1, 1)
                await codex.client.notify("test/checked")
                async with stream:
                    async for _ in stream:
                        pass
            with anyio.fail_after(2):
                while codex.client.statistics().server_requests_in_flight:
                    await anyio.lowlevel.checkpoint()


# -- overload, in-flight cap, small counters -------------------------------------------------


async def test_the_runtimes_overload_error_is_retryable_and_retried_with_backoff() -> None:
    script = """
    handshake()
    reply_error(expect("work"), -32001, "Server overloaded; retry later.")
    reply_error(expect("work"), -32001, "Server overloaded; retry later.")
    reply(expect("work"), {"done": True})
    reply_error(expect("once"), -32001, "Server overloaded; retry later.")
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script), limits=Limits(overload_retries=3)) as codex:
            assert await codex.client.request("work") == {"done": True}
            assert codex.client.statistics().overload_retries == 2
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script), limits=Limits(overload_retries=1)) as codex:
            with pytest.raises(ServerBusyError) as caught:
                await codex.client.request("work")
            assert caught.value.code == -32001
            assert is_retryable_error(caught.value)


async def test_requests_beyond_the_in_flight_cap_wait_in_the_client() -> None:
    script = """
    handshake()
    held = [expect("test/slow"), expect("test/slow")]
    expect("test/release")
    for r in held:
        reply(r, {"ok": True})
    while True:
        reply(expect("test/slow"), {"ok": True})
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script), limits=Limits(requests_in_flight=2)) as codex:
            results: list[object] = []

            async def slow() -> None:
                results.append(await codex.client.request("test/slow"))

            async with anyio.create_task_group() as tg:
                for _ in range(5):
                    tg.start_soon(slow)
                await wait_all_tasks_blocked()
                assert codex.client.statistics().pending_requests == 2
                await codex.client.notify("test/release")
            assert results == [{"ok": True}] * 5


async def test_a_duplicate_response_is_counted_as_unknown() -> None:
    script = """
    handshake()
    r = expect("test/x")
    reply(r, {"first": True})
    reply(r, {"second": True})
    reply(expect("test/echo"), {})
    hold()
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            assert await codex.client.request("test/x") == {"first": True}
            await codex.client.request("test/echo")
            assert codex.client.statistics().unknown_responses == 1


async def test_a_partial_last_line_at_the_end_is_counted_as_bad() -> None:
    script = """
    handshake()
    expect("test/x")
    raw(b'{"id": 2, "result": {"incompl')
    """
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            with pytest.raises(TransportClosedError):
                await codex.client.request("test/x")
            assert codex.client.statistics().bad_lines == 1


@pytest.mark.parametrize("fault", ["strict", "long-line"])
async def test_a_protocol_error_fails_every_waiter_at_once_with_the_cause_chained(
    fault: str,
) -> None:
    script = """
    handshake()
    expect("test/x")
    raw(b"garbage " * 200 + b"\\n")
    hold()
    """
    limits = Limits(max_line_bytes=1000) if fault == "long-line" else None
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script), strict=True, limits=limits) as codex:
            start = anyio.current_time()
            with pytest.raises(TransportClosedError, match="protocol error") as caught:
                await codex.client.request("test/x")
            # The fake is still running: the waiter must not wait for its exit (2 s before).
            assert anyio.current_time() - start < 1.5
            assert isinstance(caught.value.__cause__, ProtocolError)


# -- buffers ---------------------------------------------------------------------------------


async def test_many_stalled_subscriptions_do_not_hold_up_an_unrelated_response() -> None:
    script = """
    handshake()
    r = expect("test/echo")
    for i in range(50):
        notify("configWarning", {"summary": str(i)})
    reply(r, {"alive": True})
    hold()
    """
    limits = Limits(subscription_buffer=2, overflow_grace=5)
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script), limits=limits) as codex:
            streams = [codex.notifications(everything=True) for _ in range(5)]
            try:
                # Five consumers that never read; before, each held the reader for the grace.
                with anyio.fail_after(2):
                    assert await codex.client.request("test/echo") == {"alive": True}
                assert codex.client.statistics().router.overflowed == 0
            finally:
                for stream in streams:
                    stream.close()


async def test_a_live_consumer_that_awaits_a_request_per_event_is_never_cut_off() -> None:
    script = """
    handshake()
    r = expect("turn/start")
    reply(r, {"turn": turn("t1")})
    for i in range(300):
        delta("th1", "t1", str(i))
    completed("th1", "t1")
    while True:
        reply(expect("test/echo"), {})
    """
    limits = Limits(turn_buffer=20, overflow_grace=1)
    with anyio.fail_after(20):
        async with AsyncCodex(fake_config(script), limits=limits) as codex:
            _, stream = await codex.client.start_turn("th1", {"threadId": "th1", "input": []})
            received = []
            async with stream:
                async for note in stream:
                    await codex.client.request("test/echo")  # the response waits behind events
                    received.append(note.raw.get("delta"))
            assert received[:-1] == [str(i) for i in range(300)]
            assert codex.client.statistics().router.overflowed == 0


async def test_with_a_full_backlog_the_reader_waits_and_then_cuts_the_stalled_consumer_off() -> (
    None
):
    script = """
    handshake()
    r = expect("turn/start")
    reply(r, {"turn": turn("t1")})
    for i in range(50):
        delta("th1", "t1", str(i))
    reply(expect("test/echo"), {"alive": True})
    hold()
    """
    limits = Limits(turn_buffer=5, backlog=10, overflow_grace=0.3)
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script), limits=limits) as codex:
            _, stream = await codex.client.start_turn("th1", {"threadId": "th1", "input": []})
            # The reader stops reading at 5 buffered + ~10 parked, cuts the consumer off after
            # the grace period, then reads the response.
            assert await codex.client.request("test/echo") == {"alive": True}
            received = []
            with pytest.raises(SubscriptionOverflowError):
                async for note in stream:
                    received.append(note.raw["delta"])
            assert received == ["0", "1", "2", "3", "4"]
            assert codex.client.statistics().router.overflowed == 1


async def test_thread_and_tap_subscribers_see_wire_order_while_a_turn_start_is_in_flight() -> None:
    script = """
    handshake()
    r = expect("turn/start")
    notify("thread/status/changed", {"threadId": "th1", "status": {"type": "active", "activeFlags": []}})
    notify("turn/started", {"threadId": "th1", "turn": turn("t1")})
    notify("thread/name/updated", {"threadId": "th1", "threadName": "n"})
    reply(r, {"turn": turn("t1")})
    delta("th1", "t1", "x")
    completed("th1", "t1")
    hold()
    """  # noqa: E501
    wire = [
        "thread/status/changed",
        "turn/started",
        "thread/name/updated",
        "item/agentMessage/delta",
        "turn/completed",
    ]
    with anyio.fail_after(10):
        async with AsyncCodex(fake_config(script)) as codex:
            thread_sub = codex.client.subscribe_thread("th1", include_turns=True)
            tap = codex.notifications(everything=True)
            async with thread_sub, tap:
                _, stream = await codex.client.start_turn("th1", {"threadId": "th1", "input": []})
                async with stream:
                    turn_methods = [note.method async for note in stream]
                assert turn_methods == ["turn/started", "item/agentMessage/delta", "turn/completed"]
                for sub in (thread_sub, tap):
                    seen = [sub.receive_nowait().method for _ in range(len(wire))]
                    assert seen == wire


# -- writes ----------------------------------------------------------------------------------

_DEAF = """
handshake()
while True:
    time.sleep(1)
"""


async def test_a_callers_deadline_wins_over_a_runtime_that_stopped_reading(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import codex_anyio._wire._transport as transport

    monkeypatch.setattr(transport, "STDIN_CLOSE_GRACE", 0.1)
    blob = {"blob": "x" * (1024 * 1024)}
    with anyio.fail_after(20):
        async with AsyncCodex(fake_config(_DEAF), limits=Limits(write_timeout=2)) as codex:
            start = anyio.current_time()
            with anyio.move_on_after(0.3) as scope:
                await codex.client.request("test/big", blob)
            assert scope.cancelled_caught
            assert anyio.current_time() - start < 1.5
            assert not codex.client.closed  # only a write stuck for write_timeout kills it
            with pytest.raises(TransportClosedError, match="write_timeout"):
                await codex.client.request("test/more", blob)


# -- exception groups ------------------------------------------------------------------------


async def test_the_callers_own_exception_group_leaves_the_client_unchanged() -> None:
    script = """
    handshake()
    hold()
    """
    mine = ExceptionGroup("mine", [ValueError("a")])
    with anyio.fail_after(10):
        with pytest.raises(ExceptionGroup) as caught:
            async with AsyncCodex(fake_config(script)):
                raise mine
    assert caught.value is mine


async def test_the_callers_exception_leaves_the_client_bare() -> None:
    script = """
    handshake()
    hold()
    """
    with anyio.fail_after(10):
        with pytest.raises(KeyError, match="mine"):
            async with AsyncCodex(fake_config(script)):
                raise KeyError("mine")


async def test_the_callers_exception_keeps_its_own_context_and_prints_without_our_groups() -> None:
    """What the body raised prints as the user wrote it: not "During handling of" two
    internal exception groups (their task groups wrap it on the way out)."""
    script = """
    handshake()
    hold()
    """
    with anyio.fail_after(10):
        with pytest.raises(ValueError, match="second") as caught:
            async with AsyncCodex(fake_config(script)):
                try:
                    raise KeyError("first")
                except KeyError:
                    raise ValueError("second")  # noqa: B904 - its context is the point
    assert isinstance(caught.value.__context__, KeyError)
    printed = "".join(traceback.format_exception(caught.value))
    assert "Exception Group" not in printed
    assert "ExceptionGroup" not in printed


async def test_a_library_error_raised_in_the_body_prints_as_that_error_alone() -> None:
    script = """
    handshake()
    reply_error(expect("test/fail"), -32600, "no such thing")
    hold()
    """
    with anyio.fail_after(10):
        with pytest.raises(InvalidRequestError) as caught:
            async with AsyncCodex(fake_config(script)) as codex:
                await codex.client.request("test/fail")
    printed = "".join(traceback.format_exception(caught.value))
    assert "Exception Group" not in printed
    assert "During handling" not in printed


async def test_a_runtime_that_dies_while_a_cancelled_start_waits_for_its_answer_releases_it() -> (
    None
):
    script = """
    handshake()
    expect("turn/start")
    time.sleep(0.5)
    sys.exit(3)
    """
    with anyio.fail_after(20):
        async with AsyncCodex(fake_config(script)) as codex:
            start = anyio.current_time()
            with anyio.move_on_after(0.2) as scope:
                await codex.thread("th1").run("hello")
            assert scope.cancelled_caught
            # The clean-up waits for the turn/start answer (up to interrupt_timeout, 10 s), but
            # the connection's end releases it at once.
            assert anyio.current_time() - start < 5


async def test_params_that_cannot_be_encoded_fail_at_once_and_leave_nothing_behind() -> None:
    script = """
    handshake()
    reply(expect("test/echo"), {"alive": True})
    hold()
    """
    with anyio.fail_after(5):  # a turn start must not wait for an answer to a message never sent
        async with AsyncCodex(fake_config(script)) as codex:
            with pytest.raises(TypeError):
                await codex.client.request("test/x", {"value": object()})
            with pytest.raises(TypeError):
                await codex.client.start_turn("th1", {"threadId": "th1", "input": [object()]})
            stats = codex.client.statistics()
            assert (stats.pending_requests, stats.router.turn_starts_in_flight) == (0, 0)
            assert await codex.client.request("test/echo") == {"alive": True}

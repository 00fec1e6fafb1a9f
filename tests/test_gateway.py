"""The model gateway with policies, against the real runtime: answers, joins, faults.

Every model call of a client opened with ``gateway=`` is answered by the gateway's policy and
recorded as an exchange joined to its thread and turn (``TurnResult.model_calls``). Record,
replay and forward have their own files (``test_gateway_cassettes.py``,
``test_gateway_forward.py``).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from codex_anyio import AsyncCodex, Codex, CodexConfig, CodexPool, TurnFailedError
from codex_anyio.gateway import (
    ModelGateway,
    ModelRequest,
    ResponseEvent,
    created_event,
    function_call_events,
    message_events,
    response,
)
from codex_anyio.testing import open_gateway_codex, scripted_env, write_codex_home

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib

pytestmark = pytest.mark.anyio

SECRET = "sk-live0123456789abcdefghij"


def gateway(policy: Any, **options: Any) -> ModelGateway:
    """A gateway whose provider never retries: a failure surfaces as it is."""
    return ModelGateway(policy, request_max_retries=0, stream_max_retries=0, **options)


def last_item(request: ModelRequest) -> dict[str, Any]:
    item = request.input[-1]
    assert isinstance(item, dict)
    return item


def prompt_of(request: ModelRequest) -> str:
    return str(request.user_texts()[-1])


async def tool_then_message(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
    """Call the ``echo`` tool with the prompt, then say what it returned."""
    last = last_item(request)
    if last.get("type") == "function_call_output":
        events = response(message_events(f"echo: {last['output']}"))
    else:
        events = response(function_call_events("echo", {"text": prompt_of(request)}))
    for event in events:
        yield event


async def echo(text: str) -> str:
    """Return the text."""
    return text


async def test_a_policy_answers_a_tool_call_then_a_message_and_both_calls_join_the_turn(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(60):
        async with open_gateway_codex(gateway(tool_then_message), directory=tmp_path) as g:
            thread = await g.codex.thread_start(dynamic_tools=[echo])
            result = await thread.run("hello")
            assert result.final_response == "echo: hello"
            calls = result.model_calls
            assert [c.index for c in calls] == [0, 1]
            assert {(c.thread_id, c.turn_id, c.request_kind) for c in calls} == {
                (thread.id, result.id, "turn")
            }
            assert all(c.finished and c.status == 200 and not c.abandoned for c in calls)
            assert calls[0].output_items[0]["name"] == "echo"
            assert calls[1].request.function_call_outputs()[0]["output"] == "hello"
            assert calls[1].usage is not None
            assert calls[1].usage["total_tokens"] == 15
            assert calls[0].first_byte is not None
            assert calls[0].total is not None
            assert g.gateway.exchanges(thread_id=thread.id, turn_id=result.id) == calls


async def test_a_policy_may_be_a_coroutine_returning_the_events(tmp_path: Path) -> None:
    async def answer(request: ModelRequest) -> list[ResponseEvent]:
        return list(response(message_events(f"re: {prompt_of(request)}")))

    with anyio.fail_after(60):
        async with open_gateway_codex(gateway(answer), directory=tmp_path) as g:
            thread = await g.codex.thread_start()
            assert (await thread.run("hi")).final_response == "re: hi"


async def test_a_policy_that_raises_fails_that_call_with_a_500_and_the_gateway_serves_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def flaky(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        if prompt_of(request) == "break":
            raise ValueError(f"no model today, key {SECRET}")
        for event in response(message_events("fine")):
            yield event

    with anyio.fail_after(60):
        async with open_gateway_codex(gateway(flaky), directory=tmp_path) as g:
            thread = await g.codex.thread_start()
            with pytest.raises(TurnFailedError, match="no model today") as failure:
                await thread.run("break")
            assert SECRET not in str(failure.value)
            assert (await thread.run("again")).final_response == "fine"
            broken = g.gateway.exchanges(thread_id=thread.id)[0]
            assert broken.status == 500
            assert broken.error is not None
            assert "no model today" in broken.error
            assert SECRET not in broken.error
            assert SECRET not in (broken.body or "")
    assert "no model today" in caplog.text
    assert SECRET not in caplog.text


async def test_a_policy_that_raises_mid_stream_fails_the_response_it_had_started(
    tmp_path: Path,
) -> None:
    async def half(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        yield created_event("resp_1")
        raise RuntimeError("lost the thread")

    with anyio.fail_after(60):
        async with open_gateway_codex(gateway(half), directory=tmp_path) as g:
            thread = await g.codex.thread_start()
            with pytest.raises(TurnFailedError):
                await thread.run("go")
            (call,) = g.gateway.exchanges(thread_id=thread.id)
            assert call.status == 200
            assert call.events[-1]["type"] == "response.failed"
            assert "lost the thread" in call.events[-1]["response"]["error"]["message"]


async def test_an_interrupted_turn_cancels_the_policy_and_its_call_is_recorded_abandoned(
    tmp_path: Path,
) -> None:
    entered, cancelled = anyio.Event(), anyio.Event()

    async def slow(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        yield created_event("resp_slow")
        entered.set()
        try:
            await anyio.sleep_forever()
        finally:
            cancelled.set()
        yield created_event("never")  # pragma: no cover

    with anyio.fail_after(60):
        async with open_gateway_codex(gateway(slow), directory=tmp_path) as g:
            thread = await g.codex.thread_start()
            async with thread.turn("wait") as turn:
                await entered.wait()
                result = await turn.cancel()
            assert result.status == "interrupted"
            await cancelled.wait()
            (call,) = result.model_calls
            assert call.finished
            assert call.abandoned
            assert not call.dropped


async def test_sixteen_concurrent_turns_on_four_threads_each_get_exactly_their_own_calls(
    tmp_path: Path,
) -> None:
    results: dict[str, list[Any]] = {}

    async def converse(codex: AsyncCodex, name: str) -> None:
        thread = await codex.thread_start(dynamic_tools=[echo])
        results[thread.id] = [await thread.run(f"{name} turn {n}") for n in range(4)]

    with anyio.fail_after(120):
        async with open_gateway_codex(gateway(tool_then_message), directory=tmp_path) as g:
            async with anyio.create_task_group() as tg:
                for name in ("a", "b", "c", "d"):
                    tg.start_soon(converse, g.codex, name)
            assert len(g.gateway.exchanges()) == 32
    for thread_id, turns in results.items():
        for n, result in enumerate(turns):
            prompt = result.final_response.removeprefix("echo: ")
            assert prompt.endswith(f"turn {n}")
            calls = result.model_calls
            assert [(c.thread_id, c.turn_id, c.index) for c in calls] == [
                (thread_id, result.id, 0),
                (thread_id, result.id, 1),
            ]
            assert prompt_of(calls[0].request) == prompt
            assert calls[1].request.function_call_outputs()[-1]["output"] == prompt


async def test_the_gateway_listens_on_127_0_0_1_only() -> None:
    with anyio.fail_after(10):
        async with gateway(lambda request: response(message_events("x"))) as gw:
            assert gw.base_url == f"http://127.0.0.1:{gw.port}/v1"
            with pytest.raises(OSError, match=r"(?i)connect|refused"):
                await anyio.connect_tcp("127.0.0.2", gw.port)  # loopback, but not bound


async def test_credential_headers_never_reach_an_exchange_or_a_repr() -> None:
    with anyio.fail_after(10):
        async with gateway(lambda request: response(message_events("x"))) as gw:
            async with httpx.AsyncClient(trust_env=False) as client:
                answer = await client.post(
                    gw.base_url + "/responses",
                    json={"input": []},
                    headers={"Authorization": f"Bearer {SECRET}", "X-Api-Key": SECRET},
                )
            assert answer.status_code == 200
            (call,) = gw.exchanges()
    assert call.request.headers["authorization"] == f"Bearer {SECRET}"  # a forward needs it
    assert SECRET not in str(call.request.redacted_headers())
    assert SECRET not in repr(call)


async def test_a_malformed_request_is_answered_400_and_the_gateway_serves_on() -> None:
    with anyio.fail_after(10):
        async with gateway(lambda request: response(message_events("ok"))) as gw:
            async with await anyio.connect_tcp("127.0.0.1", gw.port) as stream:
                await stream.send(b"NOT HTTP AT ALL\r\n\r\n")
                assert (await stream.receive()).startswith(b"HTTP/1.1 400")
            async with httpx.AsyncClient(trust_env=False) as client:
                answer = await client.post(gw.base_url + "/responses", json={})
            assert answer.status_code == 200
            assert b"response.completed" in answer.content


async def _answer_on(stream: anyio.abc.SocketStream) -> bytes:
    """Send one request on a kept-alive connection and read its whole (chunked) answer."""
    await stream.send(b"POST /v1/responses HTTP/1.1\r\nhost: gw\r\ncontent-length: 2\r\n\r\n{}")
    answer = b""
    while not answer.endswith(b"0\r\n\r\n"):
        answer += await stream.receive()
    return answer


async def test_a_kept_alive_connection_is_closed_once_idle_but_never_mid_answer(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from codex_anyio.gateway import _http

    monkeypatch.setattr(_http, "IDLE_TIMEOUT", 0.3)

    async def slow(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        await anyio.sleep(0.6)  # an answer longer than the idle timeout
        for event in response(message_events("ok")):
            yield event

    with anyio.fail_after(10):
        async with gateway(slow) as gw:
            async with await anyio.connect_tcp("127.0.0.1", gw.port) as stream:
                for _ in range(2):  # two requests, one connection
                    answer = await _answer_on(stream)
                    assert answer.startswith(b"HTTP/1.1 200")
                    assert b"response.completed" in answer
                began = anyio.current_time()
                with pytest.raises(anyio.EndOfStream):  # then idle: the gateway closes it
                    await stream.receive()
                assert anyio.current_time() - began >= 0.15  # not closed after the answer
            assert [call.finished and not call.abandoned for call in gw.exchanges()] == [True] * 2


async def test_the_runtime_is_pointed_at_the_gateway_without_touching_config_toml(
    tmp_path: Path,
) -> None:
    home = write_codex_home(tmp_path / "home", base_url="http://127.0.0.1:9/v1")  # nothing there
    before = (home / "config.toml").read_bytes()
    config = CodexConfig(cwd=tmp_path, env=scripted_env(home), codex_home=home)
    gw = gateway(lambda request: response(message_events("via the gateway")))
    with anyio.fail_after(60):
        async with AsyncCodex(config, gateway=gw) as codex:
            assert gw.running  # started for the client's lifetime
            thread = await codex.thread_start()
            result = await thread.run("hi")
            assert result.final_response == "via the gateway"
            assert len(result.model_calls) == 1
            provider = tomllib.loads(gw.provider_config())
        assert not gw.running
    assert (home / "config.toml").read_bytes() == before
    assert provider["model_provider"] == "codex-anyio-gateway"
    table = provider["model_providers"]["codex-anyio-gateway"]
    assert table["wire_api"] == "responses"
    assert table["base_url"].startswith("http://127.0.0.1:")


async def test_a_pool_sends_every_members_calls_through_its_gateway(tmp_path: Path) -> None:
    homes = [
        write_codex_home(tmp_path / f"home-{i}", base_url="http://127.0.0.1:9/v1") for i in (0, 1)
    ]
    configs = [CodexConfig(cwd=tmp_path, env=scripted_env(h), codex_home=h) for h in homes]

    async def answer(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
        for event in response(message_events(f"re: {prompt_of(request)}")):
            yield event

    gw = gateway(answer)
    with anyio.fail_after(60):
        async with CodexPool(2, config=configs, gateway=gw) as pool:
            results = [await pool.run(f"task {i}") for i in range(2)]
    assert [r.final_response for r in results] == ["re: task 0", "re: task 1"]
    assert [len(r.model_calls) for r in results] == [1, 1]
    assert {r.model_calls[0].turn_id for r in results} == {r.id for r in results}


def test_the_sync_client_runs_its_gateway_on_its_own_loop(tmp_path: Path) -> None:
    home = write_codex_home(tmp_path / "home", base_url="http://127.0.0.1:9/v1")
    config = CodexConfig(cwd=tmp_path, env=scripted_env(home), codex_home=home)
    gw = gateway(lambda request: response(message_events("sync hello")))
    with Codex(config, gateway=gw) as codex:
        result = codex.thread_start().run("hi")
    assert result.final_response == "sync hello"
    (call,) = result.model_calls
    assert call.turn_id == result.id
    assert call.finished


def test_a_gateway_needs_exactly_one_source_of_answers() -> None:
    with pytest.raises(ValueError, match="exactly one of policy=, upstream= or cassette="):
        ModelGateway()
    with pytest.raises(ValueError, match="exactly one"):
        ModelGateway(lambda request: [], upstream="http://127.0.0.1:1/v1")

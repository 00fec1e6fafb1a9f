"""The scripted model on its own (SSE framing, recording, failures) over raw HTTP, and each
script kind against the real runtime."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio.testing import (
    RecordedRequest,
    ScriptedModel,
    ScriptExhaustedError,
    exec_command,
    failed,
    function_call,
    http_error,
    message,
    model_usage,
    open_scripted_pool,
    reply,
    scripted_runtime,
    stall,
    usage_limit_reached,
)

pytestmark = pytest.mark.anyio


async def post(model: ScriptedModel, body: dict[str, Any]) -> bytes:
    """POST /v1/responses with a raw socket; return the whole response (head + body)."""
    port = int(model.base_url.rsplit(":", 1)[1].split("/")[0])
    data = json.dumps(body).encode()
    head = (
        f"POST /v1/responses HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(data)}\r\n\r\n"
    ).encode()
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(head + data)
        received = b""
        try:
            while True:
                received += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            return received


def events(raw: bytes) -> list[tuple[str, dict[str, Any]]]:
    """The SSE events of a response, parsed."""
    body = raw.partition(b"\r\n\r\n")[2].decode()
    parsed = []
    for block in body.split("\n\n"):
        if not block.strip():
            continue
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        parsed.append((fields["event"], json.loads(fields["data"])))
    return parsed


async def test_a_message_streams_as_sse_deltas_between_added_and_done() -> None:
    with anyio.fail_after(10):
        async with ScriptedModel([message("alpha beta", deltas=["alpha ", "beta"])]) as model:
            raw = await post(model, {"input": []})
    assert raw.startswith(b"HTTP/1.1 200")
    assert b"text/event-stream" in raw
    names = [name for name, _ in events(raw)]
    assert names == [
        "response.created",
        "response.output_item.added",
        "response.output_text.delta",
        "response.output_text.delta",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [data["delta"] for name, data in events(raw) if name == "response.output_text.delta"]
    assert deltas == ["alpha ", "beta"]
    done = events(raw)[4][1]["item"]
    assert done["content"] == [{"type": "output_text", "text": "alpha beta"}]
    assert events(raw)[-1][1]["response"]["usage"]["total_tokens"] == 15


async def test_message_splitting_rules() -> None:
    assert message("a b c").outputs[0].deltas == ("a ", "b ", "c")  # type: ignore[union-attr]
    assert message("abcdef", deltas=3).outputs[0].deltas == ("ab", "cd", "ef")  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="add up"):
        message("abc", deltas=["a", "x"])


async def test_function_calls_and_combined_replies_carry_name_arguments_and_call_id() -> None:
    script = [
        reply(message("checking", deltas=1), function_call("lookup", {"id": 7}, call_id="c1"))
    ]
    with anyio.fail_after(10):
        async with ScriptedModel(script) as model:
            raw = await post(model, {})
    done = [data["item"] for name, data in events(raw) if name == "response.output_item.done"]
    assert done[0]["type"] == "message"
    assert done[1] == {
        "type": "function_call",
        "id": done[1]["id"],
        "call_id": "c1",
        "name": "lookup",
        "arguments": '{"id": 7}',
    }


async def test_every_request_body_is_recorded_in_order_and_awaitable() -> None:
    with anyio.fail_after(10):
        async with ScriptedModel([message("1"), message("2")]) as model:
            async with anyio.create_task_group() as tg:
                tg.start_soon(model.wait_for_requests, 2)
                await post(model, {"n": 1})
                await post(
                    model,
                    {
                        "n": 2,
                        "input": [{"type": "function_call_output", "call_id": "c", "output": "x"}],
                    },
                )
            assert [r.body["n"] for r in model.requests] == [1, 2]
            assert model.requests[0].path == "/v1/responses"
            assert model.requests[0].headers["content-type"] == "application/json"
            assert model.function_call_outputs() == [
                {"type": "function_call_output", "call_id": "c", "output": "x"}
            ]
            assert all(e.finished.is_set() for e in model.exchanges)


async def test_failures_http_errors_and_response_failed() -> None:
    with anyio.fail_after(10):
        async with ScriptedModel(
            [http_error(429), http_error(500, "boom"), failed("nope")]
        ) as model:
            too_many = await post(model, {})
            server_error = await post(model, {})
            stream_failed = await post(model, {})
    assert too_many.startswith(b"HTTP/1.1 429")
    assert server_error.startswith(b"HTTP/1.1 500")
    assert server_error.endswith(b"boom")
    name, data = events(stream_failed)[-1]
    assert name == "response.failed"
    assert data["response"]["error"]["message"] == "nope"


async def test_a_dropped_connection_ends_the_stream_after_n_events() -> None:
    from codex_anyio.testing import Reply

    dropping = Reply(outputs=message("a b c d").outputs, drop_after=3)
    with anyio.fail_after(10):
        async with ScriptedModel([dropping]) as model:
            raw = await post(model, {})
    assert len(events(raw)) == 3
    assert "response.completed" not in [name for name, _ in events(raw)]


async def test_a_stalled_stream_is_seen_as_abandoned_when_the_client_leaves() -> None:
    with anyio.fail_after(10):
        async with ScriptedModel([stall(message("partial", deltas=1))]) as model:
            port = int(model.base_url.rsplit(":", 1)[1].split("/")[0])
            body = b"{}"
            head = f"POST /v1/responses HTTP/1.1\r\nContent-Length: {len(body)}\r\n\r\n"
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(head.encode() + body)
                await model.wait_for_requests(1)
                assert not model.exchanges[0].abandoned.is_set()
            exchange = model.exchanges[0]
            await exchange.abandoned.wait()
            await exchange.finished.wait()


async def test_a_function_script_answers_from_the_request() -> None:
    def echo(request: RecordedRequest) -> Any:
        return message(f"you said {request.body['say']}", deltas=1)

    with anyio.fail_after(10):
        async with ScriptedModel(echo) as model:
            raw = await post(model, {"say": "hi"})
    deltas = [data["delta"] for name, data in events(raw) if name == "response.output_text.delta"]
    assert deltas == ["you said hi"]


async def test_an_exhausted_script_answers_500_and_fails_loudly_on_exit() -> None:
    with anyio.fail_after(10):
        with pytest.raises(ScriptExhaustedError, match="2 model requests but the script had 1"):
            async with ScriptedModel([message("only one")]) as model:
                await post(model, {})
                extra = await post(model, {})
                assert extra.startswith(b"HTTP/1.1 500")


async def test_an_unknown_path_is_404_and_recorded() -> None:
    with anyio.fail_after(10):
        async with ScriptedModel([]) as model:
            port = int(model.base_url.rsplit(":", 1)[1].split("/")[0])
            async with await anyio.connect_tcp("127.0.0.1", port) as stream:
                await stream.send(b"GET /v1/models HTTP/1.1\r\nHost: x\r\n\r\n")
                answer = await stream.receive()
            assert answer.startswith(b"HTTP/1.1 404")
            assert model.requests[0].path == "/v1/models"


async def test_each_script_kind_drives_the_real_runtime(scripted_codex: Any) -> None:
    async def shout(text: str) -> str:
        """Upper-case a text."""
        return text.upper()

    script = [
        message("plain"),
        message("stream ed", deltas=["stream ", "ed"], delay=0.01),
        function_call("shout", {"text": "hey"}),
        message("tool done"),
        failed("scripted failure"),
        stall(),
    ]
    with anyio.fail_after(60):
        async with scripted_codex(script) as s:
            thread = await s.codex.thread_start(dynamic_tools=[shout])
            assert (await thread.run("1")).final_response == "plain"
            async with thread.turn("2") as turn:
                assert [t async for t in turn.stream_text()] == ["stream ", "ed"]
            assert (await thread.run("3")).final_response == "tool done"
            assert s.model.function_call_outputs()[0]["output"] == "HEY"
            async with thread.turn("4") as turn:
                async for _ in turn.stream():
                    pass
            assert turn.status == "failed"
            async with thread.turn("5") as turn:
                await s.model.wait_for_requests(6)
                result = await turn.cancel()
            assert result.status == "interrupted"
            await s.model.exchanges[-1].abandoned.wait()


async def test_usage_and_headers_are_scripted_per_reply() -> None:
    script = [
        reply(message("a", usage=model_usage(7, 3, cached_input_tokens=2)), headers={"x-a": "1"}),
        usage_limit_reached(1_900_000_000, plan_type="pro"),
    ]
    with anyio.fail_after(10):
        async with ScriptedModel(script) as model:
            streamed = await post(model, {})
            limited = await post(model, {})
    assert b"\r\nx-a: 1\r\n" in streamed.partition(b"\r\n\r\n")[0]
    usage = events(streamed)[-1][1]["response"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (7, 3, 10)
    assert usage["input_tokens_details"] == {"cached_tokens": 2}
    head, _, body = limited.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 429")
    assert b"x-codex-primary-reset-at: 1900000000" in head
    assert b"x-codex-primary-used-percent: 100" in head
    assert json.loads(body) == {
        "error": {"type": "usage_limit_reached", "plan_type": "pro", "resets_at": 1900000000}
    }


# -- the runtime's HOME: scripted commands never run the user's rc files -----------------------

RC_FILES = (".profile", ".bash_profile", ".bash_login", ".bashrc", ".zshenv", ".zprofile")


def home_with_rc_files(folder: Path) -> Path:
    """A HOME whose every rc file prints a marker and leaves a marker file (where a slow or
    lock-taking rc file would stall each command for the runtime's 10 s)."""
    folder.mkdir()
    for name in RC_FILES:
        (folder / name).write_text(f'echo RC-SOURCED; touch "{folder}/sourced{name}"\n')
    return folder


def sourced(home: Path) -> list[str]:
    return sorted(path.name for path in home.glob("sourced*"))


COMMAND = [exec_command("echo command-ran"), message("done")]
"""One scripted command (outside the sandbox, so that an rc file could write its marker)."""


@asynccontextmanager
async def run_scripted_command(
    kit: str, scripted_codex: Any, **options: Any
) -> AsyncIterator[list[dict[str, Any]]]:
    """Run :data:`COMMAND` through ``kit``; yield what the command printed, as the runtime
    sent it back to the model."""
    options["sandbox_mode"] = "danger-full-access"
    if kit == "open_scripted_codex":
        async with scripted_codex(COMMAND, **options) as s:
            assert (await (await s.codex.thread_start()).run("go")).status == "completed"
            yield s.model.function_call_outputs()
    else:
        async with open_scripted_pool(COMMAND, servers=1, **options) as p:
            assert (await p.pool.run("go")).status == "completed"
            yield p.model.function_call_outputs()


@pytest.mark.parametrize("kit", ["open_scripted_codex", "open_scripted_pool"])
async def test_scripted_commands_run_with_an_empty_home_not_the_users_rc_files(
    kit: str, scripted_codex: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    users_home = home_with_rc_files(tmp_path / "user")
    monkeypatch.setenv("HOME", str(users_home))
    with anyio.fail_after(60):
        async with run_scripted_command(kit, scripted_codex) as outputs:
            pass
    assert "command-ran" in outputs[0]["output"]
    assert "RC-SOURCED" not in outputs[0]["output"]
    assert sourced(users_home) == []


async def test_a_scripted_runtime_given_home_runs_commands_through_that_homes_rc_files(
    scripted_codex: Any, tmp_path: Path
) -> None:
    # The other side of the test above: what it asserts absent is what sourcing leaves.
    home = home_with_rc_files(tmp_path / "user")
    with anyio.fail_after(60):
        async with run_scripted_command("open_scripted_codex", scripted_codex, home=home) as out:
            pass
    assert "RC-SOURCED" in out[0]["output"]
    assert sourced(home) != []


def test_the_sync_kit_gives_the_runtime_an_empty_home(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from codex_anyio import Codex

    users_home = home_with_rc_files(tmp_path / "user")
    monkeypatch.setenv("HOME", str(users_home))
    with scripted_runtime(COMMAND, sandbox_mode="danger-full-access") as runtime:
        assert runtime.config.env is not None
        assert runtime.config.env["HOME"] != str(users_home)
        with Codex(runtime.config) as codex:
            assert codex.thread_start().run("go").status == "completed"
        output = runtime.model.function_call_outputs()[0]["output"]
    assert "command-ran" in output
    assert "RC-SOURCED" not in output
    assert sourced(users_home) == []

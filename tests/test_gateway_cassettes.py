"""Record through the gateway, replay offline: the real runtime, both backends.

The recording's upstream is the scripted model (a second gateway); the replay has no
upstream at all: the scripted model is stopped before it starts.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from codex_anyio import (
    ApprovalPolicy,
    AsyncCodex,
    CassetteError,
    CodexConfig,
    Handlers,
    ModelGateway,
    ReplayMismatchError,
    TurnResult,
    UsageLimitError,
    testing,
)
from codex_anyio._redact import redact
from codex_anyio.gateway import CASSETTE_VERSION, read_cassette
from codex_anyio.gateway._request import TextRedactor
from codex_anyio.testing import (
    ScriptedModel,
    exec_command,
    function_call,
    message,
    model_usage,
    open_gateway_codex,
    scripted_env,
    stall,
    usage_limit_reached,
    write_codex_home,
)

pytestmark = pytest.mark.anyio

RESETS_AT = 1_900_000_000
SCRIPT = [
    message("streamed hello", deltas=3, usage=model_usage(11, 4)),
    function_call("shout", {"text": "hey"}),
    message("tool done"),
    exec_command("echo approved", escalate=True),
    message("ran it"),
    stall(message("partial", deltas=1)),
    usage_limit_reached(RESETS_AT),
]
HANDLERS = Handlers(approvals=ApprovalPolicy.accept_all())


async def shout(text: str) -> str:
    """Upper-case a text."""
    return text.upper()


def recorder(path: Path, upstream: ScriptedModel) -> ModelGateway:
    return ModelGateway(
        upstream=upstream.base_url, record=path, request_max_retries=0, stream_max_retries=0
    )


def outcome(result: TurnResult) -> dict[str, Any]:
    """What a turn produced, without the per-run ids."""
    items = []
    for item in result.items:
        kind = getattr(item, "type", None)
        text = getattr(item, "text", None) or getattr(item, "aggregated_output", None)
        command = getattr(item, "command", None)
        items.append((kind, text, command))
    usage = result.usage
    return {
        "status": str(result.status),
        "final": result.final_response,
        "items": items,
        "usage": (usage.input_tokens, usage.output_tokens, usage.total_tokens),
        "calls": [(c.index, c.status, c.abandoned) for c in result.model_calls],
        "joined": {(c.thread_id, c.turn_id) for c in result.model_calls}
        == {(result.thread_id, result.id)},
    }


async def scenario(codex: AsyncCodex, first_prompt: str = "say hello") -> list[Any]:
    """A streamed message, a dynamic tool call, an approved command, an interrupted turn and
    a usage limit, on one thread."""
    thread = await codex.thread_start(dynamic_tools=[shout])
    seen: list[Any] = []
    async with thread.turn(first_prompt) as turn:
        seen.append([delta async for delta in turn.stream_text()])
        seen.append(outcome(await turn.run()))
    seen.append(outcome(await thread.run("use the tool")))
    seen.append(outcome(await thread.run("run a command")))
    async with thread.turn("wait for it") as turn:
        # Interrupted once the runtime holds the whole partial message (its item completed):
        # interrupted at its first delta, the runtime sometimes had and sometimes had not
        # taken the message into the thread's history yet, so the next turn's request
        # differed between the recording and the replay.
        async for event in turn.stream():
            item = getattr(event.params, "item", None)
            if event.method == "item/completed" and getattr(item, "type", None) == "agentMessage":
                break
        seen.append(outcome(await turn.cancel()))
    with pytest.raises(UsageLimitError) as limited:
        await thread.run("one more")
    resets_at = limited.value.resets_at
    seen.append(None if resets_at is None else int(resets_at.timestamp()))
    return seen


async def record(tmp_path: Path) -> tuple[Path, list[Any]]:
    cassette = tmp_path / "session.jsonl"
    async with ScriptedModel(SCRIPT) as upstream:
        async with open_gateway_codex(
            recorder(cassette, upstream),
            approval_policy="on-request",
            handlers=HANDLERS,
            directory=tmp_path / "recording",
        ) as g:
            recorded = await scenario(g.codex)
    return cassette, recorded


async def test_a_recorded_session_replays_offline_with_the_same_responses_items_and_usage(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(120):
        cassette, recorded = await record(tmp_path)
        async with testing.replay_codex(
            cassette, approval_policy="on-request", handlers=HANDLERS, directory=tmp_path / "r"
        ) as r:
            replayed = await scenario(r.codex)
    assert recorded[0] == ["strea", "med h", "ello"]
    assert recorded[1]["usage"] == (11, 4, 15)
    assert recorded[2]["final"] == "tool done"
    commands = [(text, command) for kind, text, command in recorded[3]["items"] if command]
    assert len(commands) == 1
    assert "echo approved" in commands[0][1]
    assert commands[0][0].strip() == "approved"
    assert recorded[4]["status"] == "interrupted"
    assert recorded[4]["calls"] == [(0, 200, True)]
    assert recorded[5] == RESETS_AT
    assert all(turn["joined"] for turn in recorded[1:5])
    assert replayed == recorded


async def test_a_changed_prompt_fails_the_replayed_turn_naming_the_differing_field(
    tmp_path: Path,
) -> None:
    with anyio.fail_after(120):
        cassette, _ = await record(tmp_path)
        async with testing.replay_codex(
            cassette, approval_policy="on-request", handlers=HANDLERS, directory=tmp_path / "r"
        ) as r:
            thread = await r.codex.thread_start(dynamic_tools=[shout])
            with pytest.raises(ReplayMismatchError) as mismatch:
                await thread.run("say goodbye")
    error = mismatch.value
    assert error.thread_id == thread.id
    assert error.index == 0
    assert error.turn_id is not None
    assert error.turn_id in str(error)
    assert thread.id in str(error)
    assert error.fields == ("input[3].content[0].text",)
    assert 'input[3].content[0].text: recorded "say hello", sent "say goodbye"' in str(error)


async def test_the_replay_codex_fixture_replays_a_cassette(
    tmp_path: Path, replay_codex: Any
) -> None:
    cassette = tmp_path / "c.jsonl"
    with anyio.fail_after(60):
        async with ScriptedModel([message("recorded answer")]) as upstream:
            async with open_gateway_codex(recorder(cassette, upstream), directory=tmp_path / "a"):
                pass  # nothing asked yet: the cassette holds only its header
            async with open_gateway_codex(
                recorder(cassette, upstream), directory=tmp_path / "b"
            ) as g:
                await (await g.codex.thread_start()).run("question")
        async with replay_codex(cassette) as r:
            result = await (await r.codex.thread_start()).run("question")
    assert result.final_response == "recorded answer"
    assert r.workspace.is_relative_to(tmp_path)


async def test_a_cassette_is_versioned_json_lines_without_credentials(tmp_path: Path) -> None:
    secret = "sk-test0123456789abcdefghij"
    cassette = tmp_path / "c.jsonl"
    home = write_codex_home(tmp_path / "home", base_url="http://127.0.0.1:9/v1")
    env = {**scripted_env(home), "GATEWAY_TEST_KEY": secret}
    config = CodexConfig(cwd=tmp_path, env=env, codex_home=home)
    with anyio.fail_after(60):
        async with ScriptedModel([message("one"), message("two")]) as upstream:
            for _ in range(2):  # a second recording appends
                gateway = ModelGateway(
                    upstream=upstream.base_url,
                    record=cassette,
                    env_key="GATEWAY_TEST_KEY",
                    request_max_retries=0,
                    stream_max_retries=0,
                )
                async with AsyncCodex(config, gateway=gateway) as codex:
                    await (await codex.thread_start()).run("hi")
            # The credentials went upstream...
            assert upstream.requests[0].headers["authorization"] == f"Bearer {secret}"
    # ...and never into the cassette.
    text = cassette.read_text()
    assert secret not in text
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["format"] == "codex-anyio-cassette"
    assert lines[0]["version"] == CASSETTE_VERSION
    assert len(lines) == 3
    assert lines[1]["request"]["headers"]["authorization"] == "[REDACTED]"
    assert [line["response"]["status"] for line in lines[1:]] == [200, 200]
    exchanges = read_cassette(cassette)
    assert [e.output_items[0]["content"][0]["text"] for e in exchanges] == ["one", "two"]
    assert all(e.request_kind == "turn" and e.index == 0 for e in exchanges)


def write_lines(path: Path, *lines: str, newline: bool = True) -> Path:
    path.write_text("\n".join(lines) + ("\n" if newline else ""))
    return path


HEADER = json.dumps({"format": "codex-anyio-cassette", "version": CASSETTE_VERSION})
EXCHANGE = json.dumps(
    {
        "thread_id": "t",
        "turn_id": "u",
        "index": 0,
        "request": {"method": "POST", "path": "/v1/responses", "headers": {}, "body": {}},
        "response": {"status": 200, "headers": {}, "events": [], "body": None},
    }
)


def test_a_truncated_cassette_is_an_error_naming_its_last_line(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", HEADER, EXCHANGE, EXCHANGE[:40], newline=False)
    with pytest.raises(CassetteError, match=r"line 3: truncated") as error:
        ModelGateway(cassette=path)
    assert error.value.line == 3


def test_a_corrupt_line_is_an_error_naming_it(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "c.jsonl", HEADER, "{not json", EXCHANGE)
    with pytest.raises(CassetteError, match=r"line 2: not a valid exchange"):
        ModelGateway(cassette=path)
    path = write_lines(tmp_path / "d.jsonl", HEADER, EXCHANGE, json.dumps({"thread_id": "t"}))
    with pytest.raises(CassetteError, match=r"line 3"):
        read_cassette(path)


def test_a_file_that_is_not_a_cassette_of_this_version_is_refused(tmp_path: Path) -> None:
    with pytest.raises(CassetteError, match=r"line 1: not a cassette"):
        ModelGateway(cassette=write_lines(tmp_path / "a.jsonl", EXCHANGE))
    future = json.dumps({"format": "codex-anyio-cassette", "version": 99})
    with pytest.raises(CassetteError, match=r"line 1: cassette version 99"):
        ModelGateway(cassette=write_lines(tmp_path / "b.jsonl", future))
    with pytest.raises(CassetteError, match="cannot be read"):
        ModelGateway(cassette=tmp_path / "missing.jsonl")


async def test_recording_onto_a_torn_cassette_is_refused_before_anything_is_written(
    tmp_path: Path,
) -> None:
    path = write_lines(tmp_path / "c.jsonl", HEADER, EXCHANGE[:40], newline=False)
    before = path.read_bytes()
    gateway = ModelGateway(lambda request: [], record=path)
    with anyio.fail_after(10), pytest.raises(CassetteError, match="line 2"):
        async with gateway:
            pass  # pragma: no cover
    assert path.read_bytes() == before


_json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**31), 2**31) | st.text(max_size=40),
    lambda inner: (
        st.lists(inner, max_size=4)
        | st.dictionaries(
            st.sampled_from(["text", "api_key", "headers", "name", "token", "input", "tools"]),
            inner,
            max_size=4,
        )
    ),
    max_leaves=20,
)
_secrets = st.sampled_from(["sk-" + "a" * 24, "Bearer abcdefghijklmnop1234", "plain words"])


@settings(max_examples=200, deadline=None)
@given(
    body=st.dictionaries(
        st.sampled_from(["instructions", "input", "tools", "api_key", "extra_headers", "model"]),
        _json_values | st.lists(_json_values | _secrets, max_size=4) | _secrets,
        max_size=6,
    )
)
def test_the_redactors_memory_of_whole_parts_redacts_exactly_as_a_fresh_walk(
    body: dict[str, Any],
) -> None:
    """The memory of parts by their JSON text (what keeps recording a long conversation
    cheap) never changes what is hidden: the same as the plain walk, the first time and from
    memory, and for a document that shares only some parts with one seen before."""
    redactor = TextRedactor()
    expected = redact(body)
    assert redactor.redact(body) == expected
    assert redactor.redact(body) == expected  # from memory
    seen = body.get("input")
    kept = seen[:1] if isinstance(seen, list) else []
    changed = {**body, "input": [*kept, "sk-" + "b" * 30]}
    assert redactor.redact(changed) == redact(changed)
    assert "sk-" + "b" * 30 not in repr(redactor.redact(changed))

"""ATIF trajectories from the gateway's exchanges, validated against Harbor 0.25's schema.

Harbor itself needs Python 3.12, so the tests validate against its published model's JSON
Schema (``tests/data/atif-v1.8.schema.json``, from ``scripts/atif_schema.py``) and repeat the
checks its model makes beyond the schema.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Any

import anyio
import jsonschema
import pytest

from codex_anyio import ModelGateway
from codex_anyio.gateway import (
    ModelRequest,
    ResponseEvent,
    function_call_events,
    message_events,
    read_cassette,
    response,
    usage,
)
from codex_anyio.testing import open_gateway_codex
from codex_anyio.trajectory import ATIF_VERSION, build_trajectory, export_thread

pytestmark = pytest.mark.anyio

SCHEMA = json.loads((Path(__file__).parent / "data" / "atif-v1.8.schema.json").read_text())
AGENT_ONLY = ("model_name", "reasoning_effort", "reasoning_content", "tool_calls", "metrics")


def harbor_problems(document: dict[str, Any]) -> list[str]:
    """What Harbor's ``Trajectory`` model would refuse: the schema, then its validators."""
    problems = [
        error.message for error in jsonschema.Draft202012Validator(SCHEMA).iter_errors(document)
    ]
    for index, step in enumerate(document.get("steps", [])):
        if step.get("step_id") != index + 1:
            problems.append(f"steps[{index}].step_id is not {index + 1}")
        if step.get("timestamp") is not None:
            datetime.fromisoformat(step["timestamp"].replace("Z", "+00:00"))
        if step.get("source") != "agent":
            problems += [f"steps[{index}].{f} on a non-agent step" for f in AGENT_ONLY if f in step]
        calls = {call["tool_call_id"] for call in step.get("tool_calls") or ()}
        for result in (step.get("observation") or {}).get("results", ()):
            if result.get("source_call_id") not in calls | {None}:
                problems.append(f"steps[{index}] observes a call it did not make")
    return problems


async def tool_then_message(request: ModelRequest) -> AsyncIterator[ResponseEvent]:
    last = request.input[-1]
    if last.get("type") == "function_call_output":
        events = response(message_events(f"found: {last['output']}"), usage=usage(120, 8))
    else:
        prompt = request.user_texts()[-1]
        events = response(
            message_events("Let me look."),
            function_call_events("lookup", {"q": prompt}, call_id=f"call-{prompt}"),
            usage=usage(100, 12, cached_input_tokens=60),
        )
    for event in events:
        yield event


async def lookup(q: str) -> str:
    """Look a question up."""
    return f"answer to {q}"


async def test_a_thread_exports_as_an_atif_trajectory_harbor_accepts(tmp_path: Path) -> None:
    gateway = ModelGateway(tool_then_message, request_max_retries=0, stream_max_retries=0)
    with anyio.fail_after(60):
        async with open_gateway_codex(gateway, directory=tmp_path) as g:
            thread = await g.codex.thread_start(dynamic_tools=[lookup])
            results = [await thread.run(prompt) for prompt in ("first", "second")]
            document = await export_thread(g.codex, thread.id, tmp_path / "trajectory.json")
    assert harbor_problems(document) == []
    assert json.loads((tmp_path / "trajectory.json").read_text()) == document
    assert document["schema_version"] == ATIF_VERSION
    assert document["session_id"] == thread.id
    steps = document["steps"]
    assert [s["source"] for s in steps] == ["user", "agent", "agent"] * 2
    assert [steps[0]["message"], steps[3]["message"]] == ["first", "second"]
    call, answer = steps[1], steps[2]
    assert call["message"] == "Let me look."
    assert call["tool_calls"] == [
        {"tool_call_id": "call-first", "function_name": "lookup", "arguments": {"q": "first"}}
    ]
    assert call["observation"] == {
        "results": [{"source_call_id": "call-first", "content": "answer to first"}]
    }
    assert call["metrics"] == {"prompt_tokens": 100, "completion_tokens": 12, "cached_tokens": 60}
    assert answer["message"] == "found: answer to first"
    assert answer["metrics"]["prompt_tokens"] == 120
    assert (answer["extra"]["thread_id"], answer["extra"]["turn_id"]) == (thread.id, results[0].id)
    assert [s["extra"]["call_index"] for s in steps if s["source"] == "agent"] == [0, 1, 0, 1]
    assert document["final_metrics"] == {
        "total_prompt_tokens": 440,
        "total_completion_tokens": 40,
        "total_cached_tokens": 120,
        "total_steps": 6,
    }


async def test_a_cassette_read_back_builds_the_same_steps(tmp_path: Path) -> None:
    cassette = tmp_path / "c.jsonl"
    gateway = ModelGateway(tool_then_message, record=cassette)
    with anyio.fail_after(60):
        async with open_gateway_codex(gateway, directory=tmp_path) as g:
            thread = await g.codex.thread_start(dynamic_tools=[lookup])
            await thread.run("only")
            live = build_trajectory(gateway.exchanges(thread_id=thread.id))
    recorded = build_trajectory(read_cassette(cassette))
    assert harbor_problems(recorded) == []
    strip = [{k: v for k, v in s.items() if k != "extra"} for s in recorded["steps"]]
    assert strip == [{k: v for k, v in s.items() if k != "extra"} for s in live["steps"]]


def test_a_failed_call_is_a_step_with_its_error_and_no_calls_is_an_error() -> None:
    from codex_anyio.gateway import Exchange

    request = ModelRequest.build("POST", "/v1/responses", {}, b'{"input": []}')
    failed = Exchange(request, status=502, body="{}", error="the upstream failed")
    document = build_trajectory([failed], session_id="s")
    assert harbor_problems(document) == []
    assert document["steps"][1]["extra"]["error"] == "the upstream failed"
    assert "metrics" not in document["steps"][1]
    with pytest.raises(ValueError, match="at least one model call"):
        build_trajectory([])

"""Approvals, user input and dynamic tools against the real runtime with a scripted model."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import anyio
import pytest

from codex_anyio import ApprovalPolicy, DynamicTool, Handlers, ServerRequest
from codex_anyio.testing import (
    exec_command,
    function_call,
    message,
    request_user_input,
)

from .conftest import over_every_transport

pytestmark = pytest.mark.anyio

TOUCH = "touch created-by-the-agent.txt"


def created(workspace: Path) -> bool:
    return (workspace / "created-by-the-agent.txt").exists()


def command_output(s: Any) -> str:
    outputs = s.model.function_call_outputs()
    assert outputs, "the runtime sent no function_call_output"
    return json.dumps(outputs)


async def test_without_a_handler_an_escalated_command_is_declined_and_not_run(
    scripted_codex: Any,
) -> None:
    script = [exec_command(TOUCH, escalate=True), message("ok")]
    with anyio.fail_after(30):
        async with scripted_codex(script, approval_policy="on-request") as s:
            thread = await s.codex.thread_start()
            result = await thread.run("make a file")
            assert result.status == "completed"
            assert not created(s.workspace)


@over_every_transport
async def test_accept_all_runs_the_approved_command(scripted_codex: Any) -> None:
    script = [exec_command(TOUCH, escalate=True), message("ok")]
    handlers = Handlers(approvals=ApprovalPolicy.accept_all())
    with anyio.fail_after(30):
        async with scripted_codex(script, approval_policy="on-request", handlers=handlers) as s:
            thread = await s.codex.thread_start()
            await thread.run("make a file")
            assert created(s.workspace)


@over_every_transport
async def test_an_ask_policy_sees_the_typed_request_and_its_decline_is_honoured(
    scripted_codex: Any,
) -> None:
    seen: list[ServerRequest] = []

    async def decide(request: ServerRequest) -> bool:
        seen.append(request)
        return False

    handlers = Handlers(approvals=ApprovalPolicy.ask(decide))
    script = [exec_command(TOUCH, escalate=True), message("ok")]
    with anyio.fail_after(30):
        async with scripted_codex(script, approval_policy="on-request", handlers=handlers) as s:
            thread = await s.codex.thread_start()
            await thread.run("make a file")
            assert not created(s.workspace)
    assert [r.method for r in seen] == ["item/commandExecution/requestApproval"]
    assert TOUCH in str(seen[0].params.command)


async def test_thread_handlers_override_the_clients(scripted_codex: Any) -> None:
    async def accept(params: Any) -> dict[str, str]:
        return {"decision": "accept"}

    script = [exec_command(TOUCH, escalate=True), message("ok")]
    with anyio.fail_after(30):
        async with scripted_codex(script, approval_policy="on-request") as s:
            thread = await s.codex.thread_start(handlers=Handlers(command_approval=accept))
            await thread.run("make a file")
            assert created(s.workspace)


async def test_turn_handlers_override_the_threads(scripted_codex: Any) -> None:
    script = [exec_command(TOUCH, escalate=True), message("ok")]
    accept_all = Handlers(approvals=ApprovalPolicy.accept_all())
    with anyio.fail_after(30):
        async with scripted_codex(script, approval_policy="on-request") as s:
            thread = await s.codex.thread_start(
                handlers=Handlers(approvals=ApprovalPolicy.decline_all())
            )
            await thread.run("make a file", handlers=accept_all)
            assert created(s.workspace)


async def test_the_queue_form_answers_a_request_by_hand(scripted_codex: Any) -> None:
    script = [exec_command(TOUCH, escalate=True), message("ok")]
    with anyio.fail_after(30):
        async with scripted_codex(script, approval_policy="on-request") as s:
            thread = await s.codex.thread_start()
            async with s.codex.server_requests() as requests, anyio.create_task_group() as tg:
                tg.start_soon(thread.run, "make a file")
                async for pending in requests:
                    assert pending.method == "item/commandExecution/requestApproval"
                    pending.respond({"decision": "accept"})
                    break
            assert created(s.workspace)


async def test_an_unanswered_queued_request_fails_closed_after_its_timeout(
    scripted_codex: Any,
) -> None:
    script = [exec_command(TOUCH, escalate=True), message("ok")]
    with anyio.fail_after(30):
        async with scripted_codex(script, approval_policy="on-request") as s:
            thread = await s.codex.thread_start()
            async with s.codex.server_requests(answer_timeout=0.2) as requests:
                result = await thread.run("make a file")
                assert result.status == "completed"
                first = await requests.__anext__()
                assert first.method == "item/commandExecution/requestApproval"
            assert not created(s.workspace)


@over_every_transport
async def test_a_dynamic_tool_result_reaches_the_model(scripted_codex: Any) -> None:
    calls: list[dict[str, Any]] = []

    async def lookup_order(order_id: str, verbose: bool = False) -> str:
        """Look up an order's status."""
        calls.append({"order_id": order_id, "verbose": verbose})
        return f"order {order_id} has shipped"

    script = [function_call("lookup_order", {"order_id": "42"}), message("It shipped.")]
    with anyio.fail_after(30):
        async with scripted_codex(script) as s:
            thread = await s.codex.thread_start(dynamic_tools=[lookup_order])
            result = await thread.run("where is order 42?")
            assert result.final_response == "It shipped."
            assert calls == [{"order_id": "42", "verbose": False}]
            assert "order 42 has shipped" in command_output(s)
            tools = s.model.requests[0].body["tools"]
            tool_specs = [t for t in tools if t.get("name") == "lookup_order"]
            assert tool_specs, "the tool was not offered to the model"
            spec = json.dumps(tool_specs[0])
            assert "Look up an order" in spec
            assert "order_id" in spec


async def test_a_dynamic_tool_that_raises_returns_failure_to_the_model_not_a_broken_turn(
    scripted_codex: Any,
) -> None:
    async def flaky() -> str:
        raise ConnectionError("inventory service unreachable")

    tool = DynamicTool.from_function(flaky, description="Check the inventory.")
    script = [function_call("flaky", {}), message("Sorry, it failed.")]
    with anyio.fail_after(30):
        async with scripted_codex(script) as s:
            thread = await s.codex.thread_start(dynamic_tools=[tool])
            result = await thread.run("check")
            assert result.status == "completed"
            assert "inventory service unreachable" in command_output(s)


@over_every_transport
async def test_a_user_input_request_is_answered_by_its_handler(scripted_codex: Any) -> None:
    questions = [
        {
            "id": "color",
            "header": "Color",
            "question": "Which color?",
            "options": [
                {"label": "red", "description": "warm"},
                {"label": "blue", "description": "cool"},
            ],
        }
    ]
    asked: list[Any] = []

    async def answer(params: Any) -> dict[str, Any]:
        asked.append(params)
        return {"answers": {"color": {"answers": ["blue"]}}}

    plan = {"mode": "plan", "settings": {"model": "mock-model"}}
    script = [request_user_input(questions), message("Blue it is.")]
    with anyio.fail_after(30):
        async with scripted_codex(script, handlers=Handlers(user_input=answer)) as s:
            thread = await s.codex.thread_start()
            result = await thread.run("ask me", collaboration_mode=plan)
            assert result.final_response == "Blue it is."
            assert asked[0].questions[0].question == "Which color?"
            answer_sent = json.loads(s.model.function_call_outputs()[0]["output"])
            assert answer_sent == {"answers": {"color": {"answers": ["blue"]}}}


async def test_a_handler_that_raises_is_reported_to_the_runtime_and_the_turn_goes_on(
    scripted_codex: Any,
) -> None:
    async def broken(params: Any) -> Any:
        raise RuntimeError("approval UI crashed")

    script = [exec_command(TOUCH, escalate=True), message("carried on")]
    handlers = Handlers(command_approval=broken)
    with anyio.fail_after(30):
        async with scripted_codex(script, approval_policy="on-request", handlers=handlers) as s:
            thread = await s.codex.thread_start()
            result = await thread.run("make a file")
            assert result.final_response == "carried on"
            assert not created(s.workspace)
            assert s.codex.client.statistics().server_requests_in_flight == 0

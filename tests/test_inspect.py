"""codex_anyio.inspect: the Codex runtime as an Inspect AI agent, run by ``inspect_ai.eval``.

Every eval here is offline: the model is Inspect's ``mockllm/model`` with custom outputs that
carry their usage (mockllm's default output has none, and Inspect then counts tokens with
tiktoken, which downloads its encoding from the network), the log folder is ``tmp_path``, and
the runtime gets an empty ``HOME``. Each eval runs on both of Inspect's async backends
(``INSPECT_ASYNC_BACKEND``); ``eval`` runs its own event loop, so these tests are plain
functions, bounded by the tasks' own time limits. The approval mapping's own cases (a file
change, the older requests) run directly on both AnyIO backends, outside an eval.
"""

from __future__ import annotations

import gc
import json
import subprocess
import sys
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anyio
import pytest

inspect_ai = pytest.importorskip(
    "inspect_ai", reason="inspect_ai is not installed (extra: inspect)"
)

from inspect_ai import Task, eval  # noqa: E402
from inspect_ai._util.exception import TerminateSampleError  # noqa: E402
from inspect_ai.approval import (  # noqa: E402
    Approval,
    ApprovalPolicy,
    Approver,
    approval,
    approver,
)
from inspect_ai.dataset import Sample  # noqa: E402
from inspect_ai.event import ApprovalEvent, InfoEvent, ModelEvent, ToolEvent  # noqa: E402
from inspect_ai.log import EvalLog, EvalSample  # noqa: E402
from inspect_ai.model import (  # noqa: E402
    ChatMessage,
    ChatMessageTool,
    GenerateConfig,
    ModelOutput,
    ModelUsage,
    get_model,
)
from inspect_ai.tool import Tool, ToolCall, ToolCallView, ToolChoice, ToolInfo, tool  # noqa: E402

from codex_anyio import ApprovalPolicy as CodexApprovalPolicy  # noqa: E402
from codex_anyio import CodexConfig, Handlers  # noqa: E402
from codex_anyio._rpc._server_requests import ServerRequest  # noqa: E402
from codex_anyio.inspect import SOURCE, codex_agent  # noqa: E402
from codex_anyio.inspect._approvals import InspectApprovals  # noqa: E402
from codex_anyio.inspect._translate import responses_call, responses_events  # noqa: E402
from codex_anyio.testing import exec_command  # noqa: E402

pytestmark = pytest.mark.filterwarnings(
    # Inspect's retry set-up (tenacity 9) warns on every model call; not ours to fix.
    "ignore:The 'initial' parameter is deprecated:DeprecationWarning"
)

DEFAULT_OUTPUT = "Default output from mockllm/model"
"""What ``mockllm/model`` answers by default (here with its usage filled in)."""


@pytest.fixture(params=["asyncio", "trio"])
def inspect_backend(
    request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> str:
    """Inspect on one backend, offline: logs under ``tmp_path``, no telemetry hook (Inspect's
    only outgoing channel, opt-in through ``INSPECT_TELEMETRY``)."""
    monkeypatch.setenv("INSPECT_ASYNC_BACKEND", request.param)
    monkeypatch.setenv("INSPECT_LOG_DIR", str(tmp_path / "logs"))
    for name in ("INSPECT_TELEMETRY", "INSPECT_API_KEY_OVERRIDE"):
        monkeypatch.delenv(name, raising=False)
    return str(request.param)


@pytest.fixture
def runtime(tmp_path: Path) -> CodexConfig:
    """The runtime with an empty HOME (no rc file of the machine's runs in its shells)."""
    home = tmp_path / "home"
    home.mkdir()
    return CodexConfig(env={"HOME": str(home)})


def output(content: str = "", **tool_call: Any) -> ModelOutput:
    if tool_call:
        out = ModelOutput.for_tool_call("mockllm/model", **tool_call)
    else:
        out = ModelOutput.from_content(model="mockllm/model", content=content)
    out.usage = ModelUsage(input_tokens=10, output_tokens=5, total_tokens=15)
    return out


def tool_output(messages: list[ChatMessage]) -> ChatMessageTool | None:
    tools = [m for m in messages if isinstance(m, ChatMessageTool)]
    return tools[-1] if tools else None


def run_eval(task: Task, model: Any, log_dir: Path) -> EvalLog:
    with warnings.catch_warnings():
        # Inspect on Trio leaves memory streams unclosed (a plain generate() solver does too).
        warnings.filterwarnings("ignore", "Unclosed <MemoryObject", ResourceWarning)
        [log] = eval(task, model=model, log_dir=str(log_dir), display="none", log_format="json")
        gc.collect()
    return log


def turn_status(sample: EvalSample) -> str:
    """The status the server reported for the sample's turn (as the agent recorded it)."""
    [status] = [d["status"] for d in infos(sample) if isinstance(d, dict) and "turn" in d]
    return str(status)


def infos(sample: EvalSample) -> list[Any]:
    return [e.data for e in sample.events if isinstance(e, InfoEvent) and e.source == SOURCE]


def items(sample: EvalSample, kind: str) -> list[dict[str, Any]]:
    return [d for d in infos(sample) if isinstance(d, dict) and d.get("type") == kind]


def test_an_eval_of_three_samples_in_the_local_sandbox_runs_the_agent_end_to_end(
    inspect_backend: str, runtime: CodexConfig, tmp_path: Path
) -> None:
    def model_turn(
        messages: list[ChatMessage], tools: list[ToolInfo], choice: ToolChoice, _: GenerateConfig
    ) -> ModelOutput:
        answer = tool_output(messages)
        if answer is None:
            args = {"cmd": "pwd", "yield_time_ms": 10000}
            return output(tool_call_id="call_pwd", tool_name="exec_command", tool_arguments=args)
        return output(DEFAULT_OUTPUT)

    samples = [Sample(input=f"Where are you? ({i})", id=i) for i in range(3)]
    task = Task(dataset=samples, solver=codex_agent(config=runtime), sandbox="local")
    log = run_eval(task, get_model("mockllm/model", custom_outputs=model_turn), tmp_path / "logs")

    assert log.status == "success", log.error
    assert log.samples is not None
    assert len(log.samples) == 3
    folders = set()
    for sample in log.samples:
        assert sample.output.completion == DEFAULT_OUTPUT
        assert len([e for e in sample.events if isinstance(e, ModelEvent)]) == 2
        [command] = items(sample, "commandExecution")
        assert command["exitCode"] == 0
        assert command["aggregatedOutput"].strip() == command["cwd"]
        folders.add(command["cwd"])
        assert [m["text"] for m in items(sample, "agentMessage")][-1] == DEFAULT_OUTPUT
        assert turn_status(sample) == "completed"
        assert sample.model_usage["mockllm/model"].total_tokens == 30
    # Each sample ran in a local sandbox folder of its own, not here.
    assert len(folders) == 3
    assert str(Path.cwd()) not in folders


@tool
def lookup() -> Tool:
    async def execute(order: str) -> str:
        """Look an order up.

        Args:
            order: The order's number.
        """
        return f"order {order}: shipped"

    return execute


def test_an_inspect_tool_given_to_the_agent_runs_as_a_dynamic_tool_with_a_tool_event(
    inspect_backend: str, runtime: CodexConfig, tmp_path: Path
) -> None:
    seen: list[list[str]] = []

    def model_turn(
        messages: list[ChatMessage], tools: list[ToolInfo], choice: ToolChoice, _: GenerateConfig
    ) -> ModelOutput:
        seen.append([t.name for t in tools])
        answer = tool_output(messages)
        if answer is None:
            return output(tool_call_id="call_1", tool_name="lookup", tool_arguments={"order": "7"})
        return output(f"It says: {answer.text}")

    task = Task(
        dataset=[Sample(input="Where is order 7?")],
        solver=codex_agent(config=runtime, tools=[lookup()]),
        sandbox="local",
    )
    log = run_eval(task, get_model("mockllm/model", custom_outputs=model_turn), tmp_path / "logs")

    assert log.status == "success", log.error
    [sample] = log.samples or []
    assert sample.output.completion == "It says: order 7: shipped"
    assert all("lookup" in names and "exec_command" in names for names in seen)
    [event] = [e for e in sample.events if isinstance(e, ToolEvent)]
    assert (event.function, event.arguments, event.result) == (
        "lookup",
        {"order": "7"},
        "order 7: shipped",
    )
    [call] = items(sample, "dynamicToolCall")
    assert call["tool"] == "lookup"
    assert call["success"] is True


def test_a_sample_time_limit_leaves_the_turn_interrupted_on_the_server(
    inspect_backend: str, runtime: CodexConfig, tmp_path: Path
) -> None:
    async def stalled(
        messages: list[ChatMessage], tools: list[ToolInfo], choice: ToolChoice, _: GenerateConfig
    ) -> ModelOutput:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    task = Task(
        dataset=[Sample(input="Write an essay.")],
        solver=codex_agent(config=runtime),
        sandbox="local",
        time_limit=3,
    )
    log = run_eval(task, get_model("mockllm/model", custom_outputs=stalled), tmp_path / "logs")

    [sample] = log.samples or []
    assert sample.limit is not None
    assert sample.limit.type == "time"
    assert turn_status(sample) == "interrupted"


def test_a_token_limit_hit_by_a_model_call_ends_the_sample_with_the_turn_interrupted(
    inspect_backend: str, runtime: CodexConfig, tmp_path: Path
) -> None:
    def chatty(
        messages: list[ChatMessage], tools: list[ToolInfo], choice: ToolChoice, _: GenerateConfig
    ) -> ModelOutput:
        return output(
            tool_call_id="call_pwd", tool_name="exec_command", tool_arguments={"cmd": "true"}
        )

    task = Task(
        dataset=[Sample(input="Keep going.")],
        solver=codex_agent(config=runtime),
        sandbox="local",
        token_limit=20,
        time_limit=30,
    )
    log = run_eval(task, get_model("mockllm/model", custom_outputs=chatty), tmp_path / "logs")

    [sample] = log.samples or []
    assert sample.limit is not None
    assert sample.limit.type == "token"
    assert turn_status(sample) == "interrupted"


@approver
def scripted_approver(decision: str = "approve", explanation: str = "") -> Approver:
    """An approver that decides ``decision`` for every call it is asked about."""

    async def decide(
        message: str, call: ToolCall, view: ToolCallView, history: list[ChatMessage]
    ) -> Approval:
        modified = ToolCall(call.id, call.function, {**call.arguments, "cmd": "true"})
        return Approval(
            decision=decision,  # type: ignore[arg-type]
            explanation=explanation or None,
            modified=modified if decision == "modify" else None,
        )

    return decide


def escalated_command(marker: Path) -> Callable[..., ModelOutput]:
    """A model that asks to run, outside the sandbox, a command creating ``marker``, then
    answers with what the command's call returned."""
    [call] = exec_command(f"touch {marker} && echo made-it", escalate=True).outputs
    arguments = json.loads(call.arguments)  # type: ignore[union-attr]

    def model_turn(
        messages: list[ChatMessage], tools: list[ToolInfo], choice: ToolChoice, _: GenerateConfig
    ) -> ModelOutput:
        answer = tool_output(messages)
        if answer is None:
            return output(tool_call_id="call_x", tool_name="exec_command", tool_arguments=arguments)
        return output(f"The command said: {answer.text}")

    return model_turn


def approval_events(sample: EvalSample) -> list[ApprovalEvent]:
    return [e for e in sample.events if isinstance(e, ApprovalEvent)]


def test_a_command_the_eval_approver_approves_runs_and_its_output_reaches_the_model(
    inspect_backend: str, runtime: CodexConfig, tmp_path: Path
) -> None:
    marker = tmp_path / "made"
    task = Task(
        dataset=[Sample(input="Make the file.")],
        solver=codex_agent(config=runtime),
        sandbox="local",
        approval=[ApprovalPolicy(scripted_approver("approve"), "bash")],
        time_limit=60,
    )
    model = get_model("mockllm/model", custom_outputs=escalated_command(marker))
    log = run_eval(task, model, tmp_path / "logs")

    assert log.status == "success", log.error
    [sample] = log.samples or []
    assert marker.exists()
    assert "made-it" in sample.output.completion
    [event] = approval_events(sample)
    assert event.decision == "approve"
    assert event.call.function == "bash"
    assert f"touch {marker} && echo made-it" in event.call.arguments["cmd"]
    assert event.view is not None
    assert event.view.call is not None
    assert f"touch {marker}" in event.view.call.content
    [command] = items(sample, "commandExecution")
    assert command["status"] == "completed"
    assert turn_status(sample) == "completed"


@pytest.mark.parametrize("decision", ["reject", "modify"])
def test_a_command_the_agents_approver_rejects_or_modifies_does_not_run_and_the_turn_goes_on(
    inspect_backend: str, runtime: CodexConfig, tmp_path: Path, decision: str
) -> None:
    marker = tmp_path / "made"
    rejecting = ApprovalPolicy(scripted_approver(decision, "not today"), "*")
    task = Task(
        dataset=[Sample(input="Make the file.")],
        solver=codex_agent(config=runtime, approval=[rejecting]),
        sandbox="local",
        time_limit=60,
    )
    model = get_model("mockllm/model", custom_outputs=escalated_command(marker))
    log = run_eval(task, model, tmp_path / "logs")

    assert log.status == "success", log.error
    [sample] = log.samples or []
    assert not marker.exists()
    assert sample.output.completion.startswith("The command said: ")
    assert "made-it" not in sample.output.completion
    [event] = approval_events(sample)
    assert (event.decision, event.explanation) == (decision, "not today")
    [command] = items(sample, "commandExecution")
    assert command["status"] == "declined"
    assert turn_status(sample) == "completed"


def test_with_approvers_active_a_command_inside_the_sandbox_goes_to_them_too(
    inspect_backend: str, runtime: CodexConfig, tmp_path: Path
) -> None:
    def model_turn(
        messages: list[ChatMessage], tools: list[ToolInfo], choice: ToolChoice, _: GenerateConfig
    ) -> ModelOutput:
        if tool_output(messages) is None:
            [call] = exec_command("pwd").outputs
            arguments = json.loads(call.arguments)  # type: ignore[union-attr]
            return output(tool_call_id="call_p", tool_name="exec_command", tool_arguments=arguments)
        return output(DEFAULT_OUTPUT)

    task = Task(
        dataset=[Sample(input="Where are you?")],
        solver=codex_agent(
            config=runtime, approval=[ApprovalPolicy(scripted_approver("reject"), "bash")]
        ),
        sandbox="local",
        time_limit=60,
    )
    log = run_eval(task, get_model("mockllm/model", custom_outputs=model_turn), tmp_path / "logs")

    assert log.status == "success", log.error
    [sample] = log.samples or []
    [event] = approval_events(sample)
    assert event.decision == "reject"
    assert "pwd" in event.call.arguments["cmd"]
    [command] = items(sample, "commandExecution")
    assert event.call.arguments["cwd"] == command["cwd"]
    assert event.call.id == command["id"]
    assert command["status"] == "declined"
    assert sample.output.completion == DEFAULT_OUTPUT


def test_the_callers_own_approval_handlers_win_over_the_approvers(
    inspect_backend: str, runtime: CodexConfig, tmp_path: Path
) -> None:
    marker = tmp_path / "made"
    task = Task(
        dataset=[Sample(input="Make the file.")],
        solver=codex_agent(
            config=runtime,
            handlers=Handlers(approvals=CodexApprovalPolicy.accept_all()),
            approval=[ApprovalPolicy(scripted_approver("reject"), "*")],
        ),
        sandbox="local",
        time_limit=60,
    )
    model = get_model("mockllm/model", custom_outputs=escalated_command(marker))
    log = run_eval(task, model, tmp_path / "logs")

    assert log.status == "success", log.error
    [sample] = log.samples or []
    assert marker.exists()
    assert approval_events(sample) == []


def test_a_terminate_decision_ends_the_sample_with_the_turn_interrupted_on_the_server(
    inspect_backend: str, runtime: CodexConfig, tmp_path: Path
) -> None:
    marker = tmp_path / "made"
    task = Task(
        dataset=[Sample(input="Make the file.")],
        solver=codex_agent(
            config=runtime, approval=[ApprovalPolicy(scripted_approver("terminate"), "bash")]
        ),
        sandbox="local",
        time_limit=60,
    )
    model = get_model("mockllm/model", custom_outputs=escalated_command(marker))
    log = run_eval(task, model, tmp_path / "logs")

    [sample] = log.samples or []
    assert not marker.exists()
    assert sample.limit is not None
    assert sample.limit.type == "operator"
    [event] = approval_events(sample)
    assert event.decision == "terminate"
    assert turn_status(sample) == "interrupted"


@pytest.mark.anyio
async def test_a_file_change_request_is_approved_as_apply_patch_with_the_items_changes(
    anyio_backend: str,
) -> None:
    seen: list[tuple[ToolCall, ToolCallView]] = []

    @approver(name="recording")
    def recording() -> Approver:
        async def decide(
            message: str, call: ToolCall, view: ToolCallView, history: list[ChatMessage]
        ) -> Approval:
            seen.append((call, view))
            return Approval(decision="approve")

        return decide

    approvals = InspectApprovals([])
    request = ServerRequest(
        0,
        "item/fileChange/requestApproval",
        {"threadId": "t", "turnId": "u", "itemId": "item_1", "startedAtMs": 1, "reason": "r"},
    )
    answers: list[dict[str, Any]] = []
    change = {"path": "/w/a.txt", "kind": {"type": "add"}, "diff": "hello"}
    with anyio.fail_after(10), approval([ApprovalPolicy(recording(), "apply_patch")]):
        async with anyio.create_task_group() as tg:

            async def answer() -> None:
                answers.append(await approvals.answer(request))

            tg.start_soon(answer)
            await anyio.wait_all_tasks_blocked()  # the request waits for its item
            approvals.see({"type": "fileChange", "id": "item_1", "changes": [change]})

    assert answers == [{"decision": "accept"}]
    [(call, view)] = seen
    assert (call.id, call.function) == ("item_1", "apply_patch")
    assert call.arguments == {"changes": [change], "reason": "r"}
    assert view.call is not None
    assert "/w/a.txt" in view.call.content
    assert "hello" in view.call.content


@pytest.mark.anyio
async def test_the_older_exec_request_passes_the_rejection_and_terminate_aborts(
    anyio_backend: str,
) -> None:
    def legacy(call_id: str) -> ServerRequest:
        raw = {"conversationId": "t", "callId": call_id, "command": ["ls", "-l"], "cwd": "/w"}
        return ServerRequest(0, "execCommandApproval", {**raw, "parsedCmd": []})

    approvals = InspectApprovals([])
    with anyio.fail_after(10):
        with approval([ApprovalPolicy(scripted_approver("reject", "not that"), "bash")]):
            rejected = await approvals.answer(legacy("c1"))
        assert approvals.failure is None
        with approval([ApprovalPolicy(scripted_approver("terminate", "stop"), "bash")]):
            terminated = await approvals.answer(legacy("c2"))

    assert rejected == {"decision": {"denied": {"rejection": "not that"}}}
    assert terminated == {"decision": "abort"}
    assert isinstance(approvals.failure, TerminateSampleError)
    assert "stop" in approvals.failure.reason


def test_a_responses_request_becomes_inspect_messages_and_tools() -> None:
    body = {
        "instructions": "Be brief.",
        "input": [
            {
                "type": "message",
                "role": "developer",
                "content": [{"type": "input_text", "text": "d"}],
            },
            {"type": "message", "role": "user", "content": [{"type": "input_text", "text": "hi"}]},
            {"type": "reasoning", "encrypted_content": "opaque"},
            {"type": "function_call", "name": "f", "arguments": '{"a": 1}', "call_id": "c1"},
            {"type": "function_call_output", "call_id": "c1", "output": "done"},
        ],
        "tools": [
            {
                "type": "function",
                "name": "f",
                "description": "F.",
                "parameters": {
                    "type": "object",
                    "properties": {"a": {"type": "integer"}},
                    "required": ["a"],
                },
            },
            {"type": "web_search"},
        ],
        "tool_choice": "required",
        "parallel_tool_calls": False,
    }
    call = responses_call(body)
    assert [(m.role, m.text) for m in call.messages] == [
        ("system", "Be brief."),
        ("system", "d"),
        ("user", "hi"),
        ("assistant", ""),
        ("tool", "done"),
    ]
    [request] = call.messages[3].tool_calls or []  # type: ignore[union-attr]
    assert (request.id, request.function, request.arguments) == ("c1", "f", {"a": 1})
    assert call.messages[4].function == "f"  # type: ignore[union-attr]
    assert [t.name for t in call.tools] == ["f"]
    assert call.tool_choice == "any"
    assert call.config.parallel_tool_calls is False


def test_a_model_output_becomes_the_responses_events_of_its_text_tool_calls_and_usage() -> None:
    out = output(tool_call_id="c9", tool_name="lookup", tool_arguments={"order": "7"})
    out.message.content = "Looking it up."
    out.usage = ModelUsage(input_tokens=3, output_tokens=2, total_tokens=5, reasoning_tokens=1)
    events = responses_events(out)
    done = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    assert [(i["type"], i.get("name"), i.get("call_id")) for i in done] == [
        ("message", None, None),
        ("function_call", "lookup", "c9"),
    ]
    assert done[0]["content"] == [{"type": "output_text", "text": "Looking it up."}]
    usage = events[-1]["response"]["usage"]
    assert (usage["input_tokens"], usage["output_tokens"], usage["total_tokens"]) == (3, 2, 5)
    assert usage["output_tokens_details"] == {"reasoning_tokens": 1}


def test_importing_codex_anyio_never_imports_inspect_ai() -> None:
    code = "import sys, codex_anyio, codex_anyio.gateway; print('inspect_ai' in sys.modules)"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "False"

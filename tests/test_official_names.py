"""The official SDK's names and shapes: presets, inputs, aliases, errors, retry, metadata."""

from __future__ import annotations

from typing import Any

import anyio
import pytest

import codex_anyio.types as types
from codex_anyio import (
    ApprovalMode,
    AsyncThread,
    AsyncTurnHandle,
    CodexConfig,
    ExternalMessage,
    Notification,
    Sandbox,
    ServerBusyError,
    Thread,
    TurnFailedError,
    TurnHandle,
    retry_on_overload,
)
from codex_anyio._api._inputs import to_wire_turn_input
from codex_anyio._api._metadata import CodexMetadata
from codex_anyio._api._modes import approval_mode_params, sandbox_mode, sandbox_policy
from codex_anyio.testing import message

pytestmark = pytest.mark.anyio


def busy() -> ServerBusyError:
    return ServerBusyError(-32001, "Server overloaded; retry later.")


def test_presets_map_to_the_wire_fields_the_official_sdk_sends() -> None:
    assert approval_mode_params(ApprovalMode.deny_all) == {"approval_policy": "never"}
    assert approval_mode_params(ApprovalMode.auto_review) == {
        "approval_policy": "on-request",
        "approvals_reviewer": "auto_review",
    }
    assert approval_mode_params(None) == {}
    assert sandbox_mode(Sandbox.full_access) == "danger-full-access"
    assert sandbox_mode("read-only") == "read-only"  # our raw keyword keeps working
    assert sandbox_policy(Sandbox.workspace_write) == {"type": "workspaceWrite"}


def test_an_unknown_preset_is_a_value_error_naming_the_options() -> None:
    with pytest.raises(ValueError, match=r"Sandbox\.read_only"):
        sandbox_policy("everything")
    with pytest.raises(ValueError, match=r"ApprovalMode\.deny_all"):
        approval_mode_params("yes")


def test_an_external_message_travels_as_tool_output_with_an_empty_input() -> None:
    wire_input, tool_output = to_wire_turn_input(
        ExternalMessage(tool_name="browser", content="page text", namespace="web")
    )
    assert wire_input == []
    assert tool_output == {"name": "browser", "output": "page text", "namespace": "web"}
    with pytest.raises(ValueError, match="tool_name"):
        to_wire_turn_input(ExternalMessage(tool_name=" ", content="x"))


def test_notification_payload_is_the_typed_params() -> None:
    note = Notification(
        "item/agentMessage/delta", {"threadId": "t", "turnId": "u", "itemId": "i", "delta": "hi"}
    )
    assert note.payload is note.params
    assert note.payload.delta == "hi"


def test_official_aliases_and_types_exist() -> None:
    assert (AsyncThread, AsyncTurnHandle) == (Thread, TurnHandle)
    assert {"JsonObject", "RunInput", "ExternalMessage", "Notification"} <= set(types.__all__)
    assert CodexConfig("/opt/codex").codex_bin == "/opt/codex"
    assert issubclass(TurnFailedError, RuntimeError)


def test_metadata_parses_server_info_from_the_user_agent() -> None:
    response = types.InitializeResponse(
        codex_home="/h",
        platform_family="unix",
        platform_os="linux",
        user_agent="codex_anyio/0.163.0 (Debian 12; x86_64) xterm (codex_anyio; 0.1.0)",
    )
    metadata = CodexMetadata(response=response)
    assert (metadata.serverInfo.name, metadata.serverInfo.version) == ("codex_anyio", "0.163.0")
    assert metadata.userAgent == metadata.user_agent
    assert (metadata.platformFamily, metadata.platformOs) == ("unix", "linux")


def test_retry_on_overload_retries_a_sync_callable_with_the_official_keywords() -> None:
    outcomes: list[Any] = [busy(), busy(), "done"]

    def op() -> str:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return str(outcome)

    assert retry_on_overload(op, max_attempts=3, initial_delay_s=0.001, max_delay_s=0.002) == "done"


def test_retry_on_overload_gives_up_after_max_attempts_and_never_retries_other_errors() -> None:
    calls = 0

    def always_busy() -> None:
        nonlocal calls
        calls += 1
        raise busy()

    with pytest.raises(ServerBusyError):
        retry_on_overload(always_busy, max_attempts=2, initial_delay_s=0.001)
    assert calls == 2

    def broken() -> None:
        raise KeyError("x")

    with pytest.raises(KeyError):
        retry_on_overload(broken, initial_delay_s=0.001)


async def test_retry_on_overload_awaits_an_async_callable_between_cancellable_sleeps() -> None:
    outcomes: list[Any] = [busy(), 42]

    async def op() -> int:
        await anyio.lowlevel.checkpoint()
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return int(outcome)

    with anyio.fail_after(5):
        assert await retry_on_overload(op, initial_delay_s=0.001) == 42


async def test_an_external_message_runs_a_turn_on_the_real_runtime(scripted_codex: Any) -> None:
    with anyio.fail_after(30):
        async with scripted_codex([message("Noted the page.")]) as s:
            thread = await s.codex.thread_start(sandbox=Sandbox.read_only)
            result = await thread.run(
                ExternalMessage(tool_name="browser", content="untrusted page text"),
                approval_mode=ApprovalMode.deny_all,
            )
            assert result.final_response == "Noted the page."
            assert "untrusted page text" in str(s.model.requests[0].body["input"])

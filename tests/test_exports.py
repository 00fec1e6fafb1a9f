"""The public API, name by name: where the README says each name lives, it lives.

The package's folders are private layers (``_api``, ``_rpc``, ...); users import from the
public modules below, and a move inside the layers must never change what they see. A name
added or removed here is an API change: say so in the changelog.
"""

from __future__ import annotations

import importlib
import importlib.util
import subprocess
import sys

import pytest

PUBLIC: dict[str, list[str]] = {
    "codex_anyio": [
        "AccountStatistics",
        "ApprovalMode",
        "ApprovalPolicy",
        "AsyncChatgptLoginHandle",
        "AsyncCodex",
        "AsyncDeviceCodeLoginHandle",
        "AsyncThread",
        "AsyncTurnHandle",
        "AuthenticationError",
        "CassetteError",
        "ChatgptLoginHandle",
        "ClientStatistics",
        "ClusterError",
        "Codex",
        "CodexClient",
        "CodexConfig",
        "CodexError",
        "CodexMetadata",
        "CodexNotFoundError",
        "CodexPool",
        "CodexRpcError",
        "CredentialsMissingError",
        "DeviceCodeLoginHandle",
        "DynamicTool",
        "ExternalMessage",
        "ForkedClientError",
        "Goal",
        "GoalResult",
        "GoalStatus",
        "Handlers",
        "ImageInput",
        "Input",
        "InputItem",
        "InternalRpcError",
        "InvalidParamsError",
        "InvalidRequestError",
        "JsonObject",
        "JsonRpcError",
        "Limits",
        "LocalImageInput",
        "LoginHandle",
        "MemberStatistics",
        "MentionInput",
        "MethodNotFoundError",
        "ModelGateway",
        "Notification",
        "NotificationStream",
        "ParseError",
        "PendingServerRequest",
        "PoolStatistics",
        "PooledThread",
        "ProtocolError",
        "ReplayMismatchError",
        "RestartsExhaustedError",
        "RetryLimitExceededError",
        "RunInput",
        "RunningServer",
        "Sandbox",
        "ServerBusyError",
        "ServerInfo",
        "ServerRequest",
        "ServerRequestQueue",
        "ServerUnresponsiveError",
        "SkillInput",
        "StartupError",
        "SubscriptionOverflowError",
        "SyncGoal",
        "SyncThread",
        "SyncTurnHandle",
        "Telemetry",
        "TextInput",
        "Thread",
        "TokenUsage",
        "TransportClosedError",
        "TurnFailedError",
        "TurnHandle",
        "TurnIdleTimeoutError",
        "TurnResult",
        "TurnStarter",
        "TurnUsage",
        "UsageLimitError",
        "UsageLimitWaitError",
        "__version__",
        "dynamic_tool",
        "is_retryable_error",
        "lean_thread_options",
        "map_jsonrpc_error",
        "open_codex",
        "result_only_opt_outs",
        "retry_on_overload",
        "runtime_path",
        "serve_app_server",
    ],
    "codex_anyio.batch": [
        "ActorStatistics",
        "BatchResult",
        "BatchRun",
        "BatchTask",
        "NOT_COMPLETED",
        "RECYCLE_AFTER",
        "RETRIED",
        "RayBatchRun",
        "ResultWriter",
        "ResultsFileError",
        "ResultsWriteError",
        "STATUSES",
        "TaskFileError",
        "attempt_task",
        "check_task",
        "ends_batch",
        "file_stem",
        "parse_shard",
        "pending_tasks",
        "percentile",
        "read_results",
        "read_tasks",
        "run_batch",
        "run_batch_on_ray",
        "shard_of",
        "should_retry",
    ],
    "codex_anyio.testing": [
        "Exchange",
        "GatewayCodex",
        "RecordedRequest",
        "Reply",
        "ScriptExhaustedError",
        "ScriptedCodex",
        "ScriptedExchange",
        "ScriptedModel",
        "ScriptedPool",
        "ScriptedRuntime",
        "exec_command",
        "failed",
        "function_call",
        "http_error",
        "message",
        "model_usage",
        "open_gateway_codex",
        "open_scripted_codex",
        "open_scripted_pool",
        "replay_codex",
        "reply",
        "request_user_input",
        "scripted_env",
        "scripted_runtime",
        "stall",
        "usage_limit_reached",
        "write_codex_home",
    ],
    "codex_anyio.gateway": [
        "CASSETTE_VERSION",
        "CassetteError",
        "DropConnection",
        "Exchange",
        "ModelGateway",
        "ModelRequest",
        "PlainResponse",
        "Policy",
        "ReplayMismatchError",
        "ResponseEvent",
        "SseEvent",
        "StreamStart",
        "VOLATILE_FIELDS",
        "completed_event",
        "created_event",
        "failed_event",
        "function_call_events",
        "message_events",
        "read_cassette",
        "response",
        "usage",
    ],
    "codex_anyio.trajectory": [
        "ATIF_VERSION",
        "build_trajectory",
        "export_thread",
        "write_trajectory",
    ],
    "codex_anyio.pool": [
        "AccountStatistics",
        "CodexPool",
        "DEFAULT_MAX_TURNS",
        "MemberStatistics",
        "PoolStatistics",
        "PooledThread",
    ],
    "codex_anyio.serve": [
        "RunningServer",
        "serve_app_server",
    ],
    "codex_anyio.telemetry": [
        "Telemetry",
    ],
}
if importlib.util.find_spec("inspect_ai") is not None:  # the inspect extra
    PUBLIC["codex_anyio.inspect"] = ["InspectModelPolicy", "SOURCE", "codex_agent"]


@pytest.mark.parametrize("module", list(PUBLIC))
def test_each_public_module_exports_exactly_its_names_and_each_resolves(module: str) -> None:
    imported = importlib.import_module(module)
    assert sorted(imported.__all__) == PUBLIC[module]
    for name in PUBLIC[module]:
        assert getattr(imported, name) is not None


def test_public_classes_and_functions_name_a_public_module_as_their_home() -> None:
    """Tracebacks, reprs and pickles show ``codex_anyio.X``, never a private layer's path."""
    for module, names in PUBLIC.items():
        imported = importlib.import_module(module)
        for name in names:
            home = getattr(getattr(imported, name), "__module__", None)
            if isinstance(home, str) and home.startswith("codex_anyio"):
                private = [part for part in home.split(".") if part.startswith("_")]
                assert not private, f"{module}.{name} says it lives in {home}"


def test_the_product_packages_reexport_the_top_level_objects() -> None:
    import codex_anyio
    import codex_anyio.gateway
    import codex_anyio.pool
    import codex_anyio.serve
    import codex_anyio.telemetry

    assert codex_anyio.gateway.ModelGateway is codex_anyio.ModelGateway
    assert codex_anyio.pool.CodexPool is codex_anyio.CodexPool
    assert codex_anyio.serve.serve_app_server is codex_anyio.serve_app_server
    assert codex_anyio.telemetry.Telemetry is codex_anyio.Telemetry


def test_importing_the_package_loads_no_optional_library_and_no_executor() -> None:
    code = (
        "import sys, codex_anyio, codex_anyio.batch, codex_anyio.testing\n"
        "loaded = [m for m in ('ray', 'opentelemetry', 'wsproto', 'rich', 'trio', 'h11',\n"
        "          'httpx', 'httpcore', 'codex_anyio.batch._ray', 'codex_anyio._cli')\n"
        "          if m in sys.modules]\n"
        "print(loaded)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"

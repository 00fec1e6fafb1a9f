"""codex-anyio: a structured-concurrency client for the Codex app-server, on asyncio and Trio.

Everything public is re-exported here; modules with a leading underscore are private. The
typed protocol models live in :mod:`codex_anyio.types`.
"""

from __future__ import annotations

from .__about__ import __version__
from ._api._account import AsyncChatgptLoginHandle, AsyncDeviceCodeLoginHandle, LoginHandle
from ._api._codex import AsyncCodex, open_codex
from ._api._dispatch import (
    ApprovalPolicy,
    Handlers,
    PendingServerRequest,
    ServerRequestQueue,
)
from ._api._goal import Goal, GoalResult, GoalStatus
from ._api._inputs import (
    ExternalMessage,
    ImageInput,
    Input,
    InputItem,
    JsonObject,
    LocalImageInput,
    MentionInput,
    RunInput,
    SkillInput,
    TextInput,
)
from ._api._metadata import CodexMetadata, ServerInfo
from ._api._modes import ApprovalMode, Sandbox
from ._api._presets import lean_thread_options, result_only_opt_outs
from ._api._thread import Thread, TurnStarter
from ._api._tools import DynamicTool, dynamic_tool
from ._api._turn import TurnHandle, TurnResult
from ._exceptions import (
    AuthenticationError,
    CassetteError,
    ClusterError,
    CodexError,
    CodexNotFoundError,
    CodexRpcError,
    CredentialsMissingError,
    ForkedClientError,
    InternalRpcError,
    InvalidParamsError,
    InvalidRequestError,
    JsonRpcError,
    MethodNotFoundError,
    ParseError,
    ProtocolError,
    ReplayMismatchError,
    RestartsExhaustedError,
    RetryLimitExceededError,
    ServerBusyError,
    ServerUnresponsiveError,
    StartupError,
    SubscriptionOverflowError,
    TransportClosedError,
    TurnFailedError,
    TurnIdleTimeoutError,
    UsageLimitError,
    UsageLimitWaitError,
    is_retryable_error,
    map_jsonrpc_error,
)
from ._public import publish
from ._rpc._connection import ClientStatistics, CodexClient
from ._rpc._notifications import Notification, NotificationStream
from ._rpc._retry import retry_on_overload
from ._rpc._router import Limits
from ._rpc._server_requests import ServerRequest
from ._rpc._usage import TokenUsage, TurnUsage
from ._sync._client import (
    ChatgptLoginHandle,
    Codex,
    DeviceCodeLoginHandle,
    SyncGoal,
    SyncThread,
    SyncTurnHandle,
)
from ._wire._config import CodexConfig, runtime_path
from .gateway._gateway import ModelGateway
from .pool._accounts import AccountStatistics
from .pool._pool import CodexPool, MemberStatistics, PoolStatistics
from .pool._thread import PooledThread
from .serve._server import RunningServer, serve_app_server
from .telemetry._telemetry import Telemetry

AsyncThread = Thread
"""The official SDK's name for the async :class:`Thread`."""
AsyncTurnHandle = TurnHandle
"""The official SDK's name for the async :class:`TurnHandle`."""

__all__ = [
    "AccountStatistics",
    "ApprovalMode",
    "ApprovalPolicy",
    "AsyncChatgptLoginHandle",
    "AsyncCodex",
    "AsyncDeviceCodeLoginHandle",
    "AsyncThread",
    "AsyncTurnHandle",
    "ChatgptLoginHandle",
    "AuthenticationError",
    "CassetteError",
    "ClientStatistics",
    "ClusterError",
    "Codex",
    "CodexClient",
    "CodexConfig",
    "CodexError",
    "CodexPool",
    "CodexMetadata",
    "CodexNotFoundError",
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
    "MemberStatistics",
    "LoginHandle",
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
    "Sandbox",
    "RunningServer",
    "ServerBusyError",
    "ServerInfo",
    "ServerUnresponsiveError",
    "ServerRequest",
    "ServerRequestQueue",
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
]

publish(globals(), top=True)

"""codex-anyio: a structured-concurrency client for the Codex app-server, on asyncio and Trio.

Everything public is re-exported here; modules with a leading underscore are private. The
typed protocol models live in :mod:`codex_anyio.types`.
"""

from __future__ import annotations

from .__about__ import __version__
from ._account import AsyncChatgptLoginHandle, AsyncDeviceCodeLoginHandle, LoginHandle
from ._codex import AsyncCodex, open_codex
from ._config import CodexConfig
from ._connection import ClientStatistics, CodexClient
from ._dispatch import (
    ApprovalPolicy,
    Handlers,
    PendingServerRequest,
    ServerRequestQueue,
)
from ._exceptions import (
    AuthenticationError,
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
    is_retryable_error,
    map_jsonrpc_error,
)
from ._inputs import (
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
from ._metadata import CodexMetadata, ServerInfo
from ._modes import ApprovalMode, Sandbox
from ._notifications import Notification, NotificationStream
from ._pool import CodexPool, MemberStatistics, PoolStatistics
from ._pool_thread import PooledThread
from ._presets import lean_thread_options
from ._retry import retry_on_overload
from ._router import Limits
from ._serve import RunningServer, serve_app_server
from ._server_requests import ServerRequest
from ._sync import ChatgptLoginHandle, Codex, DeviceCodeLoginHandle, SyncThread, SyncTurnHandle
from ._telemetry import Telemetry
from ._thread import Thread, TurnStarter
from ._tools import DynamicTool, dynamic_tool
from ._turn import TurnHandle, TurnResult
from ._usage import TokenUsage, TurnUsage

AsyncThread = Thread
"""The official SDK's name for the async :class:`Thread`."""
AsyncTurnHandle = TurnHandle
"""The official SDK's name for the async :class:`TurnHandle`."""

__all__ = [
    "ApprovalMode",
    "ApprovalPolicy",
    "AsyncChatgptLoginHandle",
    "AsyncCodex",
    "AsyncDeviceCodeLoginHandle",
    "AsyncThread",
    "AsyncTurnHandle",
    "ChatgptLoginHandle",
    "AuthenticationError",
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
    "Notification",
    "NotificationStream",
    "ParseError",
    "PendingServerRequest",
    "PoolStatistics",
    "PooledThread",
    "ProtocolError",
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
    "__version__",
    "dynamic_tool",
    "is_retryable_error",
    "lean_thread_options",
    "map_jsonrpc_error",
    "open_codex",
    "retry_on_overload",
    "serve_app_server",
]

for _name in __all__:
    _obj = globals()[_name]
    if getattr(_obj, "__module__", "").startswith("codex_anyio._"):
        try:
            _obj.__module__ = __name__
        except (AttributeError, TypeError):  # pragma: no cover
            pass
del _name, _obj

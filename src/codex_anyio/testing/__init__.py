"""Offline testing against the real Codex runtime: a scripted model and a ready client.

``open_scripted_codex(script)`` (or the ``scripted_codex`` pytest fixture) starts a
:class:`ScriptedModel` on loopback, a real ``codex app-server`` configured to use it, and an
initialized :class:`~codex_anyio.AsyncCodex`. ``scripted_runtime(script)`` does the same for
the synchronous :class:`~codex_anyio.Codex`: it yields the ``CodexConfig`` to open it with.
``open_gateway_codex(gateway)`` runs the real runtime against any
:class:`~codex_anyio.gateway.ModelGateway`, and ``replay_codex(cassette)`` (or the
``replay_codex`` pytest fixture) against a recorded cassette. No network, no credentials.
"""

from .._public import publish
from ._gateway_harness import GatewayCodex, open_gateway_codex, replay_codex
from ._harness import ScriptedCodex, ScriptedPool, open_scripted_codex, open_scripted_pool
from ._home import scripted_env, write_codex_home
from ._scripted_model import (
    Exchange,
    RecordedRequest,
    Reply,
    ScriptedExchange,
    ScriptedModel,
    ScriptExhaustedError,
    exec_command,
    failed,
    function_call,
    http_error,
    message,
    model_usage,
    reply,
    request_user_input,
    stall,
    usage_limit_reached,
)
from ._sync_harness import ScriptedRuntime, scripted_runtime

__all__ = [
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
]

publish(globals())

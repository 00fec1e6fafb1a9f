"""``AsyncCodex``: one app-server process, its connection, and the task group that owns both.

``async with AsyncCodex() as codex`` starts the runtime, performs the handshake
(``initialize`` then ``initialized``) and returns with ``codex.metadata`` set. Leaving the
block, however it is left, closes the runtime: shielded and bounded, no process, task or pipe
left behind. A cancellation that arrives while the runtime is starting (a timeout around the
``async with``) takes the same path, so it cannot orphan an app-server.

With ``CodexConfig(connect=...)`` the client attaches to a server that is already running
(``_ws.py``) instead of spawning one; leaving the block then closes the connection only.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import anyio
import attrs

from .._exceptions import StartupError, TransportClosedError
from .._groups import Lifespan
from .._protocol._generated.models import InitializeResponse
from .._redact import redact_url
from .._rpc._connection import CodexClient, open_client, protect_from_ctrl_c, structure_result
from .._rpc._router import Limits
from .._rpc._usage import UsageLedger
from .._wire._config import CodexConfig
from .._wire._transport import StdioTransport, Transport, spawn_stdio
from .._wire._wire_log import WireLogTransport, wire_log_enabled
from ..telemetry._telemetry import WATCHED_NOTIFICATIONS, Instrumentation, Telemetry
from ..telemetry._telemetry import resolve as resolve_telemetry
from ._account import CodexAccountMixin
from ._credentials import CredentialsCheck
from ._dispatch import Dispatcher, Handlers
from ._metadata import CodexMetadata
from ._model_calls import ModelCallSource
from ._presets import CLIENT_READS
from ._thread import CodexThreadsMixin

__all__ = ["AsyncCodex", "open_codex"]


class AsyncCodex(CodexThreadsMixin, CodexAccountMixin, Lifespan[None]):
    """A running Codex app-server and a typed client for it.

    :param config: how to launch the runtime (default: the pinned bundled binary).
    :param handlers: answers to server requests (approvals, user input, tool calls, ...);
        anything without a handler fails closed: approvals are declined.
    :param limits: bounds of every buffer (see :class:`Limits`).
    :param strict: make a malformed line from the runtime fatal instead of logged.
    :param require_credentials: check, when a thread is started, resumed or forked, that the
        runtime has the login its model provider needs, and raise
        :class:`CredentialsMissingError` at once rather than let the runtime retry for minutes.
        Default: on when launching the ``codex`` binary, off with ``launch_args_override``
        (a wrapper or a fake server answers whatever it was written to answer).
    :param telemetry: OpenTelemetry spans and metrics (see :class:`Telemetry`). Default: on
        when ``opentelemetry-api`` is installed and a real global tracer or meter provider is
        set when the client starts; ``False``: off; ``True``: on with the global providers
        even if they are still the API's proxies; a :class:`Telemetry`: its providers.
    :param gateway: a :class:`~codex_anyio.gateway.ModelGateway` for the runtime's model
        calls: the runtime is launched with ``--config`` overrides pointing its model provider
        at it (the user's ``config.toml`` is untouched), the gateway is started for as long as
        the client runs if it is not running yet, and every ``TurnResult`` lists its turn's
        calls in ``model_calls``. With ``CodexConfig(connect=...)`` the server attached to
        must already use the gateway (launch it with ``gateway.config_overrides()``); the
        calls are still joined.
    """

    def __init__(
        self,
        config: CodexConfig | None = None,
        *,
        handlers: Handlers | None = None,
        limits: Limits | None = None,
        strict: bool = False,
        require_credentials: bool | None = None,
        telemetry: Telemetry | bool | None = None,
        gateway: ModelCallSource | None = None,
    ) -> None:
        self.config = config or CodexConfig()
        self.gateway = gateway
        """The model gateway the runtime's calls go through (None: the configured provider)."""
        self._limits = limits or Limits()
        self._strict = strict
        self._dispatcher = Dispatcher(handlers or Handlers())
        if require_credentials is None:
            require_credentials = self.config.launch_args_override is None
        self._credentials = CredentialsCheck(enabled=require_credentials)
        self._telemetry = telemetry
        self._instrumentation: Instrumentation | None = None
        """The telemetry of the running client (decided at each start; None: off)."""
        self._client: CodexClient | None = None
        self._metadata: CodexMetadata | None = None
        self._usage_ledger = UsageLedger()

    @property
    def client(self) -> CodexClient:
        """The low-level client: ``request`` any method, or the typed generated methods."""
        if self._client is None:
            raise RuntimeError("AsyncCodex is not running; use 'async with AsyncCodex() as codex'")
        return self._client

    @property
    def metadata(self) -> CodexMetadata:
        """What the runtime said in ``initialize`` (user agent, codex home, platform,
        ``serverInfo``)."""
        if self._metadata is None:
            raise RuntimeError("AsyncCodex is not running; use 'async with AsyncCodex() as codex'")
        return self._metadata

    @property
    def handlers(self) -> Handlers:
        """Client-wide server-request handlers (threads and turns may override them)."""
        return self._dispatcher.handlers

    async def __aenter__(self) -> AsyncCodex:
        await self._enter_lifespan()
        return self

    @asynccontextmanager
    async def _lifespan(self) -> AsyncIterator[None]:
        async with AsyncExitStack() as stack:
            config = self.config
            if self.gateway is not None:
                await stack.enter_async_context(self.gateway.ensure_running())
                if config.connect is None:
                    overrides = (*config.config_overrides, *self.gateway.config_overrides())
                    config = attrs.evolve(config, config_overrides=overrides)
            await stack.enter_async_context(self._run_runtime(config))
            yield

    @asynccontextmanager
    async def _run_runtime(self, config: CodexConfig) -> AsyncIterator[None]:
        stdio: StdioTransport | None = None
        if config.connect is not None:
            transport: Transport = await self._attach()
        else:
            transport = stdio = await spawn_stdio(
                config, stderr_tail_bytes=self._limits.stderr_tail_bytes
            )
        wire: Transport = transport
        self._instrumentation = resolve_telemetry(self._telemetry)
        if wire_log_enabled(self.config.wire_log):
            wire = WireLogTransport(transport)
        try:
            async with anyio.create_task_group() as tg:
                if stdio is not None:
                    await tg.start(protect_from_ctrl_c(stdio.drain_stderr), name="codex stderr")
                async with open_client(
                    wire,
                    limits=self._limits,
                    strict=self._strict,
                    server_request_handler=self._dispatcher.dispatch,
                    telemetry=self._instrumentation,
                ) as client:
                    self._client = client
                    self._dispatcher.attach(client)
                    try:
                        self._metadata = CodexMetadata(response=await self._handshake(client))
                        yield
                    finally:
                        self._dispatcher.detach()
                        self._client = None
                        self._metadata = None
                # The runtime has exited; stop the stderr drain even if a grandchild that
                # escaped the process group still holds the pipe open.
                tg.cancel_scope.cancel()
        finally:
            await transport.aclose()

    async def _attach(self) -> Transport:
        """Connect to the running app-server named by ``config.connect``."""
        from .._wire._address import resolve_token
        from .._wire._ws import connect_websocket

        config = self.config
        assert config.connect is not None
        token = resolve_token(config.token, config.token_file, config.token_env)
        return await connect_websocket(
            config.connect,
            token=token,
            ssl_context=config.ssl_context,
            max_message_bytes=self._limits.max_line_bytes,
            ready_timeout=config.ready_timeout,
            ping_interval=self._limits.ping_interval,
            ping_timeout=self._limits.ping_timeout,
        )

    def _startup_failure(self) -> str:
        """What ended the start-up, naming the sandbox command when there is one (a batch
        may run one per task, and its stderr tail alone may not say which)."""
        if self.config.connect is not None:
            return "the app-server closed the connection during start-up"
        shown = self.config.shown_command()
        if shown is not None:
            return f"the app-server started by `{shown}` exited during start-up"
        return "the app-server exited during start-up"

    def _opt_outs(self) -> list[str]:
        """``config.opt_out_notification_methods`` less what this client reads itself (its
        turns' results, the connection's own, and the telemetry watcher's when it is on)."""
        needed = CLIENT_READS
        if self._instrumentation is not None:
            needed = needed | WATCHED_NOTIFICATIONS
        return sorted(set(self.config.opt_out_notification_methods) - needed)

    async def _handshake(self, client: CodexClient) -> InitializeResponse:
        client_info: dict[str, Any] = {
            "name": self.config.client_name,
            "version": self.config.client_version,
        }
        if self.config.client_title is not None:
            client_info["title"] = self.config.client_title
        capabilities: dict[str, Any] = {"experimentalApi": self.config.experimental_api}
        opt_outs = self._opt_outs()
        if opt_outs:
            capabilities["optOutNotificationMethods"] = opt_outs
        params = {"clientInfo": client_info, "capabilities": capabilities}
        timeout = self._limits.initialize_timeout
        try:
            with anyio.move_on_after(math.inf if timeout is None else timeout) as scope:
                result = await client.request("initialize", params)
                await client.notify("initialized")
        except TransportClosedError as exc:
            raise StartupError(
                self._startup_failure(),
                returncode=exc.returncode,
                stderr_tail=exc.stderr_tail,
            ) from None
        if scope.cancelled_caught:
            connect = self.config.connect
            shown = self.config.shown_command()
            if connect is not None:
                where = f"the server at {redact_url(connect)}"
            else:
                where = "the app-server" if shown is None else f"the app-server (`{shown}`)"
            raise StartupError(
                f"{where} did not answer initialize within {timeout:g} s "
                "(Limits.initialize_timeout)",
                stderr_tail=client._transport.stderr_tail(),
            )
        metadata: InitializeResponse = structure_result("initialize", result, InitializeResponse)
        return metadata


def open_codex(
    config: CodexConfig | None = None,
    *,
    handlers: Handlers | None = None,
    limits: Limits | None = None,
    strict: bool = False,
    require_credentials: bool | None = None,
    telemetry: Telemetry | bool | None = None,
    gateway: ModelCallSource | None = None,
) -> AsyncCodex:
    """Alias of :class:`AsyncCodex` for ``async with open_codex(...) as codex``."""
    return AsyncCodex(
        config,
        handlers=handlers,
        limits=limits,
        strict=strict,
        require_credentials=require_credentials,
        telemetry=telemetry,
        gateway=gateway,
    )

"""``open_scripted_codex``: the real runtime, wired to a :class:`ScriptedModel`, ready to use.

One call gives a test what it needs to exercise an agent loop for real and offline: a
loopback model server answering from a script, a temporary ``CODEX_HOME`` whose config points
the runtime at it, an empty workspace as the runtime's working directory, an empty ``HOME``
(the login shells that run scripted commands then source none of the user's rc files), and a
running, initialized :class:`AsyncCodex`. Everything is torn down in reverse on exit.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Literal

import attrs

from .._api._codex import AsyncCodex
from .._api._dispatch import Handlers
from .._rpc._router import Limits
from ..pool._pool import CodexPool
from ..serve._server import RunningServer, serve_app_server
from ..telemetry._telemetry import Telemetry
from ._home import runtime_config, scratch_root
from ._scripted_model import ScriptedModel

__all__ = ["ScriptedCodex", "ScriptedPool", "open_scripted_codex", "open_scripted_pool"]


@attrs.frozen
class ScriptedCodex:
    """What :func:`open_scripted_codex` yields."""

    codex: AsyncCodex
    """The running client, connected to the real app-server."""
    model: ScriptedModel
    """The scripted model: its recorded requests and abandoned streams."""
    workspace: Path
    """The runtime's working directory (empty at start)."""
    codex_home: Path
    """The temporary ``CODEX_HOME`` (its ``config.toml`` points at ``model``)."""
    server: RunningServer | None = None
    """The listening runtime the client attached to (``transport="ws"`` or ``"unix"``)."""


Transport = Literal["stdio", "ws", "unix"]
"""How :func:`open_scripted_codex` reaches the runtime: spawned on stdio, or started listening
on a loopback WebSocket (with a capability token) or a unix socket and attached to."""


@asynccontextmanager
async def open_scripted_codex(
    script: Any,
    *,
    approval_policy: str = "never",
    sandbox_mode: str = "read-only",
    handlers: Handlers | None = None,
    limits: Limits | None = None,
    extra_config: str = "",
    directory: str | os.PathLike[str] | None = None,
    transport: Transport = "stdio",
    telemetry: Telemetry | bool | None = None,
    trust_store: str | os.PathLike[str] = "minimal",
    opt_out_notification_methods: Sequence[str] = (),
    home: str | os.PathLike[str] | None = None,
    command: Sequence[str] | None = None,
) -> AsyncIterator[ScriptedCodex]:
    """Start a scripted model and a real ``codex app-server`` configured against it.

    :param script: the :class:`ScriptedModel` script (a list of replies, or a function).
    :param approval_policy: ``never`` or ``on-request`` (to receive approval requests).
    :param sandbox_mode: ``read-only``, ``workspace-write`` or ``danger-full-access``.
    :param handlers: server-request handlers for the client.
    :param extra_config: more TOML appended to ``config.toml``.
    :param directory: where to create ``codex-home`` and ``workspace`` (default: a new
        temporary directory, removed afterwards).
    :param transport: ``stdio`` (spawn), or ``ws``/``unix``: start the runtime listening on
        loopback and attach to it, as a client of a sandboxed or shared server would.
    :param telemetry: the client's OpenTelemetry setting (see :class:`~codex_anyio.Telemetry`).
    :param trust_store: the runtime's TLS trust store (:attr:`CodexConfig.trust_store`).
        Default ``"minimal"``: the scripted model is plain HTTP on loopback and nothing else
        in this set-up calls out, so the runtime needs no roots, and not re-reading the
        system store for every turn halves its CPU per turn. ``"system"`` for a test that
        needs the runtime's TLS.
    :param opt_out_notification_methods: notifications the runtime does not send to the client
        (:attr:`CodexConfig.opt_out_notification_methods`).
    :param home: the runtime's ``HOME`` (default: a new empty folder ``home`` beside the
        workspace). Scripted commands run as ``bash -lc``, which sources the rc files of
        ``HOME``; the user's own would make every command wait on them, and print into its
        output. Pass ``home=Path.home()`` to run commands as the user's shell would.
    :param command: start the runtime with this command instead (``CodexConfig(command=...)``:
        a sandbox, e.g. ``["bwrap", ..., os.fspath(runtime_path()), "app-server"]``). It must
        pass its environment on (``CODEX_HOME`` and the settings above) and share this
        machine's loopback, where the scripted model listens: a sandbox with a network
        namespace of its own cannot reach it.
    """
    with scratch_root(directory) as (root, scratch):
        codex_home = root / "codex-home"
        workspace = root / "workspace"
        async with ScriptedModel(script) as model:
            config = runtime_config(
                root,
                codex_home,
                base_url=model.base_url,
                approval_policy=approval_policy,
                sandbox_mode=sandbox_mode,
                extra_config=extra_config,
                trust_store=trust_store,
                home=home,
                command=command,
                opt_out_notification_methods=opt_out_notification_methods,
            )
            if transport == "stdio":
                async with AsyncCodex(
                    config, handlers=handlers, limits=limits, telemetry=telemetry
                ) as codex:
                    yield ScriptedCodex(
                        codex=codex, model=model, workspace=workspace, codex_home=codex_home
                    )
                return
            listen = "ws://127.0.0.1:0" if transport == "ws" else f"unix://{scratch}/app.sock"
            async with serve_app_server(config, listen) as server:
                attach = server.client_config(
                    opt_out_notification_methods=opt_out_notification_methods
                )
                async with AsyncCodex(
                    attach, handlers=handlers, limits=limits, telemetry=telemetry
                ) as codex:
                    yield ScriptedCodex(
                        codex=codex,
                        model=model,
                        workspace=workspace,
                        codex_home=codex_home,
                        server=server,
                    )


@attrs.frozen
class ScriptedPool:
    """What :func:`open_scripted_pool` yields."""

    pool: CodexPool
    """The running pool; every member's runtime uses ``model``."""
    model: ScriptedModel
    workspace: Path
    """The members' working directory (shared, empty at start)."""
    codex_homes: list[Path]
    """One ``CODEX_HOME`` per member."""


@asynccontextmanager
async def open_scripted_pool(
    script: Any,
    *,
    servers: int = 2,
    approval_policy: str = "never",
    sandbox_mode: str = "read-only",
    extra_config: str = "",
    directory: str | os.PathLike[str] | None = None,
    trust_store: str | os.PathLike[str] = "minimal",
    home: str | os.PathLike[str] | None = None,
    **pool_options: Any,
) -> AsyncIterator[ScriptedPool]:
    """:func:`open_scripted_codex` for a :class:`~codex_anyio.CodexPool`: one scripted model,
    ``servers`` real runtimes, each with a ``CODEX_HOME`` of its own pointing at it (and one
    empty ``HOME`` for all, unless ``home`` names another: see :func:`open_scripted_codex`).

    ``pool_options`` go to ``CodexPool`` (``max_turns``, ``thread_defaults``, ...);
    ``trust_store`` as for :func:`open_scripted_codex`.
    """
    with scratch_root(directory) as (root, _):
        workspace = root / "workspace"
        async with ScriptedModel(script) as model:
            homes = [root / f"codex-home-{index}" for index in range(servers)]
            configs = [
                runtime_config(
                    root,
                    codex_home,
                    base_url=model.base_url,
                    approval_policy=approval_policy,
                    sandbox_mode=sandbox_mode,
                    extra_config=extra_config,
                    trust_store=trust_store,
                    home=home,
                )
                for codex_home in homes
            ]
            async with CodexPool(servers, config=configs, **pool_options) as pool:
                yield ScriptedPool(pool=pool, model=model, workspace=workspace, codex_homes=homes)

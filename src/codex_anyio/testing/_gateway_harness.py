"""``open_gateway_codex`` and ``replay_codex``: the real runtime, its model calls going
through a :class:`~codex_anyio.gateway.ModelGateway`.

As :func:`open_scripted_codex` does for the scripted model: a temporary ``CODEX_HOME`` and an
empty workspace, the gateway running, and an initialized ``AsyncCodex(gateway=...)``, so
every ``TurnResult`` carries its ``model_calls``. ``replay_codex(cassette)`` replays a
recorded cassette this way, with no network at all (the ``replay_codex`` pytest fixture puts
its files under the test's ``tmp_path``).
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import attrs

from .._api._codex import AsyncCodex
from .._api._dispatch import Handlers
from .._rpc._router import Limits
from ..gateway._gateway import ModelGateway
from ._home import runtime_config, scratch_root

__all__ = ["GatewayCodex", "open_gateway_codex", "replay_codex"]


@attrs.frozen
class GatewayCodex:
    """What :func:`open_gateway_codex` and :func:`replay_codex` yield."""

    codex: AsyncCodex
    """The running client; its runtime's model calls go through :attr:`gateway`."""
    gateway: ModelGateway
    workspace: Path
    """The runtime's working directory (empty at start)."""
    codex_home: Path


@asynccontextmanager
async def open_gateway_codex(
    gateway: ModelGateway,
    *,
    approval_policy: str = "never",
    sandbox_mode: str = "read-only",
    handlers: Handlers | None = None,
    limits: Limits | None = None,
    extra_config: str = "",
    directory: str | os.PathLike[str] | None = None,
    trust_store: str | os.PathLike[str] = "minimal",
    home: str | os.PathLike[str] | None = None,
) -> AsyncIterator[GatewayCodex]:
    """Start ``gateway`` (unless it runs already) and a real ``codex app-server`` using it.

    Options as for :func:`open_scripted_codex` (the minimal trust store, an empty ``HOME``
    unless ``home`` names one). The model is ``mock-model``: a replay must ask for the model
    its recording asked for. A gateway that forwards to an ``https://`` upstream makes the
    TLS connection itself: the runtime only speaks plain HTTP to the gateway on loopback.
    """
    shell_home = home
    with scratch_root(directory) as (root, _):
        home = root / "codex-home"
        async with gateway.ensure_running():
            config = runtime_config(
                root,
                home,
                base_url=gateway.base_url,
                approval_policy=approval_policy,
                sandbox_mode=sandbox_mode,
                extra_config=extra_config,
                trust_store=trust_store,
                home=shell_home,
            )
            async with AsyncCodex(
                config, handlers=handlers, limits=limits, gateway=gateway
            ) as codex:
                yield GatewayCodex(
                    codex=codex, gateway=gateway, workspace=root / "workspace", codex_home=home
                )


def replay_codex(
    cassette: str | os.PathLike[str],
    *,
    approval_policy: str = "never",
    sandbox_mode: str = "read-only",
    handlers: Handlers | None = None,
    limits: Limits | None = None,
    extra_config: str = "",
    directory: str | os.PathLike[str] | None = None,
    trust_store: str | os.PathLike[str] = "minimal",
    home: str | os.PathLike[str] | None = None,
) -> AbstractAsyncContextManager[GatewayCodex]:
    """``async with replay_codex(cassette) as r``: the real runtime answered from a recorded
    cassette (see :func:`open_gateway_codex`). The provider's retries are off, as in the
    scripted harness: record with the same settings (``request_max_retries=0,
    stream_max_retries=0``), or a recorded failure is retried into a call the cassette does
    not hold.

    :raises CassetteError: if the cassette is corrupt or truncated (naming the line).
    """
    gateway = ModelGateway(cassette=cassette, request_max_retries=0, stream_max_retries=0)
    return open_gateway_codex(
        gateway,
        approval_policy=approval_policy,
        sandbox_mode=sandbox_mode,
        handlers=handlers,
        limits=limits,
        extra_config=extra_config,
        directory=directory,
        trust_store=trust_store,
        home=home,
    )

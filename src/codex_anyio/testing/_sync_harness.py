"""``scripted_runtime``: the scripted model for tests of the synchronous :class:`Codex`.

The sync client runs its own event loop thread, so the scripted model cannot share a test's
loop: it runs in a blocking portal of its own, and the test gets the :class:`CodexConfig`
that points a runtime at it. The test then writes what a user would, ``with Codex(config) as
codex:``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Literal

import attrs
from anyio.from_thread import BlockingPortal, start_blocking_portal

from .._wire._config import CodexConfig
from ._home import runtime_config, scratch_root
from ._scripted_model import ScriptedModel

__all__ = ["ScriptedRuntime", "scripted_runtime"]


@attrs.frozen
class ScriptedRuntime:
    """What :func:`scripted_runtime` yields."""

    config: CodexConfig
    """Launches a real runtime configured against :attr:`model`."""
    model: ScriptedModel
    """The scripted model; call its async methods through :attr:`portal`."""
    portal: BlockingPortal
    """The event loop thread the model runs on."""
    workspace: Path
    codex_home: Path


@contextmanager
def scripted_runtime(
    script: Any,
    *,
    backend: Literal["asyncio", "trio"] = "asyncio",
    approval_policy: str = "never",
    sandbox_mode: str = "read-only",
    extra_config: str = "",
    directory: str | os.PathLike[str] | None = None,
    trust_store: str | os.PathLike[str] = "minimal",
    home: str | os.PathLike[str] | None = None,
) -> Iterator[ScriptedRuntime]:
    """Start a :class:`ScriptedModel` on its own loop thread and a ``CODEX_HOME`` using it.

    Options as for :func:`open_scripted_codex` (an empty ``HOME`` for the runtime unless
    ``home`` names one); ``backend`` is the model's event loop. The config's ``env`` holds
    the whole set-up, ``HOME`` included.
    """
    with scratch_root(directory) as (root, _):
        codex_home = root / "codex-home"
        with start_blocking_portal(backend) as portal:
            model = ScriptedModel(script)
            with portal.wrap_async_context_manager(model):
                config = runtime_config(
                    root,
                    codex_home,
                    base_url=model.base_url,
                    approval_policy=approval_policy,
                    sandbox_mode=sandbox_mode,
                    extra_config=extra_config,
                    trust_store=trust_store,
                    home=home,
                )
                yield ScriptedRuntime(
                    config=config,
                    model=model,
                    portal=portal,
                    workspace=root / "workspace",
                    codex_home=codex_home,
                )

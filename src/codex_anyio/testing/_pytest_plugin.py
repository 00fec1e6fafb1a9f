"""pytest plugin (registered through the ``pytest11`` entry point): the ``scripted_codex``
and ``replay_codex`` fixtures.

``scripted_codex`` is :func:`open_scripted_codex` with its files under the test's
``tmp_path``, so a failing test leaves the runtime's config and session logs to inspect::

    @pytest.mark.anyio
    async def test_agent_says_hello(scripted_codex):
        async with scripted_codex([message("Hello!")]) as s:
            thread = await s.codex.thread_start()
            assert (await thread.run("hi")).final_response == "Hello!"
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from ._gateway_harness import GatewayCodex
    from ._harness import ScriptedCodex

# The library is imported only when the fixture is used, so merely having codex-anyio
# installed costs other projects' test runs nothing.
ScriptedCodexFactory = Callable[..., AbstractAsyncContextManager["ScriptedCodex"]]


@pytest.fixture
def scripted_codex(tmp_path: Path, request: pytest.FixtureRequest) -> ScriptedCodexFactory:
    """``async with scripted_codex(script, **options) as s``: see ``open_scripted_codex``.

    Parametrize it indirectly to run a test over each transport::

        @pytest.mark.parametrize("scripted_codex", ["stdio", "ws", "unix"], indirect=True)
    """
    from ._harness import open_scripted_codex

    counter = iter(range(1_000_000))
    transport = getattr(request, "param", "stdio")

    def factory(script: Any, **options: Any) -> AbstractAsyncContextManager[ScriptedCodex]:
        options.setdefault("directory", tmp_path / f"scripted-{next(counter)}")
        options.setdefault("transport", transport)
        return open_scripted_codex(script, **options)

    return factory


ReplayCodexFactory = Callable[..., AbstractAsyncContextManager["GatewayCodex"]]


@pytest.fixture
def replay_codex(tmp_path: Path) -> ReplayCodexFactory:
    """``async with replay_codex(cassette, **options) as r``: see
    ``codex_anyio.testing.replay_codex``; the runtime's files go under ``tmp_path``."""
    from ._gateway_harness import replay_codex as open_replay

    counter = iter(range(1_000_000))

    def factory(cassette: Any, **options: Any) -> AbstractAsyncContextManager[GatewayCodex]:
        options.setdefault("directory", tmp_path / f"replay-{next(counter)}")
        return open_replay(cassette, **options)

    return factory

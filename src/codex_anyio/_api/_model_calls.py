"""``ModelCallSource``: what the client needs from a model gateway, as a protocol.

``AsyncCodex(gateway=...)`` takes a :class:`codex_anyio.gateway.ModelGateway`, which sits
above this layer: the client must not import it (the gateway's package would then depend on
the client's and the client on it). This protocol is all the client uses: the config
overrides that point a runtime at the gateway, a way to run it for as long as the client
runs, and a turn's calls once the turn has completed.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

__all__ = ["ModelCallSource"]


class ModelCallSource(Protocol):
    """A model gateway as the client sees it (``codex_anyio.gateway.ModelGateway``)."""

    def ensure_running(self) -> AbstractAsyncContextManager[object]:
        """Run the gateway for the block, unless it is running already."""
        ...

    def config_overrides(self) -> tuple[str, ...]:
        """``--config`` overrides pointing the runtime's model provider at the gateway."""
        ...

    def model_calls(self, thread_id: str, turn_id: str) -> list[Any]:
        """The turn's calls (exchanges), in order."""
        ...

    async def settle(self, thread_id: str, turn_id: str) -> None:
        """Wait, bounded, until the turn's calls are recorded as finished."""
        ...

    def turn_error(
        self, thread_id: str, turn_id: str, turn: Any, error: Any
    ) -> BaseException | None:
        """The error to raise for a failed turn the gateway failed on purpose, if any."""
        ...

"""``codex.metadata``: what the runtime said about itself in the ``initialize`` handshake.

The official SDK's ``InitializeResponse`` has ``serverInfo.name``/``serverInfo.version``,
parsed from the user agent, since the runtime sends no server info of its own. We offer the
same (``metadata.serverInfo`` and its snake_case twin ``server_info``), next to every field of
the typed response (``user_agent``, ``codex_home``, ``platform_family``, ``platform_os``).
"""

from __future__ import annotations

import attrs

from .._protocol._generated.models import InitializeResponse

__all__ = ["CodexMetadata", "ServerInfo"]


@attrs.frozen
class ServerInfo:
    """The runtime's name and version, e.g. ``codex_anyio`` and ``0.163.0``.

    The runtime names itself after the client's ``clientInfo.name`` in its user agent
    (``<name>/<version> (<os>) ...``); both are ``None`` if the user agent has no such part.
    """

    name: str | None
    version: str | None


def _split_user_agent(user_agent: str) -> ServerInfo:
    head = user_agent.strip().split(maxsplit=1)
    if not head:
        return ServerInfo(None, None)
    name, _, version = head[0].partition("/")
    return ServerInfo(name or None, version or None)


@attrs.frozen(kw_only=True)
class CodexMetadata:
    """The ``initialize`` response, with the official SDK's names as aliases."""

    response: InitializeResponse
    """The typed ``initialize`` response as received."""

    @property
    def user_agent(self) -> str:
        return self.response.user_agent

    @property
    def codex_home(self) -> str:
        """The runtime's ``$CODEX_HOME`` (config, sessions, logins)."""
        return str(self.response.codex_home)

    @property
    def platform_family(self) -> str:
        return self.response.platform_family

    @property
    def platform_os(self) -> str:
        return self.response.platform_os

    @property
    def server_info(self) -> ServerInfo:
        """Name and version of the runtime, parsed from the user agent."""
        return _split_user_agent(self.response.user_agent)

    # The official SDK's pydantic model keeps the wire's camelCase names.
    @property
    def serverInfo(self) -> ServerInfo:
        return self.server_info

    @property
    def userAgent(self) -> str:
        return self.user_agent

    @property
    def platformFamily(self) -> str:
        return self.platform_family

    @property
    def platformOs(self) -> str:
        return self.platform_os

"""Where a running app-server is and how we prove we may use it: a parsed ``ws://``,
``wss://`` or ``unix://`` address, and the bearer token from a value, a file or the environment.

Pure (no I/O but reading the token file), so address and token mistakes are reported before
anything connects, and the messages name the source of a token, never the token itself.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from urllib.parse import urlsplit

import attrs

__all__ = ["Address", "resolve_token"]


@attrs.frozen
class Address:
    """A parsed ``ws://HOST:PORT[/PATH]``, ``wss://...`` or ``unix:///PATH`` address."""

    url: str
    scheme: str
    host: str
    port: int
    path: str
    """The HTTP target for TCP, the socket's file path for ``unix://``."""

    @classmethod
    def parse(cls, url: str) -> Address:
        """:raises ValueError: for a scheme other than ``ws``, ``wss`` or ``unix``."""
        parts = urlsplit(url)
        scheme = parts.scheme.lower()
        if scheme == "unix":
            path = parts.netloc + parts.path
            if not path:
                raise ValueError(f"{url!r} names no socket path (unix:///path/to/socket)")
            return cls(url=url, scheme=scheme, host="localhost", port=0, path=path)
        if scheme not in ("ws", "wss"):
            raise ValueError(f"cannot connect to {url!r}: use ws://, wss:// or unix://")
        if parts.hostname is None:
            raise ValueError(f"{url!r} names no host")
        port = parts.port or (443 if scheme == "wss" else 80)
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        return cls(url=url, scheme=scheme, host=parts.hostname, port=port, path=target)

    @property
    def host_header(self) -> str:
        if self.scheme == "unix":
            return "localhost"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"

    @property
    def target(self) -> str:
        return "/" if self.scheme == "unix" else self.path


def resolve_token(
    token: str | None,
    token_file: str | os.PathLike[str] | None,
    token_env: str | None,
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """The bearer token from a value, a file (stripped) or an environment variable.

    :raises ValueError: if more than one source is given, or the one given is empty or
        missing; the message names the source, never its content.
    """
    given = [s for s in (token, token_file, token_env) if s is not None]
    if len(given) > 1:
        raise ValueError("give one of token, token_file and token_env, not several")
    if token is not None:
        value = token
        source = "token"
    elif token_file is not None:
        source = f"token file {os.fspath(token_file)!r}"
        try:
            with open(token_file, encoding="utf-8") as file:
                value = file.read().strip()
        except OSError as exc:
            raise ValueError(f"cannot read the {source}: {exc.strerror}") from None
    elif token_env is not None:
        source = f"environment variable {token_env!r}"
        value = (environ if environ is not None else os.environ).get(token_env, "")
    else:
        return None
    if not value:
        raise ValueError(f"the {source} is empty")
    return value
